"""Segmentation datasets from local folders in their standard layouts: Pascal VOC 2012 and Cityscapes (fine).

An item is the image resized to a square (bilinear) and its class mask resized alike (nearest), as uint8 tensors;
the joint random scale, crop and mirror run per batch (``loader.seg_batch``), as for the in-memory scenes. Pixels
outside every class (VOC's object borders, Cityscapes' void classes) are 255, the ignore index. Pairs are checked when
the dataset is made: every listed image has a mask, a mask is a class-index PNG of its image's size.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from .folders import BadSample, CheckedLoader
from .loader import SEG_SCALE, seg_batch

IGNORE_INDEX = 255
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
HOW_TO_GET = {
    "voc": "unpack VOCtrainval_11-May-2012.tar there (VOCdevkit/VOC2012/ with JPEGImages/, SegmentationClass/ and "
           "ImageSets/Segmentation/{train,val}.txt)",
    "cityscapes": "unpack leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip there (leftImg8bit/ and gtFine/, "
                  "each with train/ and val/ city folders)",
}


def _voc_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    base = next((b for b in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root) if (b / "JPEGImages").is_dir()),
                None)
    if base is None:
        raise UserError(f"voc: no JPEGImages/ under {root}; {HOW_TO_GET['voc']}")
    masks = base / "SegmentationClass"
    if not masks.is_dir():
        raise UserError(f"voc: {masks} is missing: VOC 2012's segmentation masks belong there; {HOW_TO_GET['voc']}")
    listing = base / "ImageSets" / "Segmentation" / f"{'train' if split == 'train' else 'val'}.txt"
    if not listing.is_file():
        raise UserError(f"voc: {listing} is missing (the list of the split's images); {HOW_TO_GET['voc']}")
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    return [(base / "JPEGImages" / f"{i}.jpg", masks / f"{i}.png") for i in ids]


def _cityscapes_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    split = "train" if split == "train" else "val"
    images = root / "leftImg8bit" / split
    if not images.is_dir():
        raise UserError(f"cityscapes: {images} is missing; {HOW_TO_GET['cityscapes']}")
    if not (root / "gtFine" / split).is_dir():
        raise UserError(f"cityscapes: {root / 'gtFine' / split} is missing (the fine masks); "
                        f"{HOW_TO_GET['cityscapes']}")
    return [(p, root / "gtFine" / split / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"))
            for p in sorted(images.glob("*/*_leftImg8bit.png"))]


def _cityscapes_train_ids() -> np.ndarray:
    """Cityscapes label id -> train id (its 19 evaluated classes; the rest 255), from torchvision's class table."""
    from torchvision.datasets import Cityscapes

    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for c in Cityscapes.classes:
        if 0 <= c.id < 256 and 0 <= c.train_id < len(CITYSCAPES_CLASSES):
            table[c.id] = c.train_id
    return table


def check_pairs(name: str, pairs: list[tuple[Path, Path]]) -> None:
    """Every image has its mask, of the same size, stored as class indices (one line naming the first bad file)."""
    from PIL import Image

    if not pairs:
        raise UserError(f"{name}: the split lists no images; {HOW_TO_GET[name]}")
    for image, mask in pairs:
        if not mask.is_file():
            raise UserError(f"{name}: {mask} is missing (the mask of {image.name}); {HOW_TO_GET[name]}")
        try:
            with Image.open(image) as im, Image.open(mask) as mk:
                size, mode, msize = im.size, mk.mode, mk.size
        except OSError as e:
            raise UserError(f"{name}: cannot read {image} or its mask ({type(e).__name__}); replace the pair or "
                            "remove it from the split") from None
        if mode not in ("P", "L"):
            raise UserError(f"{name}: mask {mask} is a {mode} picture; masks hold one class index per pixel "
                            "(palette or grey PNG)")
        if msize != size:
            raise UserError(f"{name}: mask {mask} is {msize[0]}x{msize[1]} but its image is {size[0]}x{size[1]}; "
                            "a mask must match its image")


class SegFolder(Dataset):
    """(image, mask) pairs of a segmentation folder as uint8 tensors ``[3, size, size]`` and ``[size, size]``."""

    def __init__(self, name: str, root: str | None, split: str, size: int, num_classes: int):
        root_path = Path(root or "data")
        if not root_path.is_dir():
            raise UserError(f"{name}: data_dir {os.path.abspath(root_path)} is not a folder; {HOW_TO_GET[name]}")
        self.name, self.size, self.num_classes = name, size, num_classes
        self.samples = (_voc_pairs if name == "voc" else _cityscapes_pairs)(root_path, split)
        check_pairs(name, self.samples)
        self.label_map = _cityscapes_train_ids() if name == "cityscapes" else None

    def __len__(self) -> int:
        return len(self.samples)

    def at_size(self, size: int) -> SegFolder:
        """The same (checked) pairs, resized to ``size``."""
        other = copy.copy(self)
        other.size = size
        return other

    def __getitem__(self, i: int):
        from PIL import Image

        image, mask = self.samples[i]
        with Image.open(image) as im, Image.open(mask) as mk:
            x = np.asarray(im.convert("RGB").resize((self.size, self.size), Image.BILINEAR))
            y = np.asarray(mk)
        if self.label_map is not None:
            y = self.label_map[y]
        bad = np.unique(y[(y >= self.num_classes) & (y != IGNORE_INDEX)])  # at full size: no pixel escapes the check
        if len(bad):
            raise BadSample(f"mask {mask} holds class {int(bad[0])}, outside 0-{self.num_classes - 1} and 255")
        y = np.asarray(Image.fromarray(y).resize((self.size, self.size), Image.NEAREST))
        return torch.from_numpy(x.copy()).permute(2, 0, 1), torch.from_numpy(y.copy())


class SegFolderLoader:
    """Batches of a ``SegFolder``: decoded in workers (a corrupt file stops the run in one line, or is skipped),
    then normalised, and for training randomly scaled, cropped and mirrored per image, by ``seg_batch``."""

    def __init__(self, ds, batch_size: int, mean, std, input_size: int, *, train: bool = False, seed: int = 0,
                 workers: int = 2, skip_corrupt: bool = False, shard: tuple[int, int] = (0, 1)):
        from . import sharded

        g = torch.Generator().manual_seed(seed)
        self.loader = CheckedLoader(*sharded(ds, shard, train, seed), batch_size, skip_corrupt, num_workers=workers,
                                    generator=g if train else None, persistent_workers=train and workers > 0)
        self.rank = shard[0]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self.input_size, self.train, self.seed, self.epoch = input_size, train, seed, 0

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch + 7919 * self.rank)  # rank 0: as one process
        for x, y in self.loader:
            yield seg_batch(x, y, g, self.mean, self.std, self.input_size, SEG_SCALE if self.train else None)
