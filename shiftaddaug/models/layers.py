"""Building blocks of the tiny models: conv-BN-act, squeeze-excite, inverted residual, basic block, stage.

A block takes its resolved ``BlockCfg`` and a ``unit`` factory that makes each conv-BN-act: the plain model passes
``conv_unit`` (layers of the block's operator), the elastic supernet its elastic layers, so both share one forward.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn

from ..ops import get_operator, make_conv
from .spec import BlockCfg


def make_act(name: str | None) -> nn.Module:
    acts = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, None: nn.Identity}
    if name not in acts:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(k for k in acts if k)}")
    return acts[name](inplace=True) if name else nn.Identity()


class ConvBNAct(nn.Sequential):
    """conv -> BatchNorm -> activation. Adder layers always get BatchNorm (AdderNet does not train without it)."""

    def __init__(self, op: str, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: str | None = "relu6", bn: bool = True, bias: bool = False, options: dict | None = None,
                 dilation: int = 1):
        bn = bn or get_operator(op).needs_bn
        super().__init__()
        self.conv = make_conv(op, in_ch, out_ch, kernel_size, stride, dilation * (kernel_size // 2), dilation,
                              groups=groups, bias=bias and not bn, options=options)
        if bn:
            self.bn = nn.BatchNorm2d(out_ch)
        self.act = make_act(act)


def conv_unit(options: dict | None = None):
    """The plain model's unit factory: ``unit(op, in, out, kernel, stride, groups, act, bn, bias, dilation=1)``."""
    return functools.partial(ConvBNAct, options=options)


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-and-excitation with a hard-sigmoid gate."""

    def __init__(self, unit, op: str, channels: int, mid: int):
        super().__init__()
        self.reduce = unit(op, channels, mid, act="relu", bn=False, bias=True)
        self.expand = unit(op, mid, channels, act=None, bn=False, bias=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.reduce(x.mean((2, 3), keepdim=True))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> kxk depthwise -> (SE) -> 1x1 project, identity shortcut when it has one.
    ``mid=None`` gives the depthwise-separable first block (no expansion layer)."""

    def __init__(self, c: BlockCfg, unit):
        super().__init__()
        dw = c.mid or c.in_ch
        self.expand = unit(c.op, c.in_ch, c.mid, act=c.act) if c.mid else None
        self.depthwise = unit(c.op, dw, dw, c.kernel, c.stride, groups=dw, act=c.act, dilation=c.dilation)
        self.se = SqueezeExcite(unit, c.op, dw, c.se_mid) if c.se_mid else None
        self.project = unit(c.op, dw, c.out_ch, act=None)
        self.shortcut = c.shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.shortcut else y


class BasicBlock(nn.Module):
    """ResNet basic block: kxk conv -> kxk conv, plus the input (projected by a 1x1 conv when shapes change, option
    B as in AdderNet's ResNet-20)."""

    def __init__(self, c: BlockCfg, unit):
        super().__init__()
        self.conv1 = unit(c.op, c.in_ch, c.mid, c.kernel, c.stride, act="relu", dilation=c.dilation)
        self.conv2 = unit(c.op, c.mid, c.out_ch, c.kernel, act=None, dilation=c.dilation)
        self.downsample = None if c.shortcut else unit(c.op, c.in_ch, c.out_ch, 1, c.stride, act=None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv2(self.conv1(x)) + identity)


BLOCKS = {"ir": InvertedResidual, "basic": BasicBlock}


class Stage(nn.Module):
    """A sequence of blocks of which the first ``depth`` run (all, in a plain model)."""

    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.depth = len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks[: self.depth]:
            x = block(x)
        return x
