"""A batch loader for datasets held in memory as uint8 tensors: augmentation is done per batch, vectorised.

For 28-32 px datasets this is much faster on a 2-core CPU than per-image PIL transforms in worker processes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class TensorLoader:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean, std, *,
                 train: bool = False, input_size: int | None = None, pad: int = 0, flip: bool = False,
                 seed: int = 0, drop_last: bool = False):
        self.images, self.labels = images, labels
        self.batch_size, self.train, self.pad, self.flip = batch_size, train, pad, flip
        self.input_size = input_size or images.shape[-1]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self.seed, self.epoch, self.drop_last = seed, 0, drop_last

    def __len__(self) -> int:
        n = len(self.images) / self.batch_size
        return math.floor(n) if self.drop_last else math.ceil(n)

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.pad:
            xp = F.pad(x, (self.pad,) * 4)
            oy = torch.randint(0, 2 * self.pad + 1, (b,), generator=g)
            ox = torch.randint(0, 2 * self.pad + 1, (b,), generator=g)
            iy = (torch.arange(h)[None] + oy[:, None])[:, None, :, None]
            ix = (torch.arange(w)[None] + ox[:, None])[:, None, None, :]
            x = xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], iy, ix]
        if self.flip:
            m = torch.rand(b, generator=g) < 0.5
            x = torch.where(m[:, None, None, None], x.flip(-1), x)
        return x

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        n = len(self.images)
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.images[idx].float()
            if self.train:
                x = self._augment(x, g)
            if x.shape[-1] != self.input_size:
                x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
            yield (x - self.mean) / self.std, self.labels[idx]
