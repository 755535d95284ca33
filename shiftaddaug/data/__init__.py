"""Datasets by name -> train and test loaders with the right normalisation and augmentation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ..errors import UserError
from . import scenes, segfolders, sources
from .loader import SegTensorLoader, TensorLoader


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    channels: int
    native_size: int | None  # None: images of any size (folder datasets)
    mean: tuple
    std: tuple
    pad: int = 0  # random-crop padding for in-memory datasets
    flip: bool = True
    task: str = "cls"  # "seg": labels are per-pixel class masks (ignore index 255)
    class_names: tuple | None = None


_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DATASETS = {
    "fashion-mnist": DatasetInfo(10, 1, 28, (0.2860,), (0.3530,), pad=2),
    "cifar10": DatasetInfo(10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), pad=4),
    "cifar100": DatasetInfo(100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), pad=4),
    "synthetic": DatasetInfo(10, 3, 32, (0.5,) * 3, (0.29,) * 3, pad=2, flip=False),
    "fmnist-scenes": DatasetInfo(11, 1, 64, (0.429,), (0.194,), task="seg", class_names=scenes.CLASSES),
    "voc": DatasetInfo(21, 3, None, *_IMAGENET_STATS, task="seg", class_names=segfolders.VOC_CLASSES),
    "cityscapes": DatasetInfo(19, 3, None, *_IMAGENET_STATS, task="seg", class_names=segfolders.CITYSCAPES_CLASSES),
    "imagenet": DatasetInfo(1000, 3, None, *_IMAGENET_STATS),
    "imagefolder": DatasetInfo(0, 3, None, *_IMAGENET_STATS),  # classes counted from the folder
    "food101": DatasetInfo(101, 3, None, *_IMAGENET_STATS),
    "flowers102": DatasetInfo(102, 3, None, *_IMAGENET_STATS),
    "stanford_cars": DatasetInfo(196, 3, None, *_IMAGENET_STATS),
    "oxford_pets": DatasetInfo(37, 3, None, *_IMAGENET_STATS),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load_tensors(name: str, data_dir: str | None, split: str, subset: int | None = None, seed: int = 0,
                 val_images: int = 0):
    """uint8 images ``[N, C, H, W]`` and int64 labels (uint8 masks ``[N, H, W]`` for segmentation) of an in-memory
    dataset, optionally a fixed random subset.
    ``val_images``: the training split without the validation images (``split="train"``), or those images
    (``split="val"``); the subset is drawn from what remains."""
    if name == "fashion-mnist":
        x, y = sources.load_fashion_mnist(data_dir, "test" if split == "test" else "train")
    elif name in ("cifar10", "cifar100"):
        x, y = sources.load_cifar(data_dir, "test" if split == "test" else "train", int(name[5:]))
    elif name == "synthetic":
        x, y = sources.synthetic("test" if split == "test" else "train", seed=0)
    elif name == "fmnist-scenes":
        x, y = scenes.load_scenes(data_dir, "test" if split == "test" else "train", DATASETS[name].native_size)
    else:
        raise UserError(f"{name} is a folder dataset, not an in-memory one")
    if split != "test" and val_images:
        train_idx, val_idx = hold_out(len(x), val_images, name)
        idx = val_idx if split == "val" else train_idx
        x, y = x[idx], y[idx]
    if subset and subset < len(x):
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:subset]
        x, y = x[idx], y[idx]
    return x, y


VAL_SEED = 20261202  # the validation split is the same whatever a run's seed, so that searches compare


def hold_out(n: int, val_images: int, name: str = "the dataset") -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training images that remain, and of ``val_images`` held out for validation (a fixed draw)."""
    if val_images >= n:
        raise UserError(f"val_images={val_images} leaves no training images: {name}'s training split has {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))
    return perm[val_images:].sort().values, perm[:val_images].sort().values


class Loaders(NamedTuple):
    train: Any  # shuffled, augmented
    test: Any
    calib: Any  # a fixed subset of the training images without augmentation (BatchNorm recalibration); None if 0
    num_classes: int
    channels: int
    val: Any = None  # images held out of the training split (``val_images``), without augmentation; None if 0


def build_loaders(name: str, data_dir: str | None, batch_size: int, input_size: int, *, seed: int = 0,
                  train_subset: int | None = None, test_subset: int | None = None, workers: int = 2,
                  calib_images: int = 0, skip_corrupt: bool = False, val_images: int = 0,
                  shard: tuple[int, int] = (0, 1)) -> Loaders:
    """Train, test and calibration loaders of dataset ``name``, with its class and channel counts, and a validation
    loader over ``val_images`` training images held out of training (the same images for every seed). A corrupt
    image of a folder dataset stops the run with one line, or is skipped with a warning (``skip_corrupt``).
    ``shard=(rank, world)``: this process's share of every loader (distributed training; ``TensorLoader``)."""
    info = dataset_info(name)
    if info.native_size is None and info.task == "seg":
        return _seg_folder_loaders(name, info, data_dir, batch_size, input_size, seed, train_subset, test_subset,
                                   workers, calib_images, skip_corrupt, val_images, shard)
    if info.native_size is None:
        return _folder_loaders(name, info, data_dir, batch_size, input_size, seed, train_subset, test_subset, workers,
                               calib_images, skip_corrupt, val_images, shard)
    (x, y), (xt, yt) = (load_tensors(name, data_dir, split, subset, seed, val_images)
                        for split, subset in (("train", train_subset), ("test", test_subset)))
    norm = dict(mean=info.mean, std=info.std, input_size=input_size, shard=shard)
    loader, augment = (SegTensorLoader, {}) if info.task == "seg" else (TensorLoader, dict(pad=info.pad,
                                                                                            flip=info.flip))
    train = loader(x, y, batch_size, train=True, seed=seed, **augment, **norm)
    test = loader(xt, yt, batch_size, **norm)
    calib = loader(x[:calib_images], y[:calib_images], batch_size, **norm) if calib_images else None
    val = loader(*load_tensors(name, data_dir, "val", val_images=val_images), batch_size, **norm) \
        if val_images else None
    return Loaders(train, test, calib, info.num_classes, info.channels, val)


def sharded(ds, shard: tuple[int, int], train: bool, seed: int) -> tuple:
    """A folder dataset's share for process ``rank`` of ``world``: for training a ``DistributedSampler`` (one
    shuffled order per epoch, cut to equal shares), for evaluation every ``world``-th image (each image once).
    Returns (dataset, DataLoader keywords)."""
    from torch.utils.data import DistributedSampler, Subset

    rank, world = shard
    if world == 1:
        return ds, {"shuffle": train}
    if train:
        return ds, {"sampler": DistributedSampler(ds, world, rank, shuffle=True, seed=seed, drop_last=True)}
    return Subset(ds, list(range(rank, len(ds), world))), {"shuffle": False}


def _folder_loaders(name, info, data_dir, batch_size, input_size, seed, train_subset, test_subset, workers,
                    calib_images, skip_corrupt, val_images, shard):
    import torchvision.transforms as T
    from torch.utils.data import Subset

    from .folders import CheckedLoader

    norm = T.Normalize(info.mean, info.std)
    train_tf = T.Compose([T.RandomResizedCrop(input_size), T.RandomHorizontalFlip(),
                          T.ColorJitter(brightness=32 / 255, saturation=0.5), T.ToTensor(), norm])
    test_tf = T.Compose([T.Resize(int(round(input_size / 0.875))), T.CenterCrop(input_size), T.ToTensor(), norm])
    train_ds = sources.folder_dataset(name, data_dir, "train", train_tf)
    test_ds = sources.folder_dataset(name, data_dir, "test", test_tf)
    if name in ("imagenet", "imagefolder") and train_ds.classes != test_ds.classes:  # labels index each list
        only = sorted(set(train_ds.classes) ^ set(test_ds.classes))
        raise UserError(f"{name}: train/ and val/ hold different classes (e.g. {', '.join(only[:3])}); give both "
                        "folders the same class subfolders")
    num_classes = info.num_classes or len(train_ds.classes)
    g = torch.Generator().manual_seed(seed)
    full, val = train_ds, None
    remain = hold_out(len(full), val_images, name)[0] if val_images else torch.arange(len(full))
    pool = remain[torch.randperm(len(remain), generator=g)[:train_subset or len(remain)]].tolist()
    if (train_subset and train_subset < len(remain)) or val_images:
        train_ds = Subset(train_ds, pool)
    if test_subset and test_subset < len(test_ds):
        test_ds = Subset(test_ds, list(range(test_subset)))
    train = CheckedLoader(*sharded(train_ds, shard, True, seed), batch_size, skip_corrupt, num_workers=workers,
                          generator=g, persistent_workers=workers > 0)
    test = CheckedLoader(*sharded(test_ds, shard, False, seed), batch_size, skip_corrupt, num_workers=workers)
    calib = None
    if calib_images:  # the same training images, with the test transform and in a fixed order
        plain = sources.folder_dataset(name, data_dir, "train", test_tf)
        calib = CheckedLoader(*sharded(Subset(plain, pool[:calib_images]), shard, False, seed), batch_size,
                              skip_corrupt, num_workers=workers)
    if val_images:  # held-out training images, with the test transform
        plain = sources.folder_dataset(name, data_dir, "train", test_tf)
        val = CheckedLoader(*sharded(Subset(plain, hold_out(len(full), val_images, name)[1].tolist()), shard,
                                     False, seed), batch_size, skip_corrupt, num_workers=workers)
    return Loaders(train, test, calib, num_classes, info.channels, val)


def _seg_folder_loaders(name, info, data_dir, batch_size, input_size, seed, train_subset, test_subset, workers,
                        calib_images, skip_corrupt, val_images, shard):
    from torch.utils.data import Subset

    from .segfolders import SegFolder, SegFolderLoader

    sources.check_data_dir(data_dir)
    plain = SegFolder(name, data_dir, "train", input_size, info.num_classes)
    train_ds = plain.at_size(round(1.5 * input_size))  # half larger than the input: a zoomed crop keeps detail
    test_ds = SegFolder(name, data_dir, "test", input_size, info.num_classes)
    remain = hold_out(len(train_ds), val_images, name)[0] if val_images else torch.arange(len(train_ds))
    g = torch.Generator().manual_seed(seed)
    pool = remain[torch.randperm(len(remain), generator=g)[:train_subset or len(remain)]].tolist()
    kw = dict(mean=info.mean, std=info.std, input_size=input_size, workers=workers, skip_corrupt=skip_corrupt,
              shard=shard)
    train = SegFolderLoader(Subset(train_ds, pool), batch_size, train=True, seed=seed, **kw)
    test = SegFolderLoader(Subset(test_ds, list(range(min(test_subset or len(test_ds), len(test_ds))))),
                           batch_size, **kw)
    calib = SegFolderLoader(Subset(plain, pool[:calib_images]), batch_size, **kw) if calib_images else None
    val = SegFolderLoader(Subset(plain, hold_out(len(plain), val_images, name)[1].tolist()), batch_size, **kw) \
        if val_images else None
    return Loaders(train, test, calib, info.num_classes, info.channels, val)


__all__ = ["DATASETS", "DatasetInfo", "Loaders", "dataset_info", "build_loaders", "load_tensors", "TensorLoader",
           "SegTensorLoader"]
