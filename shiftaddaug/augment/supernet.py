"""The augmented supernet: a tiny multiplication-free target inside a wider model that shares its weights.

``build_augmented`` builds, from a zoo model, the same network at its maximum augmented widths with sliceable
layers. ``set_active("min")`` selects the target (each layer's leading slice, its own operator, remapped weights);
``set_active("random")`` samples one augmented sub-model, one factor per width point (NetAug; the points of each
model family are listed by its ``_*Widths`` class). ``export()`` returns the plain
target model, built by ``create_model`` and loaded with the baked weights: nothing of the augmentation remains.
The method and its formulas: docs/method.md, sections 2 and 5.
"""
from __future__ import annotations

import math
import random
from dataclasses import replace

import torch
import torch.nn as nn

from ..models import create_model
from ..models.layers import ConvBNAct
from ..models.mobilenet import TinyMobileNet
from ..models.resnet import CifarResNet
from ..ops import op_of
from .dynamic import AUG_OPS, DynamicBatchNorm2d, DynamicConv2d, DynamicLinear

WIDTH_FACTORS = {"mobilenetv2_tiny": (1.0, 1.8, 2.6), "mobilenetv2_w035": (1.0, 1.8, 2.6),
                 "proxylessnas_w035": (1.0, 1.8, 2.6), "mobilenetv3_w035": (1.0, 2.0, 3.0),
                 "mcunet": (1.0, 1.6, 2.2), "resnet20": (1.0, 1.8, 2.6)}  # NetAug's; resnet20: ours, as MBv2
EXPAND_FACTORS = (1.0, 1.6, 2.2, 2.8)


class _MobileNetWidths:
    """Width points of an inverted-residual net: stem, every block output without a shortcut (a shortcut ties a
    block's output to its input), each block's expand ratio (scaled with its input), the final 1x1 conv."""

    def __init__(self, target: TinyMobileNet):
        self.cfgs = target.block_cfgs
        self.stem = target.stem.conv.out_channels
        self.final = target.final_expand.conv.out_channels if target.final_expand is not None else None

    def max_widths(self, wmax: float, emax: float):
        cin = stem = round(self.stem * wmax)
        cfgs = []
        for c in self.cfgs:
            mid = None if c.mid is None else math.ceil(c.mid * emax * cin / c.in_ch)
            out = cin if c.shortcut else round(c.out_ch * wmax)
            cfgs.append(replace(c, in_ch=cin, out_ch=out, mid=mid))
            cin = out
        return stem, cfgs, round(self.final * wmax) if self.final else None

    def activate(self, net: TinyMobileNet, width, expand) -> None:
        c = net.stem.conv.active_out = round(self.stem * width())
        for block, t in zip(net.blocks, self.cfgs):
            mid = c
            if block.expand is not None:
                mid = round(t.mid * expand() * c / t.in_ch)
                mid = block.expand.conv.active_out = min(mid, block.expand.conv.weight.shape[0])
            if block.se is not None:
                block.se.expand.conv.active_out = mid
            c = block.project.conv.active_out = c if block.shortcut else round(t.out_ch * width())
        if net.final_expand is not None:
            net.final_expand.conv.active_out = round(self.final * width())


class _ResNetWidths:
    """Width points of a CIFAR ResNet: one per stage (identity shortcuts tie every block output of a stage to the
    stage width) and each block's inner width. Basic blocks have no expand ratio: ``expand_factors`` is unused."""

    def __init__(self, target: CifarResNet):
        self.stem = target.stem.conv.out_channels
        self.sizes = [(b.conv1.conv.out_channels, b.conv2.conv.out_channels) for b in target.blocks]

    def max_widths(self, wmax: float, emax: float):
        return round(self.stem * wmax), [(round(m * wmax), round(o * wmax)) for m, o in self.sizes]

    def activate(self, net: CifarResNet, width, expand) -> None:
        c = net.stem.conv.active_out = round(self.stem * width())
        for block, (mid, out) in zip(net.blocks, self.sizes):
            if block.downsample is not None:
                c = block.downsample.conv.active_out = round(out * width())
            block.conv1.conv.active_out = round(mid * width())
            block.conv2.conv.active_out = c


_FAMILIES = {TinyMobileNet: _MobileNetWidths, CifarResNet: _ResNetWidths}


class AugmentedNet(nn.Module):
    def __init__(self, name: str, num_classes: int, op, aug_op: str, remap: str, width_factors, expand_factors,
                 seed: int = 0, **model_kw):
        super().__init__()
        if aug_op not in AUG_OPS:
            raise ValueError(f"unknown aug_op {aug_op!r}; choose one of {', '.join(AUG_OPS)}")
        target = create_model(name, num_classes, op=op, **model_kw)
        family = _FAMILIES.get(type(target))
        if family is None:
            raise ValueError(f"augmentation supports {', '.join(f.__name__ for f in _FAMILIES)} models, not {name!r}")
        self.build_args = dict(name=name, num_classes=num_classes, op=op, **model_kw)
        self.width_factors = tuple(width_factors or WIDTH_FACTORS[name])
        self.expand_factors = tuple(expand_factors or EXPAND_FACTORS)
        if min(self.width_factors) != 1.0 or min(self.expand_factors) != 1.0:
            raise ValueError("the smallest width and expand factor must be 1.0: the target is the smallest sub-model")
        self.widths = family(target)
        widths = self.widths.max_widths(max(self.width_factors), max(self.expand_factors))
        self.net = create_model(name, num_classes, op=op, widths=widths, **model_kw)
        self._make_dynamic(target, aug_op, remap)
        self.rng = random.Random(seed)
        self.set_active("min")

    def _make_dynamic(self, target: nn.Module, aug_op: str, remap: str) -> None:
        for name, m in list(self.net.named_modules()):
            if isinstance(m, ConvBNAct):
                t = target.get_submodule(name).conv
                m.conv = DynamicConv2d(m.conv, t.in_channels, t.out_channels, op_of(t), aug_op, remap)
                if hasattr(m, "bn"):
                    m.bn = DynamicBatchNorm2d(m.bn.num_features)
        self.net.classifier = DynamicLinear(self.net.classifier, target.classifier.in_features)

    def dynamic_convs(self):
        return [m for m in self.modules() if isinstance(m, DynamicConv2d)]

    def set_active(self, mode: str = "min", width: bool = True) -> None:
        """``"min"``: the target. ``"random"``: one augmented sub-model, one factor drawn per width point
        (``width=False``: expand ratios only, as in the second half of training). ``"max"``: the widest model."""
        if mode not in ("min", "random", "max"):
            raise ValueError(f"set_active takes 'min', 'random' or 'max', not {mode!r}")

        def picker(factors, enabled=True):
            if mode == "min" or not enabled:
                return lambda: 1.0
            return (lambda: max(factors)) if mode == "max" else (lambda: self.rng.choice(factors))

        for conv in self.dynamic_convs():
            conv.mode = "target" if mode == "min" else "aug"
        self.widths.activate(self.net, picker(self.width_factors, width), picker(self.expand_factors))

    def get_extra_state(self):
        return {"rng": self.rng.getstate()}  # a resumed run samples the same sub-models as an unbroken one

    def set_extra_state(self, state) -> None:
        self.rng.setstate(state["rng"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def remap_kl(self) -> torch.Tensor:
        """ShiftAddNAS's KL regulariser summed over the target's adder layers (for the ``bins`` remap)."""
        terms = [c.remap.kl_to_laplace(c.target_weight()) for c in self.dynamic_convs() if c.operator.laplace_prior]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    @torch.no_grad()
    def export(self) -> nn.Module:
        """The plain target model (``create_model`` with the baked weights), loadable with ``strict=True``."""
        static = create_model(**self.build_args)
        src = dict(self.net.named_modules())
        state = {}
        for name, m in static.named_modules():
            d, p = src.get(name), (name + "." if name else "")
            if isinstance(d, DynamicConv2d):
                state[p + "weight"] = d.target_weight()
                if d.bias is not None:
                    state[p + "bias"] = d.bias[: m.out_channels]
            elif isinstance(d, DynamicLinear):
                state[p + "weight"] = d.weight[:, : m.in_features]
                if d.bias is not None:
                    state[p + "bias"] = d.bias
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                for k in ("weight", "bias", "running_mean", "running_var"):
                    state[p + k] = getattr(d, k)[:n]
                state[p + "num_batches_tracked"] = d.num_batches_tracked
        static.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
        return static.train(self.training)


def build_augmented(name: str, num_classes: int, op="shift", aug_op: str = "mult", remap: str = "auto",
                    width_factors=None, expand_factors=None, **model_kw) -> AugmentedNet:
    """Supernet of zoo model ``name`` for ShiftAddAug (docs/method.md explains ``aug_op`` and ``remap``;
    ``remap="auto"`` gives each layer its operator's default remap from the operator registry)."""
    return AugmentedNet(name, num_classes, op, aug_op, remap, width_factors, expand_factors, **model_kw)
