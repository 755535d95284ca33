"""Segmentation heads on a ``TinyNet`` backbone: logits per pixel, at the input's resolution.

An architecture with a ``"seg"`` entry, ``{"head": "lraspp", "width": 1.0, "op": "shift"}``, is a segmentation
network: the backbone's stages feed the head instead of pooling and a classifier. Heads: ``lraspp`` (Lite R-ASPP,
MobileNetV3) and ``aspp`` (DeepLabV3 with depthwise-separable atrous branches). The head's convolutions run
``seg.op``; its 1x1 class convolutions run the architecture's ``classifier.op`` (multiplicative unless asked
otherwise, like a classifier). ``seg.width`` multiplies the head's base width, ``HEAD_WIDTH``; ``seg.output_stride``
(optional) dilates the backbone's last stages instead of striding them (``spec.dilate``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

HEAD_WIDTH = 64  # LR-ASPP's 128 sits on MobileNetV3-Large's 960 channels; tiny backbones end at 100-320
ASPP_RATES = (1, 2, 3)  # DeepLab's 6/12/18 sit on 33x33 maps; a tiny network's last maps are 2-12 px wide


@dataclass(frozen=True)
class SegCfg:
    """A segmentation head, resolved: which stage feeds its low-level branch, channels, operators."""
    kind: str
    low_stage: int | None  # LR-ASPP's low-level branch: the last stage at half the final resolution or finer
    low_ch: int
    high_ch: int
    width: int
    op: str
    classifier_op: str


def seg_cfg(arch: dict, stages: tuple, stage_strides: list) -> SegCfg:
    """The head of ``arch`` on its resolved ``stages``. LR-ASPP's low-level branch taps the last stage whose
    reduction is at most half the final one (its 1/8 next to 1/16 or 1/32), else the first stage; ASPP has none."""
    seg = arch["seg"]
    low = None
    if seg["head"] == "lraspp":
        reduction, reductions = 1, []
        for s in stage_strides:
            reduction *= s
            reductions.append(reduction)
        finer = [i for i, r in enumerate(reductions) if 2 * r <= reductions[-1]]
        low = finer[-1] if finer else 0
    return SegCfg(seg["head"], low, 0 if low is None else stages[low][-1].out_ch, stages[-1][-1].out_ch,
                  max(1, round(HEAD_WIDTH * seg["width"])), seg["op"], arch["classifier"]["op"])


class Resize(nn.Module):
    """Bilinear resize to a given size (a module, so the cost model sees the upsampling)."""

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class LRASPP(nn.Module):
    """Lite R-ASPP (MobileNetV3): the last stage through a 1x1 conv gated by its global context, upsampled to the
    low-level stage and summed with a 1x1 class conv of it. The gate is a hard sigmoid: no exponential on an MCU."""

    def __init__(self, c: SegCfg, num_classes: int, unit):
        super().__init__()
        self.low_stage = c.low_stage
        self.cbr = unit(c.op, c.high_ch, c.width, act="relu")
        self.scale = unit(c.op, c.high_ch, c.width, act=None, bn=False, bias=True)
        self.gate = nn.Hardsigmoid()
        self.up = Resize()
        self.low_classifier = unit(c.classifier_op, c.low_ch, num_classes, act=None, bn=False, bias=True)
        self.high_classifier = unit(c.classifier_op, c.width, num_classes, act=None, bn=False, bias=True)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        # this order keeps the fewest tensors alive at once (the cost model's peak memory follows it)
        low, high = feats[self.low_stage], feats[-1]
        gate = self.gate(self.scale(high.mean((2, 3), keepdim=True)))
        x = self.high_classifier(self.up(self.cbr(high) * gate, low.shape[-2:]))
        return self.low_classifier(low) + x


class ASPP(nn.Module):
    """DeepLabV3's head on the last stage, its atrous branches depthwise-separable (DeepLabV3+): a 1x1 branch, a 3x3
    depthwise + 1x1 branch per rate of ``ASPP_RATES``, and image pooling. Each branch has its own 1x1 projection
    (conv-BN) and the projections are summed: DeepLab's 1x1 conv on the concatenation, without holding the
    concatenation (an MCU keeps one accumulator; the elastic supernet slices each branch). Then ReLU and the class
    conv; logits at the last stage's resolution."""

    def __init__(self, c: SegCfg, num_classes: int, unit):
        super().__init__()
        h, w = c.high_ch, c.width
        self.branches = nn.ModuleList([unit(c.op, h, w, act="relu")] + [nn.Sequential(
            unit(c.op, h, h, 3, groups=h, act="relu", dilation=r), unit(c.op, h, w, act="relu")) for r in ASPP_RATES])
        self.pool = unit(c.op, h, w, act="relu", bn=False, bias=True)
        self.project = nn.ModuleList(unit(c.op, w, w, act=None) for _ in range(len(ASPP_RATES) + 2))
        self.act = nn.ReLU(inplace=True)
        self.classifier = unit(c.classifier_op, w, num_classes, act=None, bn=False, bias=True)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        y = self.project[-1](self.pool(x.mean((2, 3), keepdim=True)))  # one value per channel, broadcast in the sum
        for branch, project in zip(self.branches, self.project):
            y = y + project(branch(x))
        return self.classifier(self.act(y))


SEG_HEADS = {"lraspp": LRASPP, "aspp": ASPP}
