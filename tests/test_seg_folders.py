"""Pascal VOC and Cityscapes from tiny folders in their standard layouts; bad folders stop in one line."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from shiftaddaug.cli import main as cli
from shiftaddaug.data import build_loaders
from shiftaddaug.errors import UserError


def save_mask(mask, path):
    im = Image.fromarray(mask, mode="P")
    im.putpalette([v for c in range(256) for v in (c, c, c)])  # a full palette: PNG keeps the indices as they are
    im.save(path)


def write_voc(root, n_train=6, n_val=3, size=(40, 30)):
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"2007_{i:06d}" for i in range(n_train + n_val)]
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(base / f"JPEGImages/{i}.jpg")
        mask = np.zeros((size[1], size[0]), dtype=np.uint8)
        mask[5:20, 10:30] = 15  # a person, with VOC's 255 border around it
        mask[4, 10:30] = 255
        save_mask(mask, base / f"SegmentationClass/{i}.png")
    (base / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:n_train]) + "\n")
    (base / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[n_train:]) + "\n")
    return base


def write_cityscapes(root, size=(64, 32)):
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            img_dir, gt_dir = root / "leftImg8bit" / split / "aachen", root / "gtFine" / split / "aachen"
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            stem = f"aachen_{i:06d}_000019"
            Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(img_dir / f"{stem}_leftImg8bit.png")
            ids = np.zeros((size[1], size[0]), np.uint8)  # 0: unlabeled (void)
            ids[16:] = 7  # road
            ids[:8, :32] = 26  # car
            Image.fromarray(ids, mode="L").save(gt_dir / f"{stem}_gtFine_labelIds.png")


def test_voc_batches_are_squares_with_masks_of_classes_and_the_ignore_index(tmp_path):
    write_voc(tmp_path)
    data = build_loaders("voc", str(tmp_path), 4, 24, workers=0)
    assert data.num_classes == 21 and data.channels == 3
    x, y = next(iter(data.test))
    assert x.shape == (3, 3, 24, 24) and y.shape == (3, 24, 24) and y.dtype == torch.long
    assert set(y.unique().tolist()) <= {0, 15, 255} and (y == 15).any() and (y == 255).any()
    xs, ys = next(iter(data.train))
    assert xs.shape == (4, 3, 24, 24) and set(ys.unique().tolist()) <= {0, 15, 255}
    assert sum(len(b[0]) for b in data.train) == 6


def test_cityscapes_label_ids_become_its_19_train_ids_and_void_is_ignored(tmp_path):
    write_cityscapes(tmp_path)
    data = build_loaders("cityscapes", str(tmp_path), 2, 32, workers=0)
    assert data.num_classes == 19
    _, y = next(iter(data.test))
    assert set(y.unique().tolist()) == {0, 13, 255}  # road, car, void


def test_a_voc_folder_without_masks_stops_in_one_line_before_anything_is_written(tmp_path, capsys):
    base = write_voc(tmp_path / "voc")
    for f in (base / "SegmentationClass").iterdir():
        f.unlink()
    (base / "SegmentationClass").rmdir()
    code = cli(["train", "task=seg", "dataset=voc", f"data_dir={tmp_path / 'voc'}", "input_size=24", "epochs=1",
                f"out_dir={tmp_path / 'runs'}", "workers=0"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "SegmentationClass is missing" in err
    assert not (tmp_path / "runs").exists()


def test_a_mask_of_the_wrong_size_or_colours_is_named_in_one_line(tmp_path):
    base = write_voc(tmp_path)
    bad = base / "SegmentationClass" / "2007_000001.png"
    save_mask(np.zeros((10, 10), np.uint8), bad)
    with pytest.raises(UserError, match=r"2007_000001.png is 10x10 but its image is 40x30") as e:
        build_loaders("voc", str(tmp_path), 4, 24, workers=0)
    assert "\n" not in str(e.value)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(bad)
    with pytest.raises(UserError, match="is a RGB picture"):
        build_loaders("voc", str(tmp_path), 4, 24, workers=0)


def test_a_mask_with_an_unknown_class_stops_or_is_skipped(tmp_path, capsys):
    base = write_voc(tmp_path)
    mask = np.zeros((30, 40), np.uint8)
    mask[0, 0] = 37
    save_mask(mask, base / "SegmentationClass" / "2007_000007.png")  # a val image
    data = build_loaders("voc", str(tmp_path), 4, 24, workers=0)
    with pytest.raises(UserError, match="holds class 37"):
        list(data.test)
    data = build_loaders("voc", str(tmp_path), 4, 24, workers=0, skip_corrupt=True)
    assert sum(len(x) for x, _ in data.test) == 2 and "holds class 37" in capsys.readouterr().err


def test_a_segmentation_run_trains_on_a_voc_folder(tmp_path):
    write_voc(tmp_path / "voc")
    code = cli(["train", "task=seg", "dataset=voc", f"data_dir={tmp_path / 'voc'}", "input_size=24", "epochs=1",
                "batch_size=3", "op=shift", "seg_head=aspp", "output_stride=8", f"out_dir={tmp_path / 'runs'}",
                "name=voc", "workers=0", "threads=1"])
    assert code == 0
    summary = json.loads((tmp_path / "runs" / "voc" / "summary.json").read_text())
    assert summary["metric"] == "miou" and 0 <= summary["final_acc"] <= 100
