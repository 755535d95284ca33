"""The tiny MobileNet-family models of NetAug/ShiftAddAug, from one table each.

A model is: stem conv -> depthwise-separable first block -> stages of inverted residual blocks (the last "stage"
is the head block) -> optional 1x1 ``final_expand`` conv -> global pool -> optional 1x1 ``feature_mix`` conv
(MobileNetV3) -> linear classifier. Every block's resolved configuration is kept in ``model.block_cfgs`` so that
the augmented supernet (``shiftaddaug.augment``) can be built from the same table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from ..ops import get_operator, make_linear
from .layers import ConvBNAct, InvertedResidual, OpPlan, make_act, make_divisible


@dataclass(frozen=True)
class Stage:
    out: int
    expand: Sequence[float]  # per block: expand ratio, or absolute middle width when ``absolute_mid``
    kernel: Sequence[int]
    stride: int
    act: str = "relu6"
    se: bool = False


@dataclass(frozen=True)
class NetSpec:
    stem: int
    first: int
    stages: Sequence[Stage]
    final_expand: int | None = None
    feature_mix: int | None = None
    stem_act: str = "relu6"
    first_act: str = "relu6"
    first_shortcut: bool = False
    absolute_mid: bool = False  # MobileNetV3 lists middle widths; others list expand ratios
    head_act: str = "relu6"
    res: int = 224
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BlockCfg:
    in_ch: int
    out_ch: int
    mid: int | None
    expand: float
    kernel: int
    stride: int
    act: str
    se: bool
    shortcut: bool


def _uniform(out, e, n, k, s, **kw) -> Stage:
    return Stage(out, [e] * n, [k] * n, s, **kw)


_MBV2_BODY = [_uniform(8, 6, 2, 3, 2), _uniform(16, 6, 3, 3, 2), _uniform(24, 6, 4, 3, 2),
              _uniform(32, 6, 3, 3, 1), _uniform(56, 6, 3, 3, 2), _uniform(112, 6, 1, 3, 1)]

SPECS: dict[str, NetSpec] = {
    "mobilenetv2_tiny": NetSpec(16, 8, _MBV2_BODY, final_expand=448, res=144),
    "mobilenetv2_w035": NetSpec(16, 8, _MBV2_BODY, final_expand=1280, res=160),
    "proxylessnas_w035": NetSpec(16, 8, [
        Stage(16, [3, 3], [5, 3], 2), Stage(16, [3, 3, 3, 3], [7, 3, 5, 5], 2),
        Stage(32, [6, 3, 3, 3], [7, 5, 5, 5], 2), Stage(32, [6, 3, 3, 3], [5, 5, 5, 5], 1),
        Stage(64, [6, 6, 3, 3], [7, 7, 7, 7], 2), Stage(112, [6], [7], 1)], final_expand=1280, res=160),
    "mcunet": NetSpec(16, 8, [
        Stage(16, [3, 5, 5, 4], [7, 3, 7, 5], 2), Stage(24, [5, 5, 5], [5, 5, 5], 2),
        Stage(40, [5, 6, 4], [3, 7, 5], 2), Stage(48, [5, 5, 5], [5, 7, 3], 1),
        Stage(96, [6, 5, 4], [3, 7, 3], 2), Stage(160, [5], [7], 1)], res=176),
    "mobilenetv3_w035": NetSpec(8, 8, [
        Stage(8, [64, 72], [3, 3], 2, "relu"), Stage(16, [72, 120, 120], [5] * 3, 2, "relu", se=True),
        Stage(32, [240, 200, 184, 184], [3] * 4, 2, "hswish"), Stage(40, [480, 672], [3, 3], 1, "hswish", se=True),
        Stage(56, [672, 960, 960], [5] * 3, 2, "hswish", se=True)],
        final_expand=336, feature_mix=1280, stem_act="hswish", first_act="relu", first_shortcut=True,
        absolute_mid=True, head_act="hswish", res=160),
}


def block_cfgs(spec: NetSpec, small_input: bool) -> list[BlockCfg]:
    """Resolve a spec into per-block configurations (channels, strides after small-input adaptation)."""
    cfgs = [BlockCfg(spec.stem, spec.first, None, 1.0, 3, 1, spec.first_act, False,
                     spec.first_shortcut and spec.stem == spec.first)]
    in_ch = spec.first
    for si, st in enumerate(spec.stages):
        for bi, (e, k) in enumerate(zip(st.expand, st.kernel)):
            stride = st.stride if bi == 0 and not (small_input and si == 0) else 1
            mid = make_divisible(e * 0.35) if spec.absolute_mid else make_divisible(round(e * in_ch))
            cfgs.append(BlockCfg(in_ch, st.out, mid, mid / in_ch, k, stride, st.act, st.se,
                                 shortcut=bi > 0 and stride == 1 and in_ch == st.out))
            in_ch = st.out
    return cfgs


class TinyMobileNet(nn.Module):
    def __init__(self, spec: NetSpec, num_classes: int = 1000, op="mult", in_chans: int = 3,
                 input_size: int = 224, mf_stem_head: bool = False, dropout: float = 0.0,
                 op_options: dict | None = None, widths: tuple[int, list[BlockCfg], int | None] | None = None):
        """``op_options``: layer options of the operators (``weight_bits``, ``mode``, ``eta``); ``widths=(stem,
        block_cfgs, final_expand)`` overrides the spec's widths (the supernet's max sizes)."""
        super().__init__()
        small = input_size <= 64  # stem and first stage keep resolution so the last map stays >= 2x2
        plan = OpPlan(op, op_options)
        edge = plan.next if mf_stem_head else (lambda: "mult")
        stem, self.block_cfgs, final_expand = widths or (spec.stem, block_cfgs(spec, small), spec.final_expand)
        self.stem = ConvBNAct(edge(), in_chans, stem, 3, 1 if small else 2, act=spec.stem_act, options=plan.options)
        self.blocks = nn.Sequential(*[
            InvertedResidual(plan, c.in_ch, c.out_ch, c.mid, c.kernel, c.stride, c.act, c.se, c.shortcut)
            for c in self.block_cfgs])
        ch = self.block_cfgs[-1].out_ch
        self.final_expand = None
        if final_expand:
            self.final_expand = ConvBNAct(plan.next(), ch, final_expand, act=spec.head_act, options=plan.options)
            ch = final_expand
        self.feature_mix = None
        if spec.feature_mix:  # MobileNetV3: 1x1 conv with bias after pooling, no BN
            self.feature_mix = ConvBNAct(plan.next(), ch, spec.feature_mix, act=spec.head_act, bn=False, bias=True,
                                         options=plan.options)
            ch = spec.feature_mix
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        head_op = edge()
        self.classifier = make_linear(head_op, ch, num_classes, options=plan.options)
        self.classifier_bn = nn.BatchNorm1d(num_classes) if get_operator(head_op).needs_bn else None
        plan.finish()
        self.spec, self.num_classes, self.input_size = spec, num_classes, input_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        if self.final_expand is not None:
            x = self.final_expand(x)
        x = x.mean((2, 3), keepdim=True)
        if self.feature_mix is not None:
            x = self.feature_mix(x)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.classifier(self.dropout(self.forward_features(x)))
        return y if self.classifier_bn is None else self.classifier_bn(y)


def build(name: str, **kw) -> TinyMobileNet:
    return TinyMobileNet(SPECS[name], **kw)


__all__ = ["SPECS", "NetSpec", "Stage", "BlockCfg", "TinyMobileNet", "block_cfgs", "build", "make_act"]
