"""Segmentation: metrics against hand-computed answers, and the Fashion-MNIST scenes dataset."""
import copy
import csv
import json
import math
import re

import pytest
import torch
import torch.nn as nn

from shiftaddaug import create_model, list_models
from shiftaddaug.augment import build_augmented
from shiftaddaug.cli import main as cli
from shiftaddaug.config import load_config
from shiftaddaug.data import scenes
from shiftaddaug.data.loader import SegTensorLoader
from shiftaddaug.errors import UserError
from shiftaddaug.hw import count, profile
from shiftaddaug.hw.arch_cost import arch_cost
from shiftaddaug.metrics import ConfusionMatrix
from shiftaddaug.models import ArchError
from shiftaddaug.train import train


def test_iou_pixel_accuracy_and_an_absent_class_by_hand():
    target = torch.tensor([[[0, 0, 1, 1], [2, 255, 1, 0]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 3, 1, 0]]])  # the ignored pixel's prediction (3) counts nowhere
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    iou = cm.iou()
    # class 0: 2 hits, 3 true, 3 predicted -> 2 / 4; class 1: 3 / 4; class 2: 0 / 1; class 3: in neither -> NaN
    assert iou[:3] == [0.5, 0.75, 0.0] and math.isnan(iou[3])
    assert cm.miou() == pytest.approx((0.5 + 0.75 + 0.0) / 3)
    assert cm.pixel_acc() == pytest.approx(5 / 7)


def test_logits_and_batches_accumulate_like_one_batch():
    target = torch.randint(0, 3, (4, 5, 6))
    target[0, 0] = 255
    logits = torch.randn(4, 3, 5, 6)
    whole, parts = ConfusionMatrix(3), ConfusionMatrix(3)
    whole.update(logits, target)
    for i in range(4):
        parts.update(logits[i:i + 1].argmax(1), target[i:i + 1])
    assert torch.equal(whole.counts, parts.counts) and int(whole.counts.sum()) == 4 * 30 - 6


def test_a_class_only_predicted_scores_zero_and_bad_shapes_or_labels_are_refused():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[1, 1]]), torch.tensor([[0, 0]]))
    assert cm.iou()[:2] == [0.0, 0.0] and math.isnan(cm.iou()[2]) and cm.miou() == 0.0
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(1, 3, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="class 7"):
        cm.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[7, 255]]))


@pytest.fixture
def garments():
    g = torch.Generator().manual_seed(0)
    return torch.randint(40, 256, (30, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(30) % 10


def test_scenes_are_fixed_by_their_seed_and_chunks_do_not_depend_on_each_other(garments):
    a = scenes.generate(*garments, 12, size=32, seed=3, chunk=5)
    b = scenes.generate(*garments, 12, size=32, seed=3, chunk=5)
    c = scenes.generate(*garments, 12, size=32, seed=4, chunk=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    first = scenes.generate(*garments, 5, size=32, seed=3, chunk=5)  # the first chunk alone is the same scenes
    assert torch.equal(first[1], a[1][:5])


def test_every_scene_has_background_and_two_to_five_garments(garments):
    images, masks = scenes.generate(*garments, 40, size=48, seed=0)
    assert images.shape == (40, 1, 48, 48) and masks.shape == (40, 48, 48)
    assert images.dtype == masks.dtype == torch.uint8 and int(masks.max()) <= 10
    for m in masks:
        classes = set(m.unique().tolist())
        assert 0 in classes and 1 <= len(classes - {0}) <= 5  # occlusion and borders may hide a garment entirely


def test_a_mask_marks_exactly_the_pixels_where_a_garment_is_drawn(garments, monkeypatch):
    monkeypatch.setattr(scenes, "_texture", lambda n, size, g: torch.zeros(n, 1, size, size))  # a black canvas
    images, masks = scenes.generate(*garments, 20, size=32, seed=0, noise=0.0)
    assert torch.equal(images[:, 0] > 0, masks > 0)


def test_scenes_are_built_once_then_read_from_the_cache(fake_fmnist, monkeypatch):
    monkeypatch.setattr(scenes, "SCENES", {"train": 6, "test": 4})
    x, m = scenes.load_scenes(str(fake_fmnist), "test", size=32)
    files = list((fake_fmnist / "fmnist-scenes").iterdir())
    assert x.shape == (4, 1, 32, 32) and m.shape == (4, 32, 32) and [f.suffix for f in files] == [".npz"]
    monkeypatch.setattr(scenes, "generate", lambda *a, **k: pytest.fail("rebuilt despite the cache"))
    x2, m2 = scenes.load_scenes(str(fake_fmnist), "test", size=32)
    assert torch.equal(x, x2) and torch.equal(m, m2)


def quadrants(n=8, size=32):
    """Images whose grey level codes the class of each pixel (four quadrants, classes 0-3)."""
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    h = size // 2
    masks[:, :h, h:], masks[:, h:, :h], masks[:, h:, h:] = 1, 2, 3
    return (masks * 60 + 20)[:, None], masks


def test_training_crops_move_image_and_mask_together_and_mark_what_comes_from_outside():
    images, masks = quadrants()
    loader = SegTensorLoader(images, masks, 8, (0.0,), (1 / 255,), train=True, seed=1)
    x, y = next(iter(loader))
    inside = y != 255
    assert y.dtype == torch.long and x.shape == (8, 1, 32, 32) and inside.float().mean() > 0.3
    grey_class = ((x[:, 0] - 20) / 60).round()  # the class the image shows at each pixel
    assert (grey_class[inside] == y[inside]).float().mean() > 0.9  # only pixels on a quadrant edge may disagree
    assert not torch.equal(y, masks.long())  # the batch was transformed
    zoomed_out = SegTensorLoader(images, masks, 8, (0.0,), (1 / 255,), train=True, scale=(0.5, 0.5))
    x, y = next(iter(zoomed_out))
    outside = y == 255
    assert outside.float().mean() == pytest.approx(0.75, abs=0.05)
    assert (x[:, 0][outside] == 0).float().mean() > 0.9  # the mean grey, but where bilinear reaches in at the edge


def test_evaluation_batches_are_the_masks_unchanged_and_resizing_keeps_classes():
    images, masks = quadrants()
    x, y = next(iter(SegTensorLoader(images, masks, 8, (0.0,), (1 / 255,))))
    assert torch.equal(y, masks.long()) and torch.equal(x, images.float())
    x, y = next(iter(SegTensorLoader(images, masks, 8, (0.0,), (1 / 255,), input_size=16)))
    assert x.shape == (8, 1, 16, 16) and torch.equal(y, masks.long()[:, ::2, ::2])


@pytest.mark.parametrize("head", ["lraspp", "aspp"])
@pytest.mark.parametrize("name", list_models())
def test_segmentation_models_give_logits_at_input_size_and_cost_their_head(name, head):
    res, op = ((24, "shift"), (40, "add"))[list_models().index(name) % 2]  # both operators, half the families each
    model = create_model(name, 11, op=op, in_chans=1, input_size=res, task="seg", head=head)
    assert model(torch.randn(2, 1, res, res)).shape == (2, 11, res, res)
    arch = copy.deepcopy(model.arch)
    arch["seg"]["width"], arch["classifier"]["op"] = 0.75, "add"
    dilated = copy.deepcopy(model.arch)  # full strides at 72 px, the last ones traded for dilation
    dilated["resolution"], dilated["seg"]["output_stride"] = 72, 8
    for a in (model.arch, arch, dilated):
        built = create_model("custom", 11, in_chans=1, arch=a)
        r = a["resolution"]
        ref, c = profile(built, r, in_chans=1).total, count(built, r, 1)
        fast = arch_cost(a, 11, 1)
        assert fast.energy_uj * 1e6 == pytest.approx(ref["energy_pj"], rel=1e-9)
        assert fast.latency_ms == pytest.approx(ref["latency_ms"], rel=1e-9)
        assert (fast.macs, fast.params, fast.sram_bytes) == (c.total_macs, c.params, c.peak_activation_bytes)
    kinds = [lc.type for lc in profile(model, res, in_chans=1).layers]
    assert kinds.count("resize") == (2 if head == "lraspp" else 1) and "pool" in kinds  # upsampling, context


def test_an_output_stride_trades_the_last_strides_for_dilation():
    plain = create_model("mobilenetv2_tiny", 11, op="shift", input_size=96, task="seg", head="aspp")
    model = create_model("mobilenetv2_tiny", 11, op="shift", input_size=96, task="seg", head="aspp", output_stride=8)
    assert [f["reduction"] for f in plain.feature_info][-1] == 32
    assert [f["reduction"] for f in model.feature_info][-1] == 8
    assert [f["channels"] for f in model.feature_info] == [f["channels"] for f in plain.feature_info]
    feats = model.stage_features(torch.randn(1, 3, 96, 96))
    assert feats[-1].shape[-1] == 12 and feats[2].shape[-1] == 12
    dw = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.kernel_size[0] > 1]
    dilations = {(m.dilation[0], m.padding[0] == m.dilation[0] * (m.kernel_size[0] // 2)) for m in dw}
    assert {d for d, _ in dilations} == {1, 2, 3, 4} and all(same for _, same in dilations)  # 4: stage, 2/3: ASPP
    with pytest.raises(ValueError, match="output_stride is a segmentation setting"):
        create_model("mobilenetv2_tiny", 10, output_stride=8)


@pytest.mark.parametrize("op,head,stride,res", [("shift", "lraspp", None, 24), ("add", "lraspp", None, 24),
                                                ("shift", "aspp", 8, 72), ("add", "aspp", 16, 72)])
def test_a_segmentation_supernet_exports_its_target_exactly(op, head, stride, res):
    kw = dict(op=op, in_chans=1, input_size=res, task="seg", head=head, output_stride=stride)
    net = build_augmented("mobilenetv2_tiny", 11, **kw)
    x = torch.randn(2, 1, res, res)
    net.train()
    for mode in ("max", "random", "min"):
        net.set_active(mode)
        net(x).mean().backward()
    assert net.seg_head.classifier.conv.weight.grad is not None if head == "aspp" else \
        net.seg_head.cbr.conv.weight.grad is not None
    net.eval()
    net.set_active("min")
    with torch.no_grad():
        ref = net(x)
        static = net.export().eval()
        assert (static(x) - ref).abs().max() < 1e-4
    direct = create_model("mobilenetv2_tiny", 11, **kw)
    assert static.state_dict().keys() == direct.state_dict().keys()
    assert count(static, res, 1).macs == count(direct, res, 1).macs
    assert sum(p.numel() for p in static.parameters()) == sum(p.numel() for p in direct.parameters())
    wide = net.export(net.max_arch)
    assert wide.net_cfg.seg.width > static.net_cfg.seg.width  # the head widens with the rest (NetAug)
    other = copy.deepcopy(net.target)
    other["seg"]["output_stride"] = 32 if stride else 8
    with pytest.raises(ArchError, match="this supernet's head"):
        net.set_active(other)


def test_segmentation_architectures_are_checked_field_by_field():
    arch = create_model("mcunet", 11, op="shift", in_chans=1, input_size=64, task="seg").arch
    for field, value, msg in (("head", "fcn", "seg.head='fcn'"), ("width", 0, "seg.width=0"),
                              ("op", "mul", "seg.op"), ("output_stride", 4, "seg.output_stride=4")):
        bad = copy.deepcopy(arch)
        bad["seg"][field] = value
        with pytest.raises(ArchError, match=re.escape(msg)):
            create_model("custom", 11, in_chans=1, arch=bad)
    with pytest.raises(ArchError, match="task='cls'"):
        create_model("custom", 11, in_chans=1, arch=arch, task="cls")
    with pytest.raises(ValueError, match="segmentation head 'fcn'"):
        create_model("mcunet", 11, task="seg", head="fcn")


@pytest.fixture
def tiny_scenes(fake_fmnist, monkeypatch):
    monkeypatch.setattr(scenes, "SCENES", {"train": 16, "test": 8})
    return fake_fmnist


def seg_config(data_dir, tmp_path, **kw):
    return load_config(overrides={"task": "seg", "dataset": "fmnist-scenes", "data_dir": str(data_dir),
                                  "model": "mobilenetv2_tiny", "op": "shift", "input_size": 24, "epochs": 2,
                                  "batch_size": 8, "workers": 0, "out_dir": str(tmp_path / "runs"), "threads": 1,
                                  **kw})


def test_a_segmentation_run_logs_miou_keeps_the_best_by_it_and_evaluates_per_class(tiny_scenes, tmp_path, capsys):
    summary = train(seg_config(tiny_scenes, tmp_path, aug_op="mult", name="seg"))
    rows = list(csv.DictReader(open(tmp_path / "runs" / "seg" / "metrics.csv")))
    assert len(rows) == 2 and {"test_miou", "test_acc", "train_acc"} <= set(rows[0])
    assert summary["metric"] == "miou" and summary["final_acc"] == float(rows[-1]["test_miou"])
    assert summary["best_acc"] == max(float(r["test_miou"]) for r in rows)
    assert summary["energy_uj"] > 0 and (tmp_path / "runs" / "seg" / "exported.pt").is_file()
    capsys.readouterr()
    assert cli(["eval", str(tmp_path / "runs" / "seg" / "exported.pt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["iou"]) == set(scenes.CLASSES) and 0 <= out["miou"] <= 100 and 0 <= out["pixel_acc"] <= 100
    png = tmp_path / "examples.png"
    assert cli(["eval", str(tmp_path / "runs" / "seg" / "exported.pt"), "--examples", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and "background" in capsys.readouterr().out
    # the same model in integers, as C; the check compares float and integer per pixel
    assert cli(["deploy", str(tmp_path / "runs" / "seg" / "exported.pt"), "--out", str(tmp_path / "c"),
                "--check", "2", "--calib-images", "8"]) == 0
    check = json.loads((tmp_path / "c" / "report.json").read_text())["check"]
    assert check["pixels"] == 2 * 24 * 24 and 0 <= check["integer_miou"] <= 100 and 0 <= check["agreement"] <= 100
    assert "resize" in json.loads((tmp_path / "c" / "report.json").read_text())["multiplies"]


def test_a_task_and_dataset_that_disagree_stop_in_one_line(tiny_scenes, tmp_path):
    with pytest.raises(UserError, match="dataset fmnist-scenes is for task=seg, not task=cls"):
        train(seg_config(tiny_scenes, tmp_path, task="cls"))
    with pytest.raises(UserError, match="dataset fashion-mnist is for task=cls"):
        train(seg_config(tiny_scenes, tmp_path, dataset="fashion-mnist"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
