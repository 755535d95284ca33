"""``F.conv2d`` with a fast weight gradient for depthwise layers whose input is smaller than the kernel on the CPU.

oneDNN's depthwise weight gradient takes 10-60x longer than it should when the kernel overhangs the input (a 3x3
kernel on 2x2 or 1x1 maps, 5x5 and 7x7 on up to 4x4): 57 ms for a 1042-channel 2x2 layer at batch 128 on 2 cores,
where its input gradient takes 0.3 ms. The last stages of tiny models at 28-64 px are exactly such layers, widest in
the augmented model. Here the weight gradient is one reduction per kernel tap instead; taps that
see only padding are zero and skipped. Everything else (forward, input gradient, other layers, CUDA) is PyTorch's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

__all__ = ["mult_conv2d", "depthwise_weight_grad"]


def _overhangs(x: torch.Tensor, weight: torch.Tensor, padding, dilation, groups) -> bool:
    if x.device.type != "cpu" or isinstance(padding, str) or not (torch.is_grad_enabled() and weight.requires_grad):
        return False
    if x.dim() != 4 or not (groups == x.shape[1] == weight.shape[0] and weight.shape[1] == 1):
        return False
    if torch.is_autocast_enabled("cpu"):  # the backward would see a lower-precision gradient than its inputs
        return False
    (dh, dw), (kh, kw) = _pair(dilation), weight.shape[2:]
    return x.shape[2] < dh * (kh - 1) + 1 or x.shape[3] < dw * (kw - 1) + 1  # the kernel's extent


def _tap_range(tap, size, out_size, stride, padding, dilation):
    """Output positions whose input position ``o * stride + tap * dilation - padding`` lies inside the input, as
    (first output, first input, count); count 0 when the tap sees padding only."""
    offset = tap * dilation - padding
    first = max(0, -(offset // stride))  # ceil(-offset / stride)
    last = min(out_size - 1, (size - 1 - offset) // stride)
    return first, first * stride + offset, max(0, last - first + 1)


def depthwise_weight_grad(x, grad_y, kernel_size, stride, padding, dilation) -> torch.Tensor:
    """``dL/dW`` of a depthwise conv, ``[C, 1, kh, kw]``: per tap, the input positions it saw times ``grad_y`` there
    (no padded copy; taps that see padding only stay zero)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    h, w = x.shape[2:]
    oh, ow = grad_y.shape[2:]
    grad_w = x.new_zeros(x.shape[1], kh, kw)
    for i in range(kh):
        oy, iy, ny = _tap_range(i, h, oh, sh, ph, dh)
        for j in range(kw):
            ox, ix, nx = _tap_range(j, w, ow, sw, pw, dw)
            if ny and nx:
                xs = x[:, :, iy : iy + sh * (ny - 1) + 1 : sh, ix : ix + sw * (nx - 1) + 1 : sw]
                grad_w[:, i, j] = (xs * grad_y[:, :, oy : oy + ny, ox : ox + nx]).sum((0, 2, 3))
    return grad_w.unsqueeze(1)


class _DepthwiseConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.conf = stride, padding, dilation
        return F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad_y, x, weight, None, stride, padding, dilation, False,
                                                         [0, 0], x.shape[1], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(x, grad_y, weight.shape[2:], stride, padding, dilation)
        return grad_x, grad_w, None, None, None


def mult_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``F.conv2d``, same signature and values; depthwise layers whose kernel overhangs a CPU input get the fast
    weight gradient."""
    if not _overhangs(x, weight, padding, dilation, groups):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    y = _DepthwiseConv2d.apply(x, weight, list(_pair(stride)), list(_pair(padding)), list(_pair(dilation)))
    return y if bias is None else y + bias.view(1, -1, 1, 1)
