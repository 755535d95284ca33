"""The operator registry: everything the library knows about an operator, in one entry per operator.

An entry names its conv and linear layer classes, its default layer options, how to compute it functionally on a
given weight (what the supernet's sliced layers call), the weight a plain convolution would need to compute it
(``None``: it is not a convolution), what the cost model counts per MAC, and the few facts that models and the
supernet act on. Adding an operator is one ``register(Operator(...))`` call. The operators: docs/method.md, section 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from .adder import DEFAULT_ETA, AdderConv2d, AdderLinear, adder2d
from .depthwise import mult_conv2d
from .shift import DEFAULT_WEIGHT_BITS, ShiftConv2d, ShiftLinear, round_power_of_two


@dataclass(frozen=True)
class Operator:
    name: str
    conv: type  # drop-in nn.Conv2d
    linear: type  # drop-in nn.Linear
    functional: Callable  # (x, weight, bias, stride, padding, dilation, groups, **options) -> y
    as_conv_weight: Callable | None  # (weight, **options) -> the weight of an equivalent plain conv; None: none exists
    mac_ops: dict  # cost model: primitive operations of one MAC besides its accumulating add
    options: dict = field(default_factory=dict)  # default layer options, passed to the layer classes
    multiplication_free: bool = True
    needs_bn: bool = False  # the layer does not train without BatchNorm after it
    unit_scale: bool = False  # its weights live at unit scale, not at the multiplicative (kaiming) scale
    default_remap: str | None = None  # the supernet's remap="auto" for layers of this operator (from the ablation)
    default_aug_rate: float = 1.0  # ShiftAddAug's share of steps with an augmented pass (aug_rate unset): its cost
    laplace_prior: bool = False  # ShiftAddNAS's KL term pulls its remapped weights towards a Laplace distribution
    supernet_options: tuple = ()  # options the supernet's functional form supports (others need the layer class)
    export_weight: Callable | None = None  # (weight, **options) -> what an exported layer stores; None: the weight

    def layer_options(self, options: dict | None = None) -> dict:
        """This operator's defaults updated with the entries of ``options`` that it knows (others are ignored)."""
        return {k: (options or {}).get(k, v) for k, v in self.options.items()}


OPERATORS: dict[str, Operator] = {}


def register(op: Operator) -> Operator:
    OPERATORS[op.name] = op
    return op


def get_operator(name: str) -> Operator:
    if name not in OPERATORS:
        raise ValueError(f"unknown operator {name!r}; choose one of {', '.join(OPERATORS)}")
    return OPERATORS[name]


def op_of(module: nn.Module) -> str | None:
    """Operator name of a conv/linear layer (``None`` for anything else); the most derived class wins, since the
    multiplication-free layers subclass ``nn.Conv2d`` / ``nn.Linear``."""
    best, depth = None, -1
    for op in OPERATORS.values():
        for cls in (op.conv, op.linear):
            if isinstance(module, cls) and len(cls.__mro__) > depth:
                best, depth = op.name, len(cls.__mro__)
    return best


def _shift(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, weight_bits, **_):
    return mult_conv2d(x, round_power_of_two(w, weight_bits), bias, stride, padding, dilation, groups)


def _mult(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, **_):
    return mult_conv2d(x, w, bias, stride, padding, dilation, groups)


def _add(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *, eta, **_):
    return adder2d(x, w, bias, stride, padding, dilation, groups, eta)


register(Operator("mult", nn.Conv2d, nn.Linear, _mult, lambda w, **_: w, {"mult": 1}, multiplication_free=False))
# default remaps: the best rows of the ShiftAddAug ablation per operator; default aug_rate: a ShiftAddAug step at
# most 2x a direct one (the adder's direct step is the cheaper, so it gets fewer augmented passes; BENCHMARKS §10)
register(Operator("shift", ShiftConv2d, ShiftLinear, _shift,
                  lambda w, *, weight_bits, **_: round_power_of_two(w, weight_bits), {"shift": 1},
                  options={"weight_bits": DEFAULT_WEIGHT_BITS, "mode": "q"}, default_remap="bins",
                  default_aug_rate=0.5, supernet_options=("weight_bits",),
                  export_weight=lambda w, *, weight_bits, **_: round_power_of_two(w, weight_bits)))
register(Operator("add", AdderConv2d, AdderLinear, _add, None, {"add": 1}, options={"eta": DEFAULT_ETA},
                  needs_bn=True, unit_scale=True, default_remap="none", default_aug_rate=0.3, laplace_prior=True,
                  supernet_options=("eta",)))
