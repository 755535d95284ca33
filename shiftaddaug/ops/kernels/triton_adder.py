"""Triton adder kernels for CUDA tensors, same contract as ``reference`` (tested on the CPU with TRITON_INTERPRET=1).

Depthwise layers use the grouped path (one group per channel); no dedicated depthwise kernel yet.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_BR, _BO, _BK = 16, 16, 16


@triton.jit
def _l1_forward_kernel(X, W, Y, n_rows, n_out, n_red, BR: tl.constexpr, BO: tl.constexpr, BK: tl.constexpr):
    g = tl.program_id(2)
    X, W, Y = X + g * n_rows * n_red, W + g * n_out * n_red, Y + g * n_rows * n_out  # this group's slices
    rr = tl.program_id(0) * BR + tl.arange(0, BR)
    oo = tl.program_id(1) * BO + tl.arange(0, BO)
    acc = tl.zeros((BR, BO), dtype=tl.float32)
    for k0 in range(0, n_red, BK):
        kk = k0 + tl.arange(0, BK)
        kin = kk[None, :] < n_red
        x = tl.load(X + rr[:, None] * n_red + kk[None, :], mask=(rr[:, None] < n_rows) & kin, other=0.0)
        w = tl.load(W + oo[:, None] * n_red + kk[None, :], mask=(oo[:, None] < n_out) & kin, other=0.0)
        acc += tl.sum(tl.abs(x[:, None, :] - w[None, :, :]), axis=2)  # padded lanes: |0 - 0| = 0
    tl.store(Y + rr[:, None] * n_out + oo[None, :], -acc, mask=(rr[:, None] < n_rows) & (oo[None, :] < n_out))


@triton.jit
def _l1_grad_x_kernel(X, W, Gy, DX, n_rows, n_out, n_red, BR: tl.constexpr, BO: tl.constexpr, BK: tl.constexpr):
    g = tl.program_id(2)
    X, W, Gy, DX = X + g * n_rows * n_red, W + g * n_out * n_red, Gy + g * n_rows * n_out, DX + g * n_rows * n_red
    rr = tl.program_id(0) * BR + tl.arange(0, BR)
    kk = tl.program_id(1) * BK + tl.arange(0, BK)
    xmask = (rr[:, None] < n_rows) & (kk[None, :] < n_red)
    x = tl.load(X + rr[:, None] * n_red + kk[None, :], mask=xmask, other=0.0)
    acc = tl.zeros((BR, BK), dtype=tl.float32)
    for o0 in range(0, n_out, BO):
        oo = o0 + tl.arange(0, BO)
        w = tl.load(W + oo[:, None] * n_red + kk[None, :], mask=(oo[:, None] < n_out) & (kk[None, :] < n_red),
                    other=0.0)
        # padded outputs carry no gradient
        gy = tl.load(Gy + rr[:, None] * n_out + oo[None, :], mask=(rr[:, None] < n_rows) & (oo[None, :] < n_out),
                     other=0.0)
        d = tl.minimum(tl.maximum(w[None, :, :] - x[:, None, :], -1.0), 1.0)
        acc += tl.sum(gy[:, :, None] * d, axis=1)
    tl.store(DX + rr[:, None] * n_red + kk[None, :], acc, mask=xmask)


def l1_forward(xg: torch.Tensor, wg: torch.Tensor) -> torch.Tensor:
    xg, wg = xg.contiguous(), wg.contiguous()
    g, r, k = xg.shape
    o = wg.shape[1]
    y = torch.empty(g, r, o, device=xg.device, dtype=xg.dtype)
    _l1_forward_kernel[(triton.cdiv(r, _BR), triton.cdiv(o, _BO), g)](xg, wg, y, r, o, k, _BR, _BO, _BK)
    return y


def l1_grad_x(xg: torch.Tensor, wg: torch.Tensor, gg: torch.Tensor) -> torch.Tensor:
    xg, wg, gg = xg.contiguous(), wg.contiguous(), gg.contiguous()
    g, r, k = xg.shape
    o = wg.shape[1]
    dx = torch.empty_like(xg)
    _l1_grad_x_kernel[(triton.cdiv(r, _BR), triton.cdiv(k, _BK), g)](xg, wg, gg, dx, r, o, k, _BR, _BO, _BK)
    return dx


dw_forward = dw_backward = None
