"""Sliceable layers of the augmented supernet: one max-size weight, the target uses its leading slice.

A ``DynamicConv2d`` stores the weight in multiplicative form. In ``"target"`` mode it computes the target's slice
with the target's operator on remapped weights; in ``"aug"`` mode it computes its active slice as ``aug_op`` says:
``mult`` (all multiplicative), ``mf`` (all multiplication-free), ``hybrid`` (target block MF, the rest mult).
See docs/method.md, section 2.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import conv2d, get_operator, op_of
from ..ops.remap import Remap

AUG_OPS = ("none", "mf", "hybrid", "mult")


class _LeadingChannels(torch.autograd.Function):
    """``x[:, :c]`` whose gradient comes back in ``x``'s memory format. A plain slice sends back a zero-padded NCHW
    gradient; in a channels-last network BatchNorm's backward then took its mixed-format path (a copy per tensor)
    and the hybrid adder step took 19x a direct step."""

    @staticmethod
    def forward(ctx, x, c):
        ctx.shape, ctx.dtype, ctx.device, ctx.c = x.shape, x.dtype, x.device, c
        cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        ctx.fmt = torch.channels_last if cl else torch.contiguous_format
        return x[:, :c]

    @staticmethod
    def backward(ctx, g):
        gx = torch.empty(ctx.shape, dtype=ctx.dtype, device=ctx.device, memory_format=ctx.fmt)
        gx[:, : ctx.c].copy_(g)
        gx[:, ctx.c :].zero_()
        return gx, None


class DynamicConv2d(nn.Module):
    def __init__(self, conv: nn.Conv2d, target_in: int, target_out: int, op: str, aug_op: str, remap: str):
        super().__init__()
        if aug_op not in AUG_OPS:
            raise ValueError(f"unknown aug_op {aug_op!r}; choose one of {', '.join(AUG_OPS)}")
        self.weight, self.bias = conv.weight, conv.bias
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # shared weights live in multiplicative form
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.depthwise = conv.groups > 1
        if self.depthwise and conv.groups != conv.in_channels:
            raise ValueError("dynamic convolutions support dense and depthwise layers only")
        self.op, self.aug_op, self.operator = op, aug_op, get_operator(op)
        self.op_kw = {k: getattr(conv, k, self.operator.options[k]) for k in self.operator.supernet_options}
        if getattr(conv, "mode", "q") != "q":
            raise ValueError(f"the supernet shares float weights: shift mode {conv.mode!r} cannot be augmented; use q")
        self.target_in, self.target_out = target_in, target_out
        self.active_out, self.mode = target_out, "target"
        mf = self.operator.multiplication_free
        self.remap = Remap(self.operator.default_remap if remap == "auto" else remap, conv.kernel_size[0]) if mf \
            else None
        # a unit-scale operator (AdderNet's N(0, 1) weights, the scale of their inputs) sees the shared kaiming-scale
        # weight times a fixed gain = 1 / its init std, and runs with eta / gain^2 so that adaptive gradient scaling
        # still moves its weights by about lr * eta per step
        unit = self.operator.unit_scale
        self.gain = math.sqrt(3 * self.weight[0].numel()) if unit else 1.0  # kaiming init std: 1 / sqrt(3 fan_in)
        if self.op_kw.get("eta") is not None:
            self.op_kw["eta"] /= self.gain**2

    def mf_weight(self, w: torch.Tensor) -> torch.Tensor:
        """The MF operator's weight from a slice of the shared weight: remapped, at the operator's scale."""
        return self.remap(w) * self.gain

    def _conv(self, op, x, w, groups):
        if get_operator(op).multiplication_free:
            w = self.mf_weight(w)
        return conv2d(op, x, w, None, self.stride, self.padding, self.dilation, groups, **self.op_kw)

    def target_weight(self) -> torch.Tensor:
        """The target's weight as the operator's plain layer stores it: remapped, and in the operator's exported
        form where it has one (powers of two for shift)."""
        w = self.weight[: self.target_out, : 1 if self.depthwise else self.target_in]
        if not self.operator.multiplication_free:
            return w
        w = self.mf_weight(w)
        return w if self.operator.export_weight is None else self.operator.export_weight(w, **self.op_kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        cout = cin if self.depthwise else (self.target_out if self.mode == "target" else self.active_out)
        w = self.weight[:cout] if self.depthwise else self.weight[:cout, :cin]
        groups = cin if self.depthwise else 1
        op = "mult" if self.mode == "aug" and self.aug_op == "mult" else self.op
        ti, to = (1 if self.depthwise else self.target_in), self.target_out
        as_target = cout == to and (self.depthwise or cin == ti)  # hybrid on a layer no wider than the target
        if self.mode == "target" or op == "mult" or self.aug_op in ("mf", "none") or as_target:
            y = self._conv(op, x, w, groups)
        else:  # hybrid: the target's block with its MF operator, every other block multiplicative, one conv each
            # an operator that is a conv on some weight (shift: powers of two) goes into the multiplicative conv; one
            # that is no conv (adder) leaves its block zero there, is computed apart and added to the first channels
            folds = self.operator.as_conv_weight is not None
            block = self.operator.as_conv_weight(self.mf_weight(w[:to, :ti]), **self.op_kw) if folds \
                else torch.zeros_like(w[:to, :ti])
            y = self._conv("mult", x, torch.cat([torch.cat([block, w[:to, ti:]], 1), w[to:]], 0), groups)
            if not folds:
                a = self._conv(op, _LeadingChannels.apply(x, to if self.depthwise else ti), w[:to, :ti],
                               to if self.depthwise else 1)
                y = y + F.pad(a, (0, 0, 0, 0, 0, cout - to))  # pad, not cat: its backward is a view, not copies
        return y if self.bias is None else y + self.bias[:cout].view(1, -1, 1, 1)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """One max-size BatchNorm whose leading channels serve every width (statistics are shared and sliced)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            self.training, factor, self.eps)


class DynamicLinear(nn.Module):
    """Classifier whose input features follow the active width."""

    def __init__(self, linear: nn.Linear, target_in: int):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.op = op_of(linear)
        self.op_kw = {k: getattr(linear, k) for k in get_operator(self.op).supernet_options}
        self.target_in = target_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight[:, : x.shape[1]]
        y = conv2d(self.op, x[:, :, None, None], w[:, :, None, None], None, **self.op_kw).flatten(1)
        return y if self.bias is None else y + self.bias
