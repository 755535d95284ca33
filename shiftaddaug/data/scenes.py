"""Fashion-MNIST scenes: an offline segmentation dataset made of real images.

Each scene places 2-5 Fashion-MNIST garments (random scale, position, rotation, mirror; later ones occlude earlier
ones, and borders cut them) on a textured canvas, then adds pixel noise. The mask is exact: a pixel belongs to the
topmost garment drawn there (class 1 + its Fashion-MNIST label), else to the background (0). Train scenes use the
Fashion-MNIST training images, test scenes the test images; a scene depends only on (split, size, seed, index
range), so the same settings always give the same scenes. Built once and cached as ``.npz``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..files import atomic_write

VERSION = 1  # part of the cache name: a change to the generator must not reuse old scenes
CLASSES = ("background", "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle boot")
SCENES = {"train": 10000, "test": 2000}
DRAWN = 12  # garment pixels at or above this grey level are drawn (Fashion-MNIST's background is 0)


def generate(garments: torch.Tensor, labels: torch.Tensor, n: int, size: int = 64, seed: int = 0,
             objects: tuple[int, int] = (2, 5), noise: float = 12.0, chunk: int = 500
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` scenes of ``size`` px from ``garments`` (uint8 ``[N, 1, 28, 28]``) with ``labels``: uint8 images
    ``[n, 1, size, size]`` and uint8 masks ``[n, size, size]`` (0 background, 1 + label for a garment); ``noise``:
    the standard deviation of the grey-level noise added last."""
    images, masks = [], []
    for start in range(0, n, chunk):
        g = torch.Generator().manual_seed(seed * 1_000_003 + start)  # a chunk does not depend on the ones before
        im, mk = _chunk(garments, labels, min(chunk, n - start), size, objects, noise, g)
        images.append(im)
        masks.append(mk)
    return torch.cat(images), torch.cat(masks)


def _chunk(garments, labels, n, size, objects, noise, g):
    canvas = _texture(n, size, g)
    mask = torch.zeros(n, size, size, dtype=torch.uint8)
    count = torch.randint(objects[0], objects[1] + 1, (n,), generator=g)
    for slot in range(objects[1]):
        src = torch.randint(len(garments), (n,), generator=g)
        side = 28 * (0.8 + 0.9 * torch.rand(n, generator=g)) * size / 64  # garment side on the canvas, px
        angle = (torch.rand(n, generator=g) - 0.5) * math.radians(60)
        mirror = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        centre = (torch.rand(n, 2, generator=g) * 1.6 - 0.8)  # in [-0.8, 0.8] of the canvas: borders may cut
        contrast = 0.6 + 0.4 * torch.rand(n, generator=g)
        warped = _place(garments[src].float(), side / size, angle, mirror, centre, size)
        drawn = (warped[:, 0] >= DRAWN) & (slot < count)[:, None, None]
        canvas = torch.where(drawn[:, None], warped * contrast[:, None, None, None], canvas)
        mask = torch.where(drawn, (labels[src] + 1).to(torch.uint8)[:, None, None], mask)
    noisy = canvas + torch.randn(canvas.shape, generator=g) * noise
    return noisy.round().clamp(0, 255).to(torch.uint8), mask


def _texture(n, size, g):
    """A smooth random grey field (8x8 control points, bicubic) plus a finer one: cloth or floor, not a flat colour."""
    coarse = F.interpolate(torch.rand(n, 1, 8, 8, generator=g) * 150, size=(size, size), mode="bicubic",
                           align_corners=False)
    fine = F.interpolate(torch.rand(n, 1, size // 4, size // 4, generator=g) * 60, size=(size, size),
                         mode="bilinear", align_corners=False)
    return (coarse + fine).clamp(0, 255)


def _place(img, scale, angle, mirror, centre, size):
    """Warp each 28 px image onto a ``size`` canvas: side ``scale`` of the canvas, rotated, mirrored, centred."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    k = 1 / scale  # canvas units -> garment units
    rot = torch.stack([torch.stack([cos * mirror, sin], -1), torch.stack([-sin * mirror, cos], -1)], 1)
    rot = rot * k[:, None, None]
    theta = torch.cat([rot, -(rot @ centre[:, :, None])], 2)  # garment coords = rot (canvas coords - centre)
    grid = F.affine_grid(theta, [len(img), 1, size, size], align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _save(path: Path, **arrays) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to the temporary's name
        np.savez(f, **arrays)


def cache_dir(data_dir: str | None) -> Path:
    """Where built scenes are kept: beside the data when ``data_dir`` is given, else SHIFTADDAUG_CACHE or
    ``~/.cache/shiftaddaug``."""
    if data_dir:
        return Path(data_dir) / "fmnist-scenes"
    return Path(os.environ.get("SHIFTADDAUG_CACHE") or Path.home() / ".cache" / "shiftaddaug") / "fmnist-scenes"


def load_scenes(data_dir: str | None, split: str, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed scenes of ``split`` at ``size`` px, built from Fashion-MNIST on first use and cached."""
    from .sources import load_fashion_mnist

    path = cache_dir(data_dir) / f"{split}-{SCENES[split]}-{size}px-v{VERSION}.npz"
    if not path.is_file():
        garments, labels = load_fashion_mnist(data_dir, split)
        images, masks = generate(garments, labels, SCENES[split], size, seed={"train": 0, "test": 1}[split])
        atomic_write(path, lambda tmp: _save(tmp, images=images.numpy(), masks=masks.numpy()))
    with np.load(path) as f:
        return torch.from_numpy(f["images"]), torch.from_numpy(f["masks"])
