import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from shiftaddaug.augment import ElasticConv2d, build_augmented
from shiftaddaug.hw import count
from shiftaddaug.models import create_model
from shiftaddaug.ops.remap import REMAPS, Remap
from shiftaddaug.train import train_step

MOBILE = ["mobilenetv2_tiny", "mobilenetv2_w035", "proxylessnas_w035", "mcunet", "mobilenetv3_w035"]
ZOO = MOBILE + ["resnet20"]


def kurtosis(t):
    z = (t - t.mean()) / t.std()
    return float((z**4).mean())


@pytest.mark.parametrize("kind", REMAPS)
def test_remaps_keep_scale_and_laplace_shape(kind):
    w = torch.randn(64, 32, 3, 3, dtype=torch.float64) * 0.05
    y = Remap(kind, 3).double()(w)
    assert y.shape == w.shape
    y = y.detach()
    assert abs(float(y.std() / w.std()) - 1) < 0.05  # scale stays where BN and the shift grid expect it
    if kind in ("laplace", "fc"):
        assert 5.5 < kurtosis(y) < 6.5  # Laplace: 6 (Gaussian input: 3)
    else:
        assert 2.8 < kurtosis(y) < 3.2  # identity at initialisation


def test_bins_remap_is_learnable_and_kl_is_finite():
    r = Remap("bins")
    w = torch.randn(16, 8, 1, 1, requires_grad=True)
    y = r(w)
    (y.sum() + r.kl_to_laplace(y)).backward()
    assert r.factors.grad.abs().sum() > 0 and w.grad.abs().sum() > 0


@pytest.mark.parametrize("aug_op, remap", list(itertools.product(["mf", "hybrid", "mult"], REMAPS)))
def test_every_aug_op_and_remap_trains_the_target_and_the_augmented_weights(aug_op, remap):
    torch.manual_seed(0)
    net = build_augmented("mobilenetv2_tiny", 10, op="shift", aug_op=aug_op, remap=remap, input_size=32)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(10, (8,))
    convs = [c for c in net.elastic_convs() if c.weight.shape[0] > c.core[1]]
    before = [c.weight.detach().clone() for c in convs]
    target_before = [c.static_weight(*c.core).detach().clone() for c in convs]
    for _ in range(2):
        train_step(net, x, y, opt, nn.CrossEntropyLoss(), augmented=True)
    assert not any(c.augmenting for c in net.elastic_convs())  # the step leaves the target active
    assert net.active_arch == net.space.base
    # the target's own weights moved, and so did weights only the augmented sub-models use (their output rows)
    assert any(not torch.equal(b, c.static_weight(*c.core)) for b, c in zip(target_before, convs))
    assert any(not torch.equal(b[c.core[1]:], c.weight[c.core[1]:]) for b, c in zip(before, convs))
    if remap in ("bins", "fc"):  # the learnable remap parameters are trained too
        params = [p for c in convs for p in c.remaps.parameters()]
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_direct_step_only_trains_the_model():
    torch.manual_seed(0)
    net = create_model("resnet20", 10, op="add")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(10, (4,))
    before = net.stem.conv.weight.detach().clone()
    out, loss = train_step(net, x, y, opt, nn.CrossEntropyLoss())
    assert out.shape == (4, 10) and loss.ndim == 0 and not torch.equal(before, net.stem.conv.weight)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("op", ["shift", "add"])
def test_export_equals_target_and_loads_strictly(name, op):
    torch.manual_seed(0)
    net = build_augmented(name, 10, op=op, aug_op="mult", remap="fc", in_chans=1, input_size=28)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        for mode in ("random", "max", "min"):  # move BN statistics away from their initial values
            net.set_active(mode)
            net(x)
    net.set_active("min")
    net.eval()
    exported = net.export().eval()
    direct = create_model(name, 10, op=op, in_chans=1, input_size=28)
    direct.load_state_dict(exported.state_dict(), strict=True)
    torch.testing.assert_close(exported(x), net(x), atol=1e-4, rtol=0)
    ce, cd = count(exported, 28, 1), count(direct, 28, 1)
    assert ce.params == cd.params and ce.macs == cd.macs
    if op == "shift":
        for m in exported.modules():
            if hasattr(m, "effective_weight"):
                w = m.weight[m.weight != 0].abs()
                assert torch.equal(torch.exp2(torch.log2(w).round()), w)  # stored weights are powers of two


def test_width_factors_and_sampling():
    net = build_augmented("mobilenetv2_tiny", 10, op="add", input_size=32, width_factors=[1.0, 1.8, 2.6])
    assert net.stem.conv.weight.shape[0] == round(16 * 2.6)
    net.set_active("max")
    assert net.stem.conv.active_out == round(16 * 2.6)
    net.set_active("random", width=False)
    assert net.stem.conv.active_out == 16  # only expand ratios vary in the second half of training
    widths = set()
    for _ in range(20):
        net.set_active("random")
        widths.add(net.stages[0].blocks[0].project.conv.active_out)
    assert widths <= {8, 14, 21} and len(widths) > 1  # augmented widths are not rounded to 8
    with pytest.raises(ValueError, match="smallest width"):
        build_augmented("mcunet", 10, width_factors=[1.5, 2.0])
    with pytest.raises(ValueError, match="unknown aug_op"):
        build_augmented("resnet20", 10, aug_op="both")


def test_default_factors_are_netaugs_scaled_towards_one_and_the_rate_follows_the_operator():
    full = build_augmented("resnet20", 10, op="shift", input_size=32, aug_scale=1.0)
    assert full.stem.conv.weight.shape[0] == round(16 * 2.6)  # NetAug's largest width factor
    assert build_augmented("resnet20", 10, op="shift", input_size=32).stem.conv.weight.shape[0] == round(16 * 1.4)
    assert full.default_aug_rate() == 0.5
    assert build_augmented("resnet20", 10, op="add", input_size=32).default_aug_rate() == 0.3
    assert build_augmented("resnet20", 10, op="mult", input_size=32).default_aug_rate() == 1.0
    with pytest.raises(ValueError, match="aug_scale"):
        build_augmented("resnet20", 10, aug_scale=0.0)


def test_resnet_widths_follow_the_stage_shortcuts():
    net = build_augmented("resnet20", 10, op="shift", input_size=32, aug_scale=1.0)
    assert net.stem.conv.weight.shape[0] == round(16 * 2.6)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(10):
        net.set_active("random")
        assert net(x).shape == (2, 10)  # identity shortcuts line up whatever widths were drawn
        b = [block for stage in net.stages for block in stage.blocks]
        assert b[0].conv2.conv.active_out == b[2].conv2.conv.active_out == net.stem.conv.active_out
        assert b[3].downsample.conv.active_out == b[5].conv2.conv.active_out


def test_resumed_supernet_samples_the_same_sub_models():
    a = build_augmented("mobilenetv2_tiny", 10, input_size=32, seed=3)
    for _ in range(5):
        a.set_active("random")
    b = build_augmented("mobilenetv2_tiny", 10, input_size=32, seed=0)
    b.load_state_dict(a.state_dict())
    for _ in range(5):
        a.set_active("random")
        b.set_active("random")
        assert [c.active_out for c in a.elastic_convs()] == [c.active_out for c in b.elastic_convs()]


@pytest.mark.parametrize("kind", ["bins", "fc"])
def test_remap_parameters_get_the_mean_gradient_of_their_weights(kind):
    w = torch.randn(32, 16, 1, 1)
    r = Remap(kind, 1)
    r(w).sum().backward()
    g = r.factors.grad if kind == "bins" else r.scale.grad
    # summed, d(sum)/d(scale) = sum(laplace(w)); as a mean it is bounded by the weights' magnitude
    assert 0 < g.abs().max() <= w.abs().max() * 3
    if kind == "fc":
        torch.testing.assert_close(r.offset.grad, torch.tensor(1.0))  # mean of d(sum)/dW = 1


def elastic(cin, cout, k, groups, op, aug_op, remap, core_in, core_out):
    """A layer as the supernet uses it: active at its full size, augmenting around a core (the target's slice)."""
    d = ElasticConv2d(cin, cout, (k,), depthwise=groups > 1, ops=(op,), remap=remap, aug_op=aug_op)
    d.core = (core_in, core_out, k, op)
    d.set_active(cin, cout, k, op)
    d.augmenting = True
    return d


def test_hybrid_computes_target_block_mf_and_the_rest_mult():
    d = elastic(6, 8, 1, 1, "shift", "hybrid", "none", 2, 3)
    x = torch.randn(2, 6, 5, 5)
    w = d.weight.detach()
    from shiftaddaug.ops import round_power_of_two
    top = F.conv2d(x[:, :2], round_power_of_two(w[:3, :2])) + F.conv2d(x[:, 2:], w[:3, 2:])
    ref = torch.cat([top, F.conv2d(x, w[3:])], 1)
    torch.testing.assert_close(d(x), ref)
    xg, wg = x.clone().requires_grad_(), d.weight  # the one-conv form routes gradients as the split form does
    d(xg).square().sum().backward()
    wr = w.clone().requires_grad_()
    top = F.conv2d(xg[:, :2], round_power_of_two(wr[:3, :2])) + F.conv2d(xg[:, 2:], wr[:3, 2:])
    torch.cat([top, F.conv2d(xg, wr[3:])], 1).square().sum().backward(inputs=[wr])
    torch.testing.assert_close(wg.grad, wr.grad)
    d.aug_op = "mult"
    torch.testing.assert_close(d(x), F.conv2d(x, w))
    d.aug_op = "mf"
    torch.testing.assert_close(d(x), F.conv2d(x, round_power_of_two(w)))
    d.augmenting = False
    d.set_active(2, 3, 1, "shift")
    torch.testing.assert_close(d(x[:, :2]), F.conv2d(x[:, :2], round_power_of_two(w[:3, :2])))


@pytest.mark.parametrize("op", ["shift", "add"])
def test_hybrid_depthwise_target_channels_mf_the_rest_mult(op):
    from shiftaddaug.ops import conv2d

    d = elastic(6, 6, 3, 6, op, "hybrid", "laplace", 4, 4)
    x = torch.randn(2, 6, 5, 5)
    w = d.weight.detach()
    ref = torch.cat([conv2d(op, x[:, :4], d.mf_weight(w[:4], op), padding=1, groups=4, **d.op_kw[op]),
                     F.conv2d(x[:, 4:], w[4:], padding=1, groups=2)], 1)
    torch.testing.assert_close(d(x), ref)


@pytest.mark.parametrize("groups", [1, 6])
def test_hybrid_adder_equals_the_split_form_in_values_and_gradients(groups):
    from shiftaddaug.ops import conv2d

    cout, to = (8, 3) if groups == 1 else (6, 4)
    d = elastic(6, cout, 3, groups, "add", "hybrid", "none", 4, to)
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    d(x).square().sum().backward()
    wr, xr = d.weight.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    kw = d.op_kw["add"]
    if groups == 1:  # target block [3, 4] adder; the rest of its rows and the other rows multiplicative
        top = conv2d("add", xr[:, :4], d.mf_weight(wr[:3, :4], "add"), padding=1, **kw)
        top = top + F.conv2d(xr[:, 4:], wr[:3, 4:], padding=1)
        ref = torch.cat([top, F.conv2d(xr, wr[3:], padding=1)], 1)
    else:  # target channels 0-3 adder, channels 4-5 multiplicative
        ref = torch.cat([conv2d("add", xr[:, :4], d.mf_weight(wr[:4], "add"), padding=1, groups=4, **kw),
                         F.conv2d(xr[:, 4:], wr[4:], padding=1, groups=2)], 1)
    torch.testing.assert_close(d(x.detach()), ref.detach())
    ref.square().sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(d.weight.grad, wr.grad)
    d.set_active(4, to, 3, "add")  # a layer no wider than the target computes the target
    xt = x[:, :4].detach()
    with torch.no_grad():
        y = d(xt)
        d.augmenting = False
        torch.testing.assert_close(y, d(xt))


@pytest.mark.parametrize("groups", [1, 6])
def test_hybrid_adder_hands_back_gradients_in_the_input_memory_format(groups):
    # channel slices send NCHW gradients back; in a channels-last net that sent BatchNorm's backward down a slow path
    d = elastic(6, 6, 3, groups, "add", "hybrid", "none", 4, 4)
    x = torch.randn(2, 6, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    seen = []
    h = x * 1  # a non-leaf, like a BatchNorm output: its incoming gradient is what the producer's backward gets
    h.register_hook(lambda g: seen.append(g))
    d(h).square().sum().backward()
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    plain = x.detach().clone().requires_grad_()  # the values are those of the unformatted gradient
    d(plain.contiguous()).square().sum().backward()
    torch.testing.assert_close(x.grad, plain.grad)


@pytest.mark.parametrize("kernel_size,groups", [(1, 1), (3, 1), (3, 48)])
def test_adder_target_trains_at_adder_scale_like_a_direct_adder(kernel_size, groups):
    """The shared weight lives at kaiming scale; the adder target must see (and move) it as AdderNet does."""
    from shiftaddaug.ops import AdderConv2d

    direct = AdderConv2d(48, 48, kernel_size, padding=kernel_size // 2, groups=groups)
    d = elastic(96, 96, kernel_size, 1 if groups == 1 else 96, "add", "mult", "none", 48, 48)  # the max-size layer
    d.set_active(48, 48, kernel_size, "add")
    d.augmenting = False
    x = torch.randn(4, 48, 6, 6)

    def step(module, weight_of, lr=0.05):
        before = weight_of().detach().clone()
        module(x).pow(2).mean().backward()
        with torch.no_grad():
            for p in module.parameters():
                p -= lr * p.grad
        return before, (weight_of().detach() - before)

    w_direct, dw_direct = step(direct, lambda: direct.weight)
    w_target, dw_target = step(d, lambda: d.static_weight(*d.core))
    assert w_direct.std() == pytest.approx(1.0, rel=0.15)
    assert w_target.std() == pytest.approx(1.0, rel=0.15)  # unit scale, as AdderNet's N(0, 1)
    # adaptive gradient scaling: each step moves every weight by about lr * eta, for both
    rms = lambda t: float(t.pow(2).mean().sqrt())  # noqa: E731
    assert rms(dw_direct) == pytest.approx(0.05 * 0.2, rel=1e-3)
    assert rms(dw_target) == pytest.approx(0.05 * 0.2, rel=1e-3)
    # the multiplicative side still sees the weight at its own (kaiming) scale
    assert float(d.weight.detach().std()) < 0.3


def test_auto_remap_is_bins_for_shift_layers_and_none_for_adders():
    def kinds(net):
        return {(op, c.remaps[op].kind) for c in net.elastic_convs() for op in c.ops if op in c.remaps}

    arch = create_model("mobilenetv2_tiny", 10, op="shift").arch
    for i, st in enumerate(arch["stages"]):
        for b in st["blocks"]:
            b["op"] = ("shift", "add")[i % 2]
    arch["head"]["op"] = "add"
    mixed = build_augmented("mobilenetv2_tiny", 10, arch=arch)
    assert kinds(mixed) == {("shift", "bins"), ("add", "none")}  # remap="auto" is the default
    assert kinds(build_augmented("mobilenetv2_tiny", 10, op="add", remap="bins")) == {("add", "bins")}


def test_augmented_steps_spread_the_rate_evenly_and_decay_linearly():
    from shiftaddaug.train import augmented_steps

    every4 = augmented_steps(0.25, None, 100)
    assert [s for s in range(13) if every4(s)] == [0, 4, 8, 12]
    assert all(augmented_steps(1.0, None, 50)(s) for s in range(50))
    decay = augmented_steps(1.0, 0.0, 200)  # from every step to none: half the steps, dense early, sparse late
    chosen = [s for s in range(200) if decay(s)]
    assert len(chosen) == 100 and sum(s < 100 for s in chosen) == 75
    assert sum(augmented_steps(0.1, None, 1000)(s) for s in range(1000)) == 100  # no float drift at 1/10


def test_aug_rate_thins_out_the_augmented_passes_of_a_run(tmp_path, monkeypatch):
    from shiftaddaug import train as train_mod
    from shiftaddaug.cli import main

    seen = []
    step = train_mod.train_step

    def spy(*a, augmented=False, **kw):
        seen.append(augmented)
        return step(*a, augmented=augmented, **kw)
    monkeypatch.setattr(train_mod, "train_step", spy)
    code = main(["train", "dataset=synthetic", "model=resnet20", "input_size=16", "op=shift", "aug_op=mult",
                 "epochs=1", "batch_size=16", "train_subset=80", "test_subset=16", "workers=0", "aug_rate=0.25",
                 "bn_calibration_images=16", f"out_dir={tmp_path}", "name=r"])
    assert code == 0 and seen == [True, False, False, False, True], seen  # every 4th step


def test_aug_rate_needs_shiftaddaug(capsys):
    from shiftaddaug.cli import main

    assert main(["train", "aug_rate=0.5", "epochs=1"]) == 2
    assert "aug_rate set ShiftAddAug's augmented passes" in capsys.readouterr().err
