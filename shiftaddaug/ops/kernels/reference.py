"""The pure-PyTorch adder kernels: the oracle every fast kernel is tested against, and the fallback."""
from __future__ import annotations

import torch

_CHUNK_ELEMS = 1 << 20  # 4 MB temporaries: measured 10-20x faster than 16 MB ones, few enough Python calls


def l1_forward(xg: torch.Tensor, wg: torch.Tensor) -> torch.Tensor:
    """``Y[g, r, o] = -sum_k |X[g, r, k] - W[g, o, k]|`` for ``X [G, R, K]``, ``W [G, O, K]``."""
    return torch.cdist(xg, wg, p=1).neg_()


def l1_grad_x(xg: torch.Tensor, wg: torch.Tensor, gg: torch.Tensor) -> torch.Tensor:
    """``dX[g, r, k] = sum_o G[g, r, o] * hardtanh(W[g, o, k] - X[g, r, k])`` (AdderNet's input gradient)."""
    g, rows, k = xg.shape
    og = wg.shape[1]
    gx = torch.empty_like(xg)
    step = max(1, _CHUNK_ELEMS // (g * og * k))  # hardtanh does not factor into a matmul: cache-sized row chunks
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        d = (wg[:, None] - xg[:, r0:r1, None, :]).clamp_(-1, 1)  # [G, rows, O, K]
        torch.sum(d.mul_(gg[:, r0:r1, :, None]), 2, out=gx[:, r0:r1])
    return gx


def shift_int(x: torch.Tensor, lshift: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """``Y[r, o] = sum_k sign[o, k] * (X[r, k] << lshift[o, k])`` in int64, one pass per distinct shift amount."""
    y = torch.zeros(x.shape[0], lshift.shape[0], dtype=torch.int64)
    for amount in lshift.unique().tolist():
        y += torch.bitwise_left_shift(x, amount) @ (sign * (lshift == amount)).t()  # a sign select, as a matmul
    return y


dw_forward = dw_backward = None  # depthwise layers go through the grouped path
