import pytest
import torch
import torch.nn as nn

from shiftaddaug import create_model, list_models
from shiftaddaug.hw import count
from shiftaddaug.ops import AdderConv2d, ShiftConv2d, op_of

PUBLISHED = {  # name: (resolution, params M, MACs M) from NetAug / MCUNet
    "mobilenetv2_tiny": (144, 0.75, 23.5),
    "mobilenetv2_w035": (160, 1.7, 30.9),
    "proxylessnas_w035": (160, 1.8, 35.7),
    "mcunet": (176, 0.74, 81.8),
}


def test_registry_lists_all_models():
    assert set(list_models()) == {"mobilenetv2_tiny", "mobilenetv2_w035", "proxylessnas_w035", "mcunet",
                                  "mobilenetv3_w035", "resnet20"}
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model("nope")


@pytest.mark.parametrize("name", PUBLISHED)
def test_params_and_macs_match_published(name):
    res, params, macs = PUBLISHED[name]
    c = count(create_model(name, 1000, input_size=res), res)
    assert abs(c.params / 1e6 - params) / params < 0.03, c.params
    assert abs(c.total_macs / 1e6 - macs) / macs < 0.03, c.total_macs


def test_resnet20_size():
    c = count(create_model("resnet20", 10, input_size=32), 32)
    assert abs(c.params - 0.27e6) / 0.27e6 < 0.03 and abs(c.total_macs - 41e6) / 41e6 < 0.03


@pytest.mark.parametrize("name", ["mobilenetv2_tiny", "mobilenetv2_w035", "proxylessnas_w035", "mcunet",
                                  "mobilenetv3_w035", "resnet20"])
@pytest.mark.parametrize("op, cls", [("shift", ShiftConv2d), ("add", AdderConv2d)])
def test_mf_models_keep_only_the_stem_multiplicative(name, op, cls):
    m = create_model(name, 10, op=op, in_chans=1, input_size=28)
    convs = [(n, mod) for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d)]
    plain = [n for n, mod in convs if op_of(mod) == "mult"]
    assert plain == ["stem.conv"]
    assert all(isinstance(mod, cls) for n, mod in convs if n != "stem.conv")
    assert op_of(m.classifier) == "mult"
    c = count(m, 28, 1)
    assert set(c.macs) == {"mult", op} and c.macs[op] > 10 * c.macs["mult"]
    m.eval()
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_mf_stem_head_converts_everything():
    m = create_model("mobilenetv2_tiny", 10, op="shift", mf_stem_head=True, input_size=32)
    assert {op_of(mod) for mod in m.modules()} - {None} == {"shift"}
    a = create_model("resnet20", 10, op="add", mf_stem_head=True)
    assert {op_of(mod) for mod in a.modules()} - {None} == {"add"}
    a.eval()
    assert a(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [28, 32, 64])
def test_small_inputs_keep_last_feature_map_at_least_2x2(name, size):
    m = create_model(name, 10, input_size=size)
    feats = []
    m.stages[-1].register_forward_hook(lambda mod, i, o: feats.append(o.shape))
    m.eval()
    m(torch.randn(1, 3, size, size))
    assert min(feats[0][-2:]) >= 2


def test_large_input_keeps_imagenet_strides():
    m = create_model("mobilenetv2_tiny", 10, input_size=144)
    assert m.stem.conv.stride == (2, 2)
    assert create_model("mobilenetv2_tiny", 10, input_size=32).stem.conv.stride == (1, 1)


def test_arch_sets_each_blocks_operator_kernel_and_expand():
    arch = create_model("mcunet", 10, op="shift").arch
    ops = ["shift", "add", "mult"]
    for i, st in enumerate(arch["stages"]):
        for j, b in enumerate(st["blocks"]):
            b["op"] = ops[(i + j) % 3]
    arch["stages"][2]["blocks"][0].update(kernel=3, expand=2.0)
    arch["stages"][3]["depth"] = 2
    m = create_model("mcunet", 10, arch=arch)
    for i, stage in enumerate(m.stages):
        assert len(stage.blocks) == arch["stages"][i]["depth"]
        for j, block in enumerate(stage.blocks):
            assert {op_of(mod) for mod in block.modules()} - {None} == {ops[(i + j) % 3]}
    b = m.stages[2].blocks[0]
    assert b.depthwise.conv.kernel_size == (3, 3) and b.expand.conv.out_channels == 2 * b.expand.conv.in_channels
    with pytest.raises(ValueError, match="unknown operator"):
        create_model("mcunet", 10, op="xor")
    with pytest.raises(ValueError, match="not both"):
        create_model("mcunet", 10, op="shift", arch=arch)


def test_adder_layers_are_followed_by_batchnorm():
    m = create_model("mobilenetv3_w035", 10, op="add", input_size=32)
    for name, mod in m.named_modules():
        if hasattr(mod, "conv") and isinstance(mod.conv, AdderConv2d):
            assert isinstance(getattr(mod, "bn", None), nn.BatchNorm2d), name


def test_mf_models_train_one_step():
    for op in ("shift", "add"):
        m = create_model("mobilenetv3_w035", 10, op=op, input_size=32)
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        x, y = torch.randn(8, 3, 32, 32), torch.randint(10, (8,))
        before = [p.detach().clone() for p in m.parameters()]
        nn.functional.cross_entropy(m(x), y).backward()
        assert all(p.grad is not None for p in m.parameters())
        opt.step()
        assert all(not torch.equal(b, p) for b, p in zip(before, m.parameters()) if b.ndim == 4)


@pytest.mark.parametrize("name", list_models())
def test_stage_features_match_feature_info_and_end_where_the_classifier_starts(name):
    model = create_model(name, 10, op="shift", in_chans=1, input_size=56).eval()
    x = torch.randn(2, 1, 56, 56)
    feats = model.stage_features(x)
    assert [(f.shape[1], 56 // f.shape[-1]) for f in feats] == [(i["channels"], i["reduction"])
                                                                for i in model.feature_info]
    assert model.feature_info[-1]["reduction"] > model.feature_info[0]["reduction"]
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), model.forward_features(x))


def test_a_supernets_features_follow_its_active_architecture():
    from shiftaddaug.augment import build_augmented

    net = build_augmented("mcunet", 10, op="shift", in_chans=1, input_size=64).eval()
    x = torch.randn(1, 1, 64, 64)
    for mode in ("min", "max"):
        net.set_active(mode)
        assert [f.shape[1] for f in net.stage_features(x)] == [i["channels"] for i in net.feature_info]
    assert net.feature_info != build_augmented("mcunet", 10, op="shift", in_chans=1, input_size=64).feature_info
