import pickle

import numpy as np
import pytest
import torch
from conftest import write_idx
from PIL import Image

from shiftaddaug.data import build_loaders, load_tensors
from shiftaddaug.errors import UserError


def test_fashion_mnist_from_folder(fake_fmnist):
    x, y = load_tensors("fashion-mnist", str(fake_fmnist), "train")
    assert x.shape == (40, 1, 28, 28) and x.dtype == torch.uint8 and y.shape == (40,)
    tr, te, _, nc, ch, _ = build_loaders("fashion-mnist", str(fake_fmnist), 16, 28)
    assert (nc, ch, len(tr), len(te)) == (10, 1, 3, 2)
    xb, yb = next(iter(tr))
    assert xb.shape == (16, 1, 28, 28) and xb.dtype == torch.float32


def test_corrupt_idx_gives_one_line_error(fake_fmnist):
    (fake_fmnist / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01garbage")
    with pytest.raises(UserError, match="corrupt IDX file"):
        load_tensors("fashion-mnist", str(fake_fmnist), "test")


def test_cifar_pickle_layout(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, 4))}
        pickle.dump(batch, open(root / name, "wb"))
    x, y = load_tensors("cifar10", str(tmp_path), "train")
    assert x.shape == (20, 3, 32, 32) and y.shape == (20,)
    tr, te, _, nc, ch, _ = build_loaders("cifar10", str(tmp_path), 8, 32)
    assert (nc, ch, tr.num_samples, te.num_samples) == (10, 3, 20, 4)


def test_missing_data_names_path_and_fix(tmp_path):
    with pytest.raises(UserError, match=r"cifar-100-python.*not found"):
        load_tensors("cifar100", str(tmp_path), "train")
    with pytest.raises(UserError, match="unknown dataset"):
        build_loaders("mnist-3d", None, 8, 32)
    with pytest.raises(UserError, match="imagenet: data not found"):
        build_loaders("imagenet", str(tmp_path), 8, 32)


def test_imagefolder_layout(tmp_path):
    for split in ("train", "val"):
        for cls in ("cat", "dog", "emu"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((40, 36, 3), 40 * i, np.uint8)).save(d / f"{i}.png")
    data = build_loaders("imagefolder", str(tmp_path), 4, 32, workers=0, calib_images=4)
    assert data.num_classes == 3 and data.channels == 3
    xb, yb = next(iter(data.train))
    assert xb.shape == (4, 3, 32, 32)
    # BN recalibration images: fixed training images without augmentation, the same on every pass
    (c1, l1), (c2, l2) = next(iter(data.calib)), next(iter(data.calib))
    assert c1.shape == (4, 3, 32, 32) and torch.equal(c1, c2) and torch.equal(l1, l2)
    plain = sorted(float(im.mean()) for im in c1)  # flat images: a centre crop keeps each one's value exactly
    assert len({round(v, 4) for v in plain}) == 2  # two pixel values (0 and 40) among the train images


def test_loader_augmentation_is_seeded_and_eval_is_plain():
    tr, te, *_ = build_loaders("synthetic", None, 64, 32, seed=3)
    a = next(iter(tr))[0]
    b = next(iter(tr))[0]
    assert torch.equal(a, b)  # same epoch, same seed: same batches
    tr.set_epoch(1)
    assert not torch.equal(a, next(iter(tr))[0])
    assert torch.equal(next(iter(te))[0], next(iter(te))[0])
    resized = build_loaders("synthetic", None, 8, 40)[0]
    assert next(iter(resized))[0].shape == (8, 3, 40, 40)
    calib = build_loaders("synthetic", None, 64, 32, seed=3, calib_images=100).calib
    (c1, _), (c2, _) = next(iter(calib)), next(iter(calib))
    assert torch.equal(c1, c2) and sum(len(x) for x, _ in calib) == 100  # a fixed subset, no augmentation
    torch.testing.assert_close(c1, (tr.images[:64].float() - tr.mean) / tr.std)


def test_subset_is_fixed_by_seed():
    x1, _ = load_tensors("synthetic", None, "train", subset=100, seed=1)
    x2, _ = load_tensors("synthetic", None, "train", subset=100, seed=1)
    assert x1.shape[0] == 100 and torch.equal(x1, x2)


def test_labels_outside_the_classes_are_refused(fake_fmnist, tmp_path):
    write_idx(fake_fmnist / "t10k-labels-idx1-ubyte", np.full(20, 12), gz=False)
    with pytest.raises(UserError, match="label 12, outside"):
        load_tensors("fashion-mnist", str(fake_fmnist), "test")
    root = tmp_path / "c" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [3, 10 if name == "test_batch" else 1]},
                    open(root / name, "wb"))
    load_tensors("cifar10", str(tmp_path / "c"), "train")
    with pytest.raises(UserError, match="label 10, outside"):
        load_tensors("cifar10", str(tmp_path / "c"), "test")


def test_an_explicit_data_dir_that_does_not_exist_never_falls_back(tmp_path):
    for name in ("fashion-mnist", "cifar10"):
        with pytest.raises(UserError, match="does not exist"):
            load_tensors(name, str(tmp_path / "nope"), "train")
    with pytest.raises(UserError, match="does not exist"):
        build_loaders("imagefolder", str(tmp_path / "nope"), 4, 32, workers=0)


def test_image_folders_must_agree_and_hold_images(tmp_path):
    for split, classes in (("train", ("cat", "dog")), ("val", ("cat", "emu"))):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / split / cls / "0.png")
    with pytest.raises(UserError, match="different classes") as e:
        build_loaders("imagefolder", str(tmp_path), 4, 32, workers=0)
    assert "dog" in str(e.value) and "emu" in str(e.value)
    (tmp_path / "val" / "emu" / "0.png").rename(tmp_path / "val" / "cat" / "1.png")
    (tmp_path / "val" / "emu").rmdir()
    (tmp_path / "val" / "dog").mkdir()  # the same classes now, but one folder is empty
    with pytest.raises(UserError, match="dog"):
        build_loaders("imagefolder", str(tmp_path), 4, 32, workers=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_stops_in_one_line_or_is_skipped_and_counted(tmp_path, capsys, workers):
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((12, 12, 3), 30 * i, np.uint8)).save(tmp_path / split / cls / f"{i}.jpg")
    bad = tmp_path / "train" / "dog" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated JPEG
    data = build_loaders("imagefolder", str(tmp_path), 4, 16, workers=workers)
    with pytest.raises(UserError, match="corrupt image .*1.jpg") as e:
        list(data.train)
    assert "\n" not in str(e.value)
    data = build_loaders("imagefolder", str(tmp_path), 4, 16, workers=workers, skip_corrupt=True)
    assert sum(len(y) for _, y in data.train) == 5 and data.train.skipped == 1
    err = capsys.readouterr().err
    assert "skipped corrupt image" in err and str(bad) in err and "1 skipped so far" in err
