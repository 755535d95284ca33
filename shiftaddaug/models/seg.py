"""Segmentation heads on a ``TinyNet`` backbone: logits per pixel, at the input's resolution.

An architecture with a ``"seg"`` entry, ``{"head": "lraspp", "width": 1.0, "op": "shift"}``, is a segmentation
network: the backbone's stages feed the head instead of pooling and a classifier. The head's convolutions run
``seg.op``; its two 1x1 class convolutions run the architecture's ``classifier.op`` (multiplicative unless asked
otherwise, like a classifier). ``seg.width`` multiplies the head's base width, ``HEAD_WIDTH``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

HEAD_WIDTH = 64  # LR-ASPP's 128 sits on MobileNetV3-Large's 960 channels; tiny backbones end at 100-320


@dataclass(frozen=True)
class SegCfg:
    """A segmentation head, resolved: which stage feeds its low-level branch, channels, operators."""
    kind: str
    low_stage: int  # the last stage at a quarter of the final stage's resolution or finer
    low_ch: int
    high_ch: int
    width: int
    op: str
    classifier_op: str


def seg_cfg(arch: dict, stages: tuple, stage_strides: list) -> SegCfg:
    """The head of ``arch`` on its resolved ``stages``. The low-level branch taps the last stage whose reduction
    is at most half the final one (LR-ASPP's 1/8 next to 1/16 or 1/32), else the first stage."""
    reduction, reductions = 1, []
    for s in stage_strides:
        reduction *= s
        reductions.append(reduction)
    finer = [i for i, r in enumerate(reductions) if 2 * r <= reductions[-1]]
    low = finer[-1] if finer else 0
    seg = arch["seg"]
    return SegCfg(seg["head"], low, stages[low][-1].out_ch, stages[-1][-1].out_ch,
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


SEG_HEADS = {"lraspp": LRASPP}
