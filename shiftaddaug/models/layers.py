"""Building blocks shared by the tiny models: conv-BN-act, squeeze-excite, inverted residual, op plans."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..ops import OPERATORS, get_operator, make_conv


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor`` without going more than 10 % below it (MobileNet rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def make_act(name: str | None) -> nn.Module:
    acts = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, None: nn.Identity}
    if name not in acts:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(k for k in acts if k)}")
    return acts[name](inplace=True) if name else nn.Identity()


class OpPlan:
    """Hands out the operator of each multiplication-free-capable layer, in construction order, and the layer
    options (``weight_bits``, ``mode``, ``eta``) every layer is built with.

    ``op`` is one operator name for every layer, or a list with one name per layer (the NAS picks them per layer).
    """

    def __init__(self, op: str | Sequence[str], options: dict | None = None):
        names = [op] if isinstance(op, str) else list(op)
        for name in names:
            get_operator(name)  # validates
        self.ops, self.per_layer, self.options, self.count = names, not isinstance(op, str), dict(options or {}), 0

    def next(self) -> str:
        self.count += 1
        if not self.per_layer:
            return self.ops[0]
        return self.ops[self.count - 1] if self.count <= len(self.ops) else "mult"

    def finish(self) -> None:
        if self.per_layer and self.count != len(self.ops):
            raise ValueError(f"per-layer op list has {len(self.ops)} entries but the model has {self.count} "
                             f"convertible layers; pass exactly {self.count} names from {tuple(OPERATORS)}")


class ConvBNAct(nn.Sequential):
    """conv -> BatchNorm -> activation. Adder layers always get BatchNorm (AdderNet does not train without it)."""

    def __init__(self, op: str, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: str | None = "relu6", bn: bool = True, bias: bool = False, options: dict | None = None):
        bn = bn or get_operator(op).needs_bn
        super().__init__()
        self.conv = make_conv(op, in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups,
                              bias=bias and not bn, options=options)
        if bn:
            self.bn = nn.BatchNorm2d(out_ch)
        self.act = make_act(act)


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-and-excitation with a hard-sigmoid gate."""

    def __init__(self, plan: OpPlan, channels: int, mid: int):
        super().__init__()
        self.reduce = ConvBNAct(plan.next(), channels, mid, act="relu", bn=False, bias=True, options=plan.options)
        self.expand = ConvBNAct(plan.next(), mid, channels, act=None, bn=False, bias=True, options=plan.options)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.reduce(x.mean((2, 3), keepdim=True))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> kxk depthwise -> (SE) -> 1x1 project, shortcut when shapes allow.

    ``mid=None`` gives the depthwise-separable first block (no expansion layer).
    """

    def __init__(self, plan: OpPlan, in_ch: int, out_ch: int, mid: int | None, kernel_size: int = 3,
                 stride: int = 1, act: str = "relu6", se: bool = False, shortcut: bool = False):
        super().__init__()
        dw_ch = mid or in_ch
        self.expand = ConvBNAct(plan.next(), in_ch, mid, act=act, options=plan.options) if mid else None
        self.depthwise = ConvBNAct(plan.next(), dw_ch, dw_ch, kernel_size, stride, groups=dw_ch, act=act,
                                   options=plan.options)
        self.se = SqueezeExcite(plan, dw_ch, max(make_divisible(dw_ch / 4), 16)) if se else None
        self.project = ConvBNAct(plan.next(), dw_ch, out_ch, act=None, options=plan.options)
        self.shortcut = shortcut and stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.shortcut else y
