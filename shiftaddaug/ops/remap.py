"""Weight remapping for heterogeneous weight sharing (ShiftAddAug, ShiftAddNAS's transformation kernel).

Multiplicative weights are roughly Gaussian, shift and adder weights roughly Laplacian. The shared tensor is kept
in the multiplicative form; a multiplication-free layer uses ``remap(W)``, computed on the fly and differentiable.
The formulas: docs/method.md, section 3.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

REMAPS = ("none", "laplace", "bins", "fc")
REMAP_CHOICES = ("auto", *REMAPS)  # auto: each operator's default remap (its registry entry)


def laplace_quantile_map(w: torch.Tensor) -> torch.Tensor:
    """Map ``w`` through its Gaussian CDF and the Laplace inverse CDF with the same mean and variance.

    ``u = Phi(z)``; ``W_mf = mu - b sign(u - 1/2) ln(1 - 2|u - 1/2|)``, ``b = sigma / sqrt(2)``. Written with
    ``1 - 2|u - 1/2| = erfc(|z| / sqrt 2)`` so that tails do not round to ``log(0)``.
    """
    mu, sigma = w.mean(), w.std().clamp_min(1e-12)
    z = (w - mu) / sigma
    tail = torch.special.erfc(z.abs() / math.sqrt(2)).clamp_min(1e-30)
    return mu - (sigma / math.sqrt(2)) * torch.sign(z) * torch.log(tail)


def mean_grad(p: torch.Tensor, n) -> torch.Tensor:
    """``p`` in value, its gradient divided by ``n``: a parameter shared by ``n`` weights gets their mean gradient.

    Summed, one SGD step at the network's lr moved every weight of a layer at once and training collapsed."""
    return p.detach() + (p - p.detach()) / n


def centre_positions(k2_full: int, k2: int) -> torch.Tensor:
    """Indices, in a flattened ``K x K`` kernel, of its centre ``k x k`` (an elastic kernel's smaller sizes)."""
    big, k = math.isqrt(k2_full), math.isqrt(k2)
    o = (big - k) // 2
    return torch.tensor([(o + i) * big + o + j for i in range(k) for j in range(k)])


class Remap(nn.Module):
    """One layer's remap. ``kind``: ``none`` | ``laplace`` | ``bins`` | ``fc`` (docs/method.md, "Weight remapping")."""

    def __init__(self, kind: str = "fc", kernel_size: int = 1, num_bins: int = 100):
        super().__init__()
        if kind not in REMAPS:
            raise ValueError(f"unknown remap {kind!r}; choose one of {', '.join(REMAPS)}")
        self.kind, self.k2 = kind, kernel_size * kernel_size
        if kind == "bins":
            self.factors = nn.Parameter(torch.ones(num_bins))
        elif kind == "fc" and self.k2 > 1:
            self.mix = nn.Parameter(torch.eye(self.k2))  # identity init: starts as the plain Laplace map
        elif kind == "fc":
            self.scale = nn.Parameter(torch.ones(()))
            self.offset = nn.Parameter(torch.zeros(()))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return w
        if self.kind == "bins":
            lo, hi = w.detach().min(), w.detach().max()
            edges = torch.linspace(0, 1, len(self.factors) + 1, device=w.device, dtype=w.dtype)[1:-1] * (hi - lo) + lo
            idx = torch.bucketize(w.detach().contiguous(), edges)  # the bin index is not differentiated
            count = torch.bincount(idx.flatten(), minlength=len(self.factors)).clamp_min(1).to(w.dtype)
            return w * mean_grad(self.factors, count)[idx]
        w = laplace_quantile_map(w)
        if self.kind == "laplace":
            return w
        n, k2 = w.numel(), w.shape[-1] * w.shape[-2]
        if self.k2 > 1:
            idx = centre_positions(self.k2, k2)
            mix = self.mix if k2 == self.k2 else self.mix[idx][:, idx]
            return (w.reshape(-1, k2) @ mean_grad(mix, n // k2).t()).reshape(w.shape)
        return w * mean_grad(self.scale, n) + mean_grad(self.offset, n)

    def kl_to_laplace(self, w_mf: torch.Tensor, scale: float = 2.0, seed: int = 0) -> torch.Tensor:
        """ShiftAddNAS's adder regulariser ``KL(softmax(W_mf) || softmax(Laplace(0, 2) sample))``.

        Both are sorted so that the divergence compares distributions, not an arbitrary pairing of elements."""
        g = torch.Generator().manual_seed(seed)
        u = torch.rand(w_mf.numel(), generator=g, dtype=torch.float64) - 0.5
        sample = (-scale * torch.sign(u) * torch.log1p(-2 * u.abs())).sort().values.to(w_mf)
        logp = torch.log_softmax(w_mf.flatten().sort().values, 0)
        logq = torch.log_softmax(sample, 0)
        return torch.sum(logp.exp() * (logp - logq))

    def extra_repr(self) -> str:
        return self.kind
