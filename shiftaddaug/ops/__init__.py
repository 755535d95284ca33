"""Multiplication-free operators and the one factory that builds a conv or linear layer for any operator."""
from __future__ import annotations

import torch.nn as nn

from .adder import AdderConv2d, AdderLinear, adder2d
from .depthwise import mult_conv2d
from .shift import ShiftConv2d, ShiftLinear, fixed_point, round_power_of_two

OPS = ("mult", "shift", "add")
_CONV = {"mult": nn.Conv2d, "shift": ShiftConv2d, "add": AdderConv2d}
_LINEAR = {"mult": nn.Linear, "shift": ShiftLinear, "add": AdderLinear}


def check_op(op: str) -> str:
    if op not in OPS:
        raise ValueError(f"unknown operator {op!r}; choose one of {', '.join(OPS)}")
    return op


def make_conv(op: str, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
              bias=False, **op_kw) -> nn.Conv2d:
    """``nn.Conv2d`` (``op="mult"``), ``ShiftConv2d`` or ``AdderConv2d`` with the same signature."""
    return _CONV[check_op(op)](in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                               **op_kw)


def make_linear(op: str, in_features, out_features, bias=True, **op_kw) -> nn.Linear:
    return _LINEAR[check_op(op)](in_features, out_features, bias, **op_kw)


def op_of(module: nn.Module) -> str | None:
    """Operator name of a conv/linear layer (``None`` for anything else)."""
    for op in ("shift", "add"):  # MF classes subclass nn.Conv2d / nn.Linear: test them first
        if isinstance(module, (_CONV[op], _LINEAR[op])):
            return op
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return "mult"
    return None


__all__ = ["OPS", "check_op", "conv2d", "make_conv", "make_linear", "op_of", "ShiftConv2d", "ShiftLinear",
           "AdderConv2d", "AdderLinear", "adder2d", "mult_conv2d", "round_power_of_two", "fixed_point"]


def conv2d(op: str, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, weight_bits: int = 5,
           eta: float | None = 0.2):
    """Functional convolution with any operator on a given weight (dynamic layers slice and remap it first)."""
    if op == "mult":
        return mult_conv2d(x, weight, bias, stride, padding, dilation, groups)
    if op == "shift":
        return mult_conv2d(x, round_power_of_two(weight, weight_bits), bias, stride, padding, dilation, groups)
    if op == "add":
        return adder2d(x, weight, bias, stride, padding, dilation, groups, eta)
    raise ValueError(f"unknown operator {op!r}; choose one of {', '.join(OPS)}")
