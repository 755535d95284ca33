"""``TinyNet``: stem -> stages of blocks -> optional 1x1 ``final_expand`` -> global pool -> optional 1x1
``feature_mix`` (MobileNetV3) -> dropout -> classifier, built from a resolved ``NetCfg``; or, for segmentation,
stem -> stages -> a head on the stages' outputs (``models/seg.py``) -> logits resized to the input.

``stage_features`` gives every stage's output (a backbone for dense heads), ``feature_info`` their channels and
reductions. Every zoo model and every architecture of their spaces is a ``TinyNet``; the elastic supernet is one
too, built with elastic layers (``shiftaddaug.augment``), so module names, and therefore state dicts, line up.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import get_operator, make_linear
from .layers import BLOCKS, Stage, conv_unit
from .seg import SEG_HEADS, Resize
from .spec import BlockCfg, NetCfg


class PlainLayers:
    """The layer factory of a plain model: layers of each unit's own operator."""

    def __init__(self, options: dict | None = None):
        self.options = options

    def unit(self, where):
        return conv_unit(self.options)

    def block(self, c: BlockCfg, where):
        return BLOCKS[c.kind](c, self.unit(where))

    def stage(self, blocks):
        return Stage(blocks)

    def linear(self, op, in_features, out_features):
        return make_linear(op, in_features, out_features, options=self.options)

    def seg_head(self, c, num_classes):
        return SEG_HEADS[c.kind](c, num_classes, self.unit("seg"))


class TinyNet(nn.Module):
    def __init__(self, cfg: NetCfg, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.0,
                 op_options: dict | None = None, layers=None):
        """``layers`` makes the layers (``PlainLayers``: plain layers of each operator; the supernet: elastic ones)
        for each place: ``"stem"``, ``(stage, block)``, ``"head"``."""
        super().__init__()
        self.net_cfg = cfg  # the resolved architecture that runs (the supernet's active one)
        layers = layers or PlainLayers(op_options)
        self.stem = layers.unit("stem")(cfg.stem_op, in_chans, cfg.stem, 3, cfg.stem_stride, act=cfg.stem_act)
        self.stages = nn.ModuleList(layers.stage([layers.block(b, (si, bi)) for bi, b in enumerate(blocks)])
                                    for si, blocks in enumerate(cfg.stages))
        self.num_classes = num_classes
        self.seg_head = self.final_expand = self.feature_mix = None
        if cfg.seg is not None:  # logits per pixel: the head takes the stages' outputs
            self.seg_head = layers.seg_head(cfg.seg, num_classes)
            self.resize = Resize()
            return
        ch = cfg.stages[-1][-1].out_ch
        head = layers.unit("head")
        if cfg.final_expand:
            self.final_expand = head(cfg.head_op, ch, cfg.final_expand, act=cfg.head_act)
            ch = cfg.final_expand
        if cfg.feature_mix:
            self.feature_mix = head(cfg.head_op, ch, cfg.feature_mix, act=cfg.head_act, bn=False, bias=True)
            ch = cfg.feature_mix
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = layers.linear(cfg.classifier_op, ch, num_classes)
        self.classifier_bn = nn.BatchNorm1d(num_classes) if get_operator(cfg.classifier_op).needs_bn else None

    @property
    def feature_info(self) -> list[dict]:
        return self.net_cfg.feature_info()

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output, for dense-prediction heads (timm's ``features_only``); see ``feature_info``."""
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage_features(x)[-1]
        if self.final_expand is not None:
            x = self.final_expand(x)
        x = x.mean((2, 3), keepdim=True)
        if self.feature_mix is not None:
            x = self.feature_mix(x)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.seg_head is not None:
            return self.resize(self.seg_head(self.stage_features(x)), x.shape[-2:])
        y = self.classifier(self.dropout(self.forward_features(x)))
        return y if self.classifier_bn is None else self.classifier_bn(y)
