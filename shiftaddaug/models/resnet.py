"""CIFAR ResNet-20 (He et al. 2016), the model DeepShift and AdderNet report on, for direct comparison."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import get_operator, make_linear
from .layers import ConvBNAct, OpPlan


class BasicBlock(nn.Module):
    def __init__(self, plan: OpPlan, in_ch: int, mid_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = ConvBNAct(plan.next(), in_ch, mid_ch, 3, stride, act="relu", options=plan.options)
        self.conv2 = ConvBNAct(plan.next(), mid_ch, out_ch, 3, act=None, options=plan.options)
        # projection shortcut (option B, as AdderNet's ResNet-20) when the shape changes
        self.downsample = ConvBNAct(plan.next(), in_ch, out_ch, 1, stride, act=None, options=plan.options) \
            if stride != 1 or in_ch != out_ch else None
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv2(self.conv1(x)) + identity)


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10, op="mult", in_chans: int = 3, input_size: int = 32,
                 mf_stem_head: bool = False, width: int = 16, dropout: float = 0.0, op_options: dict | None = None,
                 widths: tuple[int, list[tuple[int, int]]] | None = None):
        """``op_options``: layer options of the operators; ``widths=(stem, [(mid, out) per block])`` overrides the
        widths (the supernet's max sizes)."""
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        plan = OpPlan(op, op_options)
        edge = plan.next if mf_stem_head else (lambda: "mult")
        stem, sizes = widths or (width, [(w, w) for w in (width, 2 * width, 4 * width) for _ in range(n)])
        self.stem = ConvBNAct(edge(), in_chans, stem, 3, act="relu", options=plan.options)
        blocks, ch = [], stem
        for b, (mid, out) in enumerate(sizes):
            blocks.append(BasicBlock(plan, ch, mid, out, 2 if (b >= n and b % n == 0) else 1))
            ch = out
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        head_op = edge()
        self.classifier = make_linear(head_op, ch, num_classes, options=plan.options)
        self.classifier_bn = nn.BatchNorm1d(num_classes) if get_operator(head_op).needs_bn else None
        plan.finish()
        self.num_classes, self.input_size = num_classes, input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.classifier(self.dropout(self.blocks(self.stem(x)).mean((2, 3))))
        return y if self.classifier_bn is None else self.classifier_bn(y)
