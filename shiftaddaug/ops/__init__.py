"""Multiplication-free operators, their registry, and the factories that build a layer of any registered operator."""
from __future__ import annotations

import torch.nn as nn

from .adder import AdderConv2d, AdderLinear, adder2d
from .depthwise import mult_conv2d
from .registry import OPERATORS, Operator, get_operator, op_of, register
from .shift import ShiftConv2d, ShiftLinear, fixed_point, round_power_of_two


def make_conv(op: str, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
              bias=False, options: dict | None = None) -> nn.Conv2d:
    """The conv layer of operator ``op`` with ``nn.Conv2d``'s signature; ``options`` may hold any operator's options
    (``weight_bits``, ``mode``, ``eta``): each layer takes its own."""
    o = get_operator(op)
    return o.conv(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                  **o.layer_options(options))


def make_linear(op: str, in_features, out_features, bias=True, options: dict | None = None) -> nn.Linear:
    o = get_operator(op)
    return o.linear(in_features, out_features, bias, **o.layer_options(options))


def conv2d(op: str, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **options):
    """Functional convolution with operator ``op`` on a given weight (the supernet slices and remaps it first)."""
    o = get_operator(op)
    return o.functional(x, weight, bias, stride, padding, dilation, groups, **o.layer_options(options))


__all__ = ["OPERATORS", "Operator", "register", "get_operator", "op_of", "conv2d", "make_conv", "make_linear",
           "ShiftConv2d", "ShiftLinear", "AdderConv2d", "AdderLinear", "adder2d", "mult_conv2d", "round_power_of_two",
           "fixed_point"]
