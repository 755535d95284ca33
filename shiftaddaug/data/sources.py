"""Reading datasets from local folders in their standard layouts. Nothing is downloaded.

Small datasets (Fashion-MNIST, CIFAR, synthetic) load into one uint8 tensor ``[N, C, H, W]``; image-folder
datasets go through torchvision's dataset classes.
"""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
_FMNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
HOW_TO_GET = {
    "fashion-mnist": "install it with 'apt-get install -y dataset-fashion-mnist' (files land in "
                     f"{FASHION_MNIST_SYSTEM_DIR}) or put the four *-ubyte[.gz] files there",
    "cifar10": "unpack cifar-10-python.tar.gz (from the CIFAR-10 site) there",
    "cifar100": "unpack cifar-100-python.tar.gz (from the CIFAR site) there",
    "imagefolder": "arrange images as train/<class>/*.jpg and val/<class>/*.jpg",
    "food101": "unpack food-101.tar.gz there (torchvision layout food-101/)",
    "flowers102": "put the torchvision layout flowers-102/ (jpg/, imagelabels.mat, setid.mat) there",
    "stanford_cars": "put the torchvision layout stanford_cars/ there",
    "oxford_pets": "put the torchvision layout oxford-iiit-pet/ (images/, annotations/) there",
}


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        magic = int.from_bytes(data[0:4], "big")
        ndim, dtype = magic % 256, magic // 256
        if dtype != 0x08 or not 1 <= ndim <= 3:
            raise ValueError("not an unsigned-byte IDX file")
        shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"corrupt IDX file {path}: {e}; re-install the data ({HOW_TO_GET['fashion-mnist']})") from None


def check_data_dir(data_dir: str | None) -> None:
    """An explicit ``data_dir`` must exist: never fall back silently to other data."""
    if data_dir and not Path(data_dir).is_dir():
        raise UserError(f"data_dir {data_dir} does not exist or is not a folder; fix the path or leave data_dir unset")


def check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise UserError(f"{what} holds label {bad}, outside [0, {num_classes}); the file is corrupt or not this "
                        "dataset")


def find_fashion_mnist(data_dir: str | None) -> Path:
    check_data_dir(data_dir)
    if data_dir:
        d = Path(data_dir)
        candidates = [d, d / "fashion-mnist", d / "FashionMNIST" / "raw"]
    else:
        candidates = [Path(FASHION_MNIST_SYSTEM_DIR)]
    for c in candidates:
        if any((c / (f + ext)).is_file() for f in _FMNIST_FILES["train"][:1] for ext in ("", ".gz")):
            return c
    raise UserError(f"Fashion-MNIST not found in {' or '.join(map(str, candidates))}; {HOW_TO_GET['fashion-mnist']}")


def load_fashion_mnist(data_dir: str | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    root = find_fashion_mnist(data_dir)
    arrays = []
    for name in _FMNIST_FILES[split]:
        path = next((root / (name + ext) for ext in ("", ".gz") if (root / (name + ext)).is_file()), None)
        if path is None:
            raise UserError(f"{root / name}[.gz] missing; {HOW_TO_GET['fashion-mnist']}")
        arrays.append(_read_idx(path))
    images, labels = arrays
    if len(images) != len(labels):
        raise UserError(f"Fashion-MNIST in {root} is corrupt: {len(images)} images but {len(labels)} labels")
    check_labels(labels, 10, f"Fashion-MNIST {split} labels in {root}")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_cifar(data_dir: str | None, split: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    key = f"cifar{num_classes}"
    sub = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    check_data_dir(data_dir)
    root = Path(data_dir or "data") / sub
    if num_classes == 10:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    else:
        files = [split]
    images, labels = [], []
    for f in files:
        path = root / f
        if not path.is_file():
            raise UserError(f"{key}: {path} not found; {HOW_TO_GET[key]} (--data-dir is the folder holding {sub}/)")
        try:
            with open(path, "rb") as fh:
                batch = pickle.load(fh, encoding="latin1")
            images.append(np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch["labels" if num_classes == 10 else "fine_labels"], np.int64))
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
            raise UserError(f"{key}: {path} is corrupt ({type(e).__name__}: {e}); {HOW_TO_GET[key]}") from None
        check_labels(labels[-1], num_classes, f"{key}: {path}")
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def synthetic(split: str, num_classes: int = 10, size: int = 32, channels: int = 3, n: int | None = None,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable synthetic images: a smooth random template per class plus noise (for tests and smoke runs).

    Templates are 4x4 random images upsampled, so small random crops keep them recognisable."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=g) * 255
    templates = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    n = n or (512 if split == "train" else 256)
    g.manual_seed(seed + (1 if split == "train" else 2))
    labels = torch.randint(num_classes, (n,), generator=g)
    noise = torch.randn(n, channels, size, size, generator=g) * 60
    return (templates[labels] + noise).clamp(0, 255).to(torch.uint8), labels


def folder_dataset(name: str, data_dir: str | None, split: str, transform):
    """torchvision dataset for image-folder style data (ImageNet layout and the fine-grained sets)."""
    import torchvision.datasets as tvd

    check_data_dir(data_dir)
    root = data_dir or "data"
    train = split == "train"
    try:
        if name in ("imagenet", "imagefolder"):
            sub = Path(root) / ("train" if train else "val")
            if not sub.is_dir():
                raise FileNotFoundError(str(sub))
            return tvd.ImageFolder(str(sub), transform=transform)
        if name == "food101":
            return tvd.Food101(root, split="train" if train else "test", transform=transform)
        if name == "flowers102":
            return tvd.Flowers102(root, split="train" if train else "test", transform=transform)
        if name == "stanford_cars":
            return tvd.StanfordCars(root, split="train" if train else "test", transform=transform)
        if name == "oxford_pets":
            return tvd.OxfordIIITPet(root, split="trainval" if train else "test", transform=transform)
    except (FileNotFoundError, RuntimeError) as e:
        how = HOW_TO_GET["imagefolder" if name == "imagenet" else name]
        raise UserError(f"{name}: data not found or incomplete under {os.path.abspath(root)} ({e}); {how}") from None
    raise UserError(f"unknown dataset {name!r}")
