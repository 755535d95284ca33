"""Sliceable layers of the augmented supernet: one max-size weight, the target uses its leading slice.

A ``DynamicConv2d`` stores the weight in multiplicative form. In ``"target"`` mode it computes the target's slice
with the target's operator on remapped weights; in ``"aug"`` mode it computes its active slice as ``aug_op`` says:
``mult`` (all multiplicative), ``mf`` (all multiplication-free), ``hybrid`` (target block MF, the rest mult).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import conv2d, op_of
from ..ops.remap import DEFAULT_REMAP, Remap
from ..ops.shift import round_power_of_two

AUG_OPS = ("none", "mf", "hybrid", "mult")


class _LeadingChannels(torch.autograd.Function):
    """``x[:, :c]`` whose gradient comes back in ``x``'s memory format. A plain slice sends back a zero-padded NCHW
    gradient; in a channels-last network BatchNorm's backward then took its mixed-format path (a copy per tensor):
    the hybrid adder step took 19x a direct step (BENCHMARKS §5n)."""

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
        self.op, self.aug_op = op, aug_op
        self.op_kw = {k: getattr(conv, k) for k in ("weight_bits", "eta") if hasattr(conv, k)}
        self.target_in, self.target_out = target_in, target_out
        self.active_out, self.mode = target_out, "target"
        self.remap = None if op == "mult" else Remap(DEFAULT_REMAP[op] if remap == "auto" else remap,
                                                     conv.kernel_size[0])
        # adder weights live at unit scale (AdderNet's N(0, 1), the scale of their inputs), the shared weight at
        # kaiming scale: the adder sees it times a fixed gain = 1 / its init std, and runs with eta / gain^2 so
        # that adaptive gradient scaling still moves its weights by about lr * eta per step (BENCHMARKS §5d)
        self.add_gain = math.sqrt(3 * self.weight[0].numel()) if op == "add" else 1.0  # init std: 1/sqrt(3 fan_in)
        if self.op_kw.get("eta") is not None:
            self.op_kw["eta"] /= self.add_gain**2

    def mf_weight(self, w: torch.Tensor) -> torch.Tensor:
        """The MF operator's weight from a slice of the shared weight: remapped, at the operator's scale."""
        return self.remap(w) * self.add_gain if self.op == "add" else self.remap(w)

    def _conv(self, op, x, w, groups):
        if op != "mult":
            w = self.mf_weight(w)
        return conv2d(op, x, w, None, self.stride, self.padding, self.dilation, groups, **self.op_kw)

    def target_weight(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """The target's weight (or ``w``, a block of it) as its operator uses it (remapped; powers of two for shift)."""
        if w is None:
            w = self.weight[: self.target_out, : 1 if self.depthwise else self.target_in]
        if self.op == "mult":
            return w
        w = self.mf_weight(w)
        return round_power_of_two(w, self.op_kw.get("weight_bits", 5)) if self.op == "shift" else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        cout = cin if self.depthwise else (self.target_out if self.mode == "target" else self.active_out)
        w = self.weight[:cout] if self.depthwise else self.weight[:cout, :cin]
        groups = cin if self.depthwise else 1
        op = self.op
        if self.mode == "aug" and self.aug_op == "mult":
            op = "mult"
        ti, to = (1 if self.depthwise else self.target_in), self.target_out
        as_target = cout == to and (self.depthwise or cin == ti)  # hybrid on a layer no wider than the target
        if self.mode == "target" or op == "mult" or self.aug_op in ("mf", "none") or as_target:
            y = self._conv(op, x, w, groups)
        else:  # hybrid: the target's block with its MF operator, every other block multiplicative, one conv each
            # shift: a shift conv is a conv on powers of two, so they go into the multiplicative conv; an adder is
            # no conv: its block is zero there, computed apart and added to the first channels
            block = self.target_weight(w[:to, :ti]) if op == "shift" else torch.zeros_like(w[:to, :ti])
            y = self._conv("mult", x, torch.cat([torch.cat([block, w[:to, ti:]], 1), w[to:]], 0), groups)
            if op == "add":
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
        self.op_kw = {k: getattr(linear, k) for k in ("weight_bits", "eta") if hasattr(linear, k)}
        self.target_in = target_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight[:, : x.shape[1]]
        y = conv2d(self.op, x[:, :, None, None], w[:, :, None, None], None, **self.op_kw).flatten(1)
        return y if self.bias is None else y + self.bias
