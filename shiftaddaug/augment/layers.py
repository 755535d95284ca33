"""Elastic layers: one max-size weight; each layer owns its active width, kernel and operator.

An ``ElasticConv2d`` stores its weight in multiplicative form, at the largest width and kernel of its space. The
active sub-layer uses the leading output/input channels and the centre ``k x k`` of the kernel (optionally through
Once-for-All's learned kernel transformation matrices), computed with the active operator; a multiplication-free
operator sees the weight through its own remap and scale (adder gain). While the supernet *augments* (ShiftAddAug),
the channels beyond the core (the target's slice) are computed as ``aug_op`` says: ``mult`` (all multiplicative),
``mf`` (all with the active operator), ``hybrid`` (the core block with it, the rest multiplicative).
See docs/method.md, sections 2 and 5.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.layers import make_act
from ..ops import conv2d, get_operator, make_linear
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


def centre(w: torch.Tensor, k: int) -> torch.Tensor:
    """The centre ``k x k`` of a kernel."""
    o = (w.shape[-1] - k) // 2
    return w[..., o : o + k, o : o + k]


class PerOperator(nn.Module):
    """Modules keyed by operator name. Not ``nn.ModuleDict``: an operator may be called like one of its methods
    (``half``, ``float``)."""

    def __getitem__(self, op: str) -> nn.Module:
        return self._modules[op]

    def __setitem__(self, op: str, module: nn.Module) -> None:
        self._modules[op] = module

    def __contains__(self, op: str) -> bool:
        return op in self._modules


class ElasticConv2d(nn.Module):
    """``ops``: the operators this layer may run (its candidates); ``kernel_sizes``: its elastic kernels (the
    largest is stored); ``kernel_transform``: smaller kernels through learned ``k^2 x k^2`` matrices (Once-for-All)
    rather than the plain centre slice; ``remap``: ``auto`` (each operator's default) or one remap for all."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes=(1,), stride: int = 1,
                 depthwise: bool = False, bias: bool = False, ops=("mult",), options: dict | None = None,
                 remap: str = "auto", kernel_transform: bool = False, aug_op: str = "mult", dilation: int = 1):
        super().__init__()
        if aug_op not in AUG_OPS:
            raise ValueError(f"unknown aug_op {aug_op!r}; choose one of {', '.join(AUG_OPS)}")
        self.kernel_sizes = tuple(sorted(set(kernel_sizes), reverse=True))
        k = self.kernel_sizes[0]
        self.weight = nn.Parameter(torch.empty(out_channels, 1 if depthwise else in_channels, k, k))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # shared weights live in multiplicative form
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.stride, self.dilation, self.depthwise = stride, dilation, depthwise
        self.aug_op, self.ops = aug_op, tuple(ops)
        if (options or {}).get("mode", "q") != "q":
            raise ValueError(f"the supernet shares float weights: shift mode {options['mode']!r} cannot be "
                             "augmented; use q")
        self.remaps, self.op_kw, self.gain = PerOperator(), {}, {}
        for name in self.ops:
            o = get_operator(name)
            kw = {n: v for n, v in o.layer_options(options).items() if n in o.supernet_options}
            # a unit-scale operator (AdderNet's N(0, 1) weights, the scale of their inputs) sees the shared
            # kaiming-scale weight times a fixed gain = 1 / its init std, and runs with eta / gain^2 so that adaptive
            # gradient scaling still moves its weights by about lr * eta per step
            self.gain[name] = math.sqrt(3 * self.weight[0].numel()) if o.unit_scale else 1.0
            if kw.get("eta") is not None:
                kw["eta"] /= self.gain[name] ** 2
            self.op_kw[name] = kw
            if o.multiplication_free:
                self.remaps[name] = Remap(o.default_remap if remap == "auto" else remap, k)
        self.ktm = nn.ParameterDict({f"{a}to{b}": nn.Parameter(torch.eye(b * b)) for a, b in
                                     zip(self.kernel_sizes, self.kernel_sizes[1:])}) if kernel_transform else None
        self.active_in, self.active_out, self.active_kernel, self.active_op = in_channels, out_channels, k, self.ops[0]
        self.bias_active = True
        self.augmenting, self.core = False, None  # core: (in, out, kernel, op) of the target (hybrid, KL term)

    def set_active(self, in_channels: int, out_channels: int, kernel: int, op: str) -> None:
        self.active_in, self.active_out, self.active_kernel, self.active_op = in_channels, out_channels, kernel, op

    def kernel_weight(self, k: int) -> torch.Tensor:
        """The stored weight at kernel ``k``: nested centre slices, each through its transformation matrix."""
        w = self.weight
        for a, b in zip(self.kernel_sizes, self.kernel_sizes[1:]):
            if a <= k:
                break
            w = centre(w, b)
            if self.ktm is not None:
                w = (w.reshape(-1, b * b) @ self.ktm[f"{a}to{b}"].t()).reshape(w.shape)
        return w

    def mf_weight(self, w: torch.Tensor, op: str) -> torch.Tensor:
        """The MF operator's weight from a slice of the shared weight: remapped, at the operator's scale."""
        return self.remaps[op](w) * self.gain[op]

    def static_weight(self, in_channels: int, out_channels: int, kernel: int, op: str) -> torch.Tensor:
        """A sub-layer's weight as the operator's plain layer stores it: remapped, and in the operator's exported
        form where it has one (powers of two for shift)."""
        w = self.kernel_weight(kernel)[:out_channels, : 1 if self.depthwise else in_channels]
        o = get_operator(op)
        if not o.multiplication_free:
            return w
        w = self.mf_weight(w, op)
        return w if o.export_weight is None else o.export_weight(w, **self.op_kw[op])

    def _conv(self, op, x, w, groups):
        if get_operator(op).multiplication_free:
            w = self.mf_weight(w, self.active_op)
        return conv2d(op, x, w, None, self.stride, self.dilation * (self.active_kernel // 2), self.dilation, groups,
                      **self.op_kw[self.active_op])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cin = x.shape[1]
        cout = cin if self.depthwise else self.active_out
        w = self.kernel_weight(self.active_kernel)
        w = w[:cout] if self.depthwise else w[:cout, :cin]
        groups = cin if self.depthwise else 1
        op, aug = self.active_op, self.augmenting
        if aug and self.aug_op == "mult":
            op = "mult"
        ti, to = self.core[:2] if self.core is not None else (cin, cout)
        ti = 1 if self.depthwise else ti
        as_core = cout == to and (self.depthwise or cin == ti)  # hybrid on a layer no wider than the target
        if not aug or op == "mult" or self.aug_op in ("mf", "none") or as_core:
            y = self._conv(op, x, w, groups)
        else:  # hybrid: the core block with its MF operator, every other block multiplicative, one conv each
            # an operator that is a conv on some weight (shift: powers of two) goes into the multiplicative conv; one
            # that is no conv (adder) leaves its block zero there, is computed apart and added to the first channels
            o = get_operator(op)
            folds = o.as_conv_weight is not None
            block = o.as_conv_weight(self.mf_weight(w[:to, :ti], op), **self.op_kw[op]) if folds \
                else torch.zeros_like(w[:to, :ti])
            y = self._conv("mult", x, torch.cat([torch.cat([block, w[:to, ti:]], 1), w[to:]], 0), groups)
            if not folds:
                a = self._conv(op, _LeadingChannels.apply(x, to if self.depthwise else ti), w[:to, :ti],
                               to if self.depthwise else 1)
                y = y + F.pad(a, (0, 0, 0, 0, 0, cout - to))  # pad, not cat: its backward is a view, not copies
        return y if self.bias is None or not self.bias_active else y + self.bias[:cout].view(1, -1, 1, 1)


class ElasticBatchNorm2d(nn.BatchNorm2d):
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


class ElasticConvBNAct(nn.Module):
    """conv -> BatchNorm -> activation, elastic. The BatchNorm runs where the plain unit of the active operator has
    one (always, or for operators that need it, e.g. adder); the conv bias where it has none."""

    def __init__(self, in_ch: int, out_ch: int, kernel_sizes=(1,), stride: int = 1, depthwise: bool = False,
                 act: str | None = "relu6", bn: bool = True, bias: bool = False, **conv_kw):
        super().__init__()
        ops = conv_kw.get("ops", ("mult",))
        self.always_bn = bn
        any_bn = bn or any(get_operator(o).needs_bn for o in ops)
        any_bias = bias and not all(bn or get_operator(o).needs_bn for o in ops)
        self.conv = ElasticConv2d(in_ch, out_ch, kernel_sizes, stride, depthwise, any_bias, **conv_kw)
        if any_bn:
            self.bn = ElasticBatchNorm2d(out_ch)
        self.act = make_act(act)
        self.set_active(in_ch, out_ch, self.conv.kernel_sizes[0], self.conv.ops[0])

    def set_active(self, in_ch: int, out_ch: int, kernel: int, op: str) -> None:
        if op not in self.conv.ops:
            raise ValueError(f"operator {op!r} is not a candidate of this supernet ({', '.join(self.conv.ops)})")
        self.conv.set_active(in_ch, out_ch, kernel, op)
        self.bn_active = self.always_bn or get_operator(op).needs_bn
        self.conv.bias_active = not self.bn_active  # the plain unit of a BN operator has no conv bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.act(self.bn(x) if self.bn_active else x)


class ElasticLinear(nn.Module):
    """Classifier whose input features follow the active width (its operator is fixed)."""

    def __init__(self, op: str, in_features: int, out_features: int, options: dict | None = None):
        super().__init__()
        lin = make_linear(op, in_features, out_features, options=options)
        self.weight, self.bias, self.op = lin.weight, lin.bias, op
        o = get_operator(op)
        self.op_kw = {k: v for k, v in o.layer_options(options).items() if k in o.supernet_options}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight[:, : x.shape[1]]
        y = conv2d(self.op, x[:, :, None, None], w[:, :, None, None], None, **self.op_kw).flatten(1)
        return y if self.bias is None else y + self.bias
