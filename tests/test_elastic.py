"""The elastic supernet: any architecture of a space activates, trains and exports to the plain model of it."""
import json
import random

import pytest
import torch

from shiftaddaug.augment import ElasticConv2d, ElasticNet, Space, max_arch, min_arch, sample_arch
from shiftaddaug.hw import count
from shiftaddaug.models import SPECS, ArchError, create_model, list_models
from shiftaddaug.models.spec import NetSpec, StageSpec

OPS = ("mult", "shift", "add")


def space_of(name, op="shift", size=28, **kw):
    base = create_model(name, 10, op=op, in_chans=1, input_size=size).arch
    kernels = (3, 5, 7) if name != "resnet20" else (3, 5)
    expand = (1.0, 2.0) if name == "resnet20" else (2.0, 3.0, 4.0)
    return Space(base, **{"kernel": kernels, "expand": expand, "depth": (1, 2, 3, 4), "ops": OPS, **kw})


def warm(net, x, archs):
    """Move BatchNorm statistics away from their initial values under several sub-networks."""
    net.train()
    with torch.no_grad():
        for a in archs:
            net.set_active(a)
            net(x)


@pytest.mark.parametrize("name", list_models())
def test_random_architectures_export_equal_and_count_like_direct_models(name):
    torch.manual_seed(0)
    space = space_of(name)
    net = ElasticNet(space, 10, in_chans=1, kernel_transform=name == "mcunet")
    rng = random.Random(1)
    archs = [sample_arch(rng, space) for _ in range(2)]
    x = torch.randn(3, 1, 28, 28)
    warm(net, x, archs + ["max"])
    net.eval()
    for arch in archs + [min_arch(space), max_arch(space)]:
        net.set_active(arch)
        exported = net.export(arch).eval()
        direct = create_model("custom", 10, in_chans=1, arch=json.loads(json.dumps(arch)))  # plain data survives JSON
        direct.load_state_dict(exported.state_dict(), strict=True)
        with torch.no_grad():
            assert (exported(x) - net(x)).abs().max() <= 1e-4
        ce, cd = count(exported, 28, 1), count(direct, 28, 1)
        assert ce.params == cd.params and ce.macs == cd.macs
    mixed = {b["op"] for st in archs[0]["stages"] for b in st["blocks"][: st["depth"]]}
    assert len(mixed) > 1  # a random architecture mixes operators


@pytest.mark.parametrize("name", ["mcunet", "resnet20"])
def test_sampled_architecture_trains(name):
    torch.manual_seed(0)
    space = space_of(name)
    net = ElasticNet(space, 10, in_chans=1, kernel_transform=True)
    net.set_active(sample_arch(random.Random(0), space))
    out = net(torch.randn(4, 1, 28, 28))
    torch.nn.functional.cross_entropy(out, torch.randint(10, (4,))).backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(p.grad is not None for n, p in net.named_parameters() if "ktm" in n)  # kernel transforms learn


def test_kernel_and_depth_slices_are_centre_and_leading_parts():
    conv = ElasticConv2d(4, 6, (7, 5, 3))
    w = conv.weight.detach()
    assert torch.equal(conv.kernel_weight(7), conv.weight)
    assert torch.equal(conv.kernel_weight(5), w[..., 1:6, 1:6])
    assert torch.equal(conv.kernel_weight(3), w[..., 2:5, 2:5])
    conv.set_active(4, 6, 3, "mult")
    x = torch.randn(1, 4, 9, 9)
    torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, w[..., 2:5, 2:5], padding=1))
    t = ElasticConv2d(4, 6, (7, 5, 3), kernel_transform=True)
    with torch.no_grad():
        t.ktm["5to3"].copy_(torch.randn(9, 9))
    ref = (t.weight[..., 2:5, 2:5].reshape(-1, 9) @ t.ktm["5to3"].t()).reshape(6, 4, 3, 3)
    torch.testing.assert_close(t.kernel_weight(3), ref)  # 7 -> 5 is an identity at init; 5 -> 3 transformed

    space = space_of("mcunet", op="mult")
    net = ElasticNet(space, 10, in_chans=1)
    arch = json.loads(json.dumps(min_arch(space)))
    arch["stages"][1]["depth"] = 2
    arch["stages"][1]["blocks"][0]["kernel"] = 3
    exported = net.export(arch)
    assert len(exported.stages[1].blocks) == 2
    for j in range(2):  # the leading blocks, their weights the leading channels of the stored ones
        stored = dict(net.stages[1].blocks[j].named_parameters())
        for n, a in exported.stages[1].blocks[j].named_parameters():
            b = stored[n]
            k = a.shape[-1] if a.dim() == 4 else None
            ref = b[tuple(slice(0, s) for s in a.shape[:2])] if a.dim() == 4 else b[: a.shape[0]]
            if k is not None and k < ref.shape[-1]:
                o = (ref.shape[-1] - k) // 2
                ref = ref[..., o : o + k, o : o + k]
            assert torch.equal(a, ref), n


@pytest.mark.parametrize("edit, field", [
    (lambda a: a["stages"][1]["blocks"][0].update(op="xor"), "stages[1].blocks[0].op"),
    (lambda a: a["stages"][2]["blocks"][1].update(kernel=9), "stages[2].blocks[1].kernel"),
    (lambda a: a["stages"][3].update(depth=7), "stages[3].depth"),
    (lambda a: a["stages"][1]["blocks"].pop(), "stages[1]"),
    (lambda a: a["stages"].pop(), "stages"),
    (lambda a: a["stages"][2]["blocks"][0].update(expand=9.0), "stages[2].blocks[0].expand"),
    (lambda a: a["stem"].update(width=5.0), "stem.width"),
    (lambda a: a.update(resolution=224), "resolution"),
    (lambda a: a["stages"][0]["blocks"][0].pop("kernel"), "stages[0].blocks[0]"),
    (lambda a: a["head"].update(op="mult"), "head.op"),
])
def test_malformed_architecture_is_a_one_line_error_naming_the_field(edit, field):
    space = space_of("mcunet", ops=("shift", "add"))
    net = ElasticNet(space, 10, in_chans=1)
    arch = json.loads(json.dumps(min_arch(space)))
    edit(arch)
    with pytest.raises(ArchError) as e:
        net.set_active(arch)
    msg = str(e.value)
    assert field in msg and "\n" not in msg
    with pytest.raises(ArchError):
        net.export(arch)


def test_custom_architecture_from_a_json_file(tmp_path):
    arch = create_model("mcunet", 10, op="add", input_size=64).arch
    arch["stages"][2]["blocks"][0].update(kernel=7, expand=3.0, op="shift")
    path = tmp_path / "found.json"
    path.write_text(json.dumps(arch))
    m = create_model("custom", 10, arch=str(path))
    assert m.arch == arch and m.stages[2].blocks[0].depthwise.conv.kernel_size == (7, 7)
    assert count(m, 64).macs["shift"] > 0 and count(m, 64).macs["add"] > 0
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ArchError, match="not valid JSON"):
        create_model("custom", 10, arch=str(tmp_path / "bad.json"))
    with pytest.raises(ArchError, match="does not match"):
        create_model("resnet20", 10, arch=str(path))


def test_a_new_family_is_a_spec_table(monkeypatch):
    spec = NetSpec(8, [StageSpec(8, [None], [3], 1), StageSpec(16, [4, 4], [5, 5], 2, se=True),
                       StageSpec(24, [3.0] * 2, [3] * 2, 2, "relu", block="basic", first_shortcut=True)],
                   final_expand=64, res=32)
    monkeypatch.setitem(SPECS, "toynet", spec)
    base = create_model("toynet", 10, op="add", input_size=32).arch
    space = Space(base, kernel=(3, 5), depth=(1, 2), ops=("shift", "add"), width_scale=(1.0, 1.5))
    net = ElasticNet(space, 10)
    arch = sample_arch(random.Random(0), space)
    x = torch.randn(2, 3, 32, 32)
    warm(net, x, [arch, "max"])
    net.eval()
    net.set_active(arch)
    with torch.no_grad():
        assert (net.export(arch).eval()(x) - net(x)).abs().max() <= 1e-4


def test_a_searched_architecture_trains_profiles_and_exports_like_a_zoo_model(tmp_path, capsys):
    from shiftaddaug.cli import main
    from shiftaddaug.runs import load_model

    arch = create_model("mobilenetv2_tiny", 10, op="shift", input_size=28).arch
    arch["stages"][2].update(depth=2)
    arch["stages"][3]["blocks"][0].update(kernel=5, expand=4.0, op="add")
    path = tmp_path / "found.json"
    path.write_text(json.dumps(arch))
    tiny = ["dataset=synthetic", "epochs=1", "batch_size=32", "train_subset=64", "test_subset=32", "workers=0",
            f"arch={path}", f"out_dir={tmp_path}"]
    for aug in ("none", "mult"):
        assert main(["train", *tiny, f"aug_op={aug}", f"name={aug}"]) == 0
    summary = json.loads((tmp_path / "mult" / "summary.json").read_text())
    assert summary["model"] == "custom" and summary["macs"]["add"] > 0 and summary["macs"]["shift"] > 0
    ckpt, _, exported = load_model(tmp_path / "mult" / "exported.pt")
    assert exported.arch == arch and len(exported.stages[2].blocks) == 2
    ch = ckpt["in_chans"]
    direct = create_model("custom", 10, in_chans=ch, arch=str(path))
    assert count(exported, 28, ch).macs == count(direct, 28, ch).macs
    capsys.readouterr()
    assert main(["profile", "custom", "--arch", str(path), "--num-classes", "10", "--in-chans", str(ch), "--json"]) == 0
    profiled = json.loads(capsys.readouterr().out)
    assert profiled["macs"] == count(direct, 28, ch).macs and profiled["input_size"] == 28
    assert main(["train", *tiny, "op=add", "name=x"]) == 2  # an architecture sets its own operators
    assert "drop op" in capsys.readouterr().err


def test_remap_and_kernel_transform_parameters_get_their_own_optimiser_treatment():
    from shiftaddaug.augment import build_augmented
    from shiftaddaug.train import param_groups

    net = build_augmented("mobilenetv2_tiny", 10, op="shift", remap="fc", input_size=28)
    decay, no_decay, remap = param_groups(net, 4e-5, 0.1, remap_lr_scale=0.5)
    names = {id(p): n for n, p in net.named_parameters()}
    assert remap["lr"] == 0.05 and remap["weight_decay"] == 0 and remap["params"]
    assert all(".remaps." in names[id(p)] for p in remap["params"])
    assert len(remap["params"]) == sum(1 for n in names.values() if ".remaps." in n)
    net = ElasticNet(space_of("mcunet"), 10, in_chans=1, kernel_transform=True)
    decay, no_decay, *_ = param_groups(net, 4e-5, 0.1)
    ktm = [p for p in no_decay["params"] if ".ktm." in {id(q): n for n, q in net.named_parameters()}[id(p)]]
    assert ktm and not any(".ktm." in n for n, p in net.named_parameters() if any(p is q for q in decay["params"]))


def test_each_candidate_operator_keeps_its_own_remap_and_scale_over_one_weight():
    from shiftaddaug.ops import conv2d

    conv = ElasticConv2d(8, 8, (3,), ops=("shift", "add", "mult"), remap="bins")
    assert set(conv.remaps._modules) == {"shift", "add"}  # mult has no remap: it is the stored form
    assert conv.gain["add"] == pytest.approx((3 * 8 * 9) ** 0.5) and conv.gain["shift"] == 1.0
    x = torch.randn(2, 8, 5, 5)
    for op in ("shift", "add"):
        conv.zero_grad()
        conv.set_active(8, 8, 3, op)
        y = conv(x)
        ref = conv2d(op, x, conv.remaps[op](conv.weight) * conv.gain[op], padding=1, **conv.op_kw[op])
        torch.testing.assert_close(y, ref)
        y.square().mean().backward()
        other = "add" if op == "shift" else "shift"
        assert conv.remaps[op].factors.grad.abs().sum() > 0 and conv.remaps[other].factors.grad is None
