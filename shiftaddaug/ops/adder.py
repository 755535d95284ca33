"""AdderNet operator: ``Y = -sum |X - W|`` over each receptive field (Chen et al., "AdderNet", CVPR 2020).

The forward is an L1 distance between unfolded input patches and filters, per group; the backward is AdderNet's:
full-precision ``dW = sum G * (X - W)`` (a matrix product), ``dX = sum G * hardtanh(W - X)``, then adaptive
gradient scaling ``dW <- eta * sqrt(numel(W)) * dW / ||dW||``. The L1 and hardtanh reductions run in the backend
of ``ops.kernels`` for the tensor's device (compiled C++ on the CPU, Triton on CUDA, the PyTorch reference as the
fallback); depthwise layers have direct kernels where the backend has them. Peak memory is the unfolded input plus
the output plus small tiles: never the ``Cout x Cin*k*k x N*H*W`` broadcast of the official code.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from . import kernels

DEFAULT_ETA = 0.2  # AdderNet's adaptive gradient scaling factor

__all__ = ["DEFAULT_ETA", "adder2d", "AdderConv2d", "AdderLinear"]


def _out_size(size, k, stride, padding, dilation):
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def patch_rows(x, kernel_size, stride, padding, dilation, groups):
    """Receptive fields as rows per group: ``[G, N*OH*OW, C/G*kh*kw]`` in the channel-major order of
    ``weight.view(O, -1)``. A 1x1 layer needs no unfold; on a channels_last input the reshapes are views."""
    n, c, h, w = x.shape
    (kh, kw), g = kernel_size, groups
    oh = _out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = _out_size(w, kw, stride[1], padding[1], dilation[1])
    pointwise = (kh, kw, *stride, *padding) == (1, 1, 1, 1, 0, 0)
    cols = x.reshape(n, c, h * w) if pointwise else F.unfold(x, (kh, kw), dilation, padding, stride)
    return cols.view(n, g, -1, oh * ow).permute(1, 0, 3, 2).reshape(g, n * oh * ow, -1), oh, ow


class _Adder2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation, groups, eta):
        n, c = x.shape[:2]
        o, cg, kh, kw = weight.shape
        g = groups
        if c != cg * g:
            raise ValueError(f"adder2d: input has {c} channels, weight expects {cg} x {g} groups = {cg * g}")
        kern = kernels.for_tensor(x)
        if kern.dw_forward is not None and g == c == o and cg == 1:
            xl = x.permute(0, 2, 3, 1).contiguous()  # channels-last rows: a view when x is channels_last
            ctx.save_for_backward(xl, weight)
            ctx.conf = (x.shape, stride, padding, dilation, groups, eta, None, None, kern)
            ctx.depthwise = True
            return kern.dw_forward(xl, weight[:, 0], list(stride), list(padding), list(dilation)).permute(0, 3, 1, 2)
        ctx.depthwise = False
        xg, oh, ow = patch_rows(x, (kh, kw), stride, padding, dilation, g)
        y = kern.l1_forward(xg, weight.reshape(g, o // g, -1))  # [G, N*L, O/G]
        ctx.save_for_backward(xg, weight)
        ctx.conf = (x.shape, stride, padding, dilation, groups, eta, oh, ow, kern)
        ctx.pointwise = (kh, kw, *stride, *padding) == (1, 1, 1, 1, 0, 0)
        # channels_last view of the result (no copy when groups == 1)
        return y.view(g, n, oh, ow, o // g).permute(1, 0, 4, 2, 3).reshape(n, o, oh, ow)

    @staticmethod
    def backward(ctx, gy):
        xs, weight = ctx.saved_tensors
        (n, c, h, w), stride, padding, dilation, g, eta, oh, ow, kern = ctx.conf
        o, cg, kh, kw = weight.shape
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x = grad_w = None
        if ctx.depthwise:
            gl = gy.permute(0, 2, 3, 1).contiguous()
            gx, gw = kern.dw_backward(xs, weight[:, 0], gl, list(stride), list(padding), list(dilation), need_x,
                                      need_w)
            grad_x = gx.permute(0, 3, 1, 2) if need_x else None
            grad_w = gw.view(weight.shape) if need_w else None
        else:
            og, k = o // g, cg * kh * kw
            wg = weight.reshape(g, og, k)
            # [G, R, O/G], made contiguous once for both products (a view when gy is channels_last)
            gg = gy.reshape(n, g, og, oh * ow).permute(1, 0, 3, 2).reshape(g, n * oh * ow, og).contiguous()
            if need_w:
                # sum_r G[r,o] (X[r,k] - W[o,k]) = (G^T X)[o,k] - W[o,k] * sum_r G[r,o]
                colsum = torch.bmm(gg.new_ones(g, 1, gg.shape[1]), gg).transpose(1, 2)  # 3x faster than .sum(1)
                grad_w = (torch.bmm(gg.transpose(1, 2), xs) - wg * colsum).reshape(weight.shape)
            if need_x:
                gx = kern.l1_grad_x(xs, wg, gg)
                if ctx.pointwise:
                    grad_x = gx.view(g, n, h, w, k).permute(1, 0, 4, 2, 3).reshape(n, c, h, w)
                else:
                    cols = gx.view(g, n, oh * ow, k).permute(1, 0, 3, 2).reshape(n, g * k, oh * ow)
                    grad_x = F.fold(cols, (h, w), (kh, kw), dilation=dilation, padding=padding, stride=stride)
        if grad_w is not None and eta is not None:
            grad_w = grad_w * (eta * math.sqrt(grad_w.numel()) / grad_w.norm().clamp_min(1e-12))
        return grad_x, grad_w, None, None, None, None, None


def adder2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, eta: float | None = DEFAULT_ETA):
    """Functional adder convolution, signature like ``F.conv2d`` plus ``eta`` (``None`` disables scaling)."""
    y = _Adder2dFn.apply(x, weight, _pair(stride), _pair(padding), _pair(dilation), groups, eta)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


class _AdderParams:
    """What the adder conv and linear layers share: AdderNet's N(0, 1) weights and ``eta`` in their repr."""

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", eta={self.eta}"


class AdderConv2d(_AdderParams, nn.Conv2d):
    """Drop-in ``nn.Conv2d`` computing ``-sum |x - w|`` (AdderNet). Follow it with BatchNorm.

    Weights start from N(0, 1) as in AdderNet: with adaptive gradient scaling the per-step change is about
    ``lr * eta`` per weight, a scale that fits unit-variance weights.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=False, eta: float | None = DEFAULT_ETA, padding_mode="zeros", device=None, dtype=None):
        if isinstance(padding, str) or padding_mode != "zeros":
            raise ValueError("AdderConv2d supports numeric zero padding only (padding=int or tuple)")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self.eta = eta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adder2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups, self.eta)


class AdderLinear(_AdderParams, nn.Linear):
    """``nn.Linear`` computing ``-sum |x - w|`` per output feature (a 1x1 adder convolution)."""

    def __init__(self, in_features, out_features, bias=True, eta: float | None = DEFAULT_ETA, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.eta = eta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = adder2d(x.reshape(-1, x.shape[-1], 1, 1), self.weight[:, :, None, None], self.bias, eta=self.eta)
        return y.view(*lead, -1)
