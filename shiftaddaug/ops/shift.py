"""DeepShift operators: weights restricted to signed powers of two (a multiply becomes a bit-shift).

Two parametrisations (Elhoushi et al., "DeepShift", 2021):
- ``"q"`` (DeepShift-Q, default): a float master weight, rounded to ``sign(w) * 2**round(log2|w|)`` in every
  forward pass, with a straight-through gradient. The master weight is never modified in place, so it can be
  shared with a multiplicative layer (ShiftAddAug's heterogeneous weight sharing).
- ``"ps"`` (DeepShift-PS): learned shift ``P`` and sign ``S`` parameters, rounded in the forward pass.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import kernels
from .adder import patch_rows
from .depthwise import mult_conv2d

DEFAULT_WEIGHT_BITS = 5  # DeepShift's default: one sign bit, shifts -15..0

__all__ = ["DEFAULT_WEIGHT_BITS", "round_power_of_two", "fixed_point", "ShiftConv2d", "ShiftLinear", "shift_range"]


def shift_range(weight_bits: int) -> tuple[int, int]:
    """Smallest and largest shift exponent representable with ``weight_bits`` bits (sign included)."""
    if weight_bits < 2:
        raise ValueError(f"weight_bits must be >= 2 (one sign bit plus shift bits), got {weight_bits}")
    return -(2 ** (weight_bits - 1) - 1), 0


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    # forward value q, gradient of the identity
    return x + (q - x).detach()


def round_power_of_two(w: torch.Tensor, weight_bits: int = DEFAULT_WEIGHT_BITS) -> torch.Tensor:
    """``sign(w) * 2**round(log2|w|)`` with magnitudes clamped to ``[2**min_shift, 1]``; zeros stay zero.

    Rounding in the log domain puts the cut-point between ``2**k`` and ``2**(k+1)`` at ``sqrt(2) * 2**k``.
    The gradient is straight-through (identity), and ``w`` itself is never changed.
    """
    lo, hi = shift_range(weight_bits)
    with torch.no_grad():
        mag = w.abs().clamp(2.0**lo, 2.0**hi)
        q = torch.sign(w) * torch.exp2(torch.round(torch.log2(mag)))
    return _ste(w, q)


def fixed_point(x: torch.Tensor, int_bits: int = 16, frac_bits: int = 16) -> torch.Tensor:
    """DeepShift's fixed-point activation: ``clamp(floor(x * 2**f) / 2**f, -2**(i-1), 2**(i-1) - 1)``, STE."""
    with torch.no_grad():
        scale = 2.0**frac_bits
        q = torch.clamp(torch.floor(x * scale) / scale, -(2.0 ** (int_bits - 1)), 2.0 ** (int_bits - 1) - 1)
    return _ste(x, q)


class _ShiftWeight:
    """Mixin shared by ShiftConv2d and ShiftLinear: the weight the forward pass actually uses."""

    weight_bits: int
    mode: str
    act_bits: tuple[int, int] | None

    def _init_shift(self, weight_bits: int, mode: str, act_bits: tuple[int, int] | None) -> None:
        shift_range(weight_bits)  # validates
        if mode not in ("q", "ps"):
            raise ValueError(f"mode must be 'q' (DeepShift-Q) or 'ps' (DeepShift-PS), got {mode!r}")
        self.weight_bits, self.mode, self.act_bits = weight_bits, mode, tuple(act_bits) if act_bits else None
        if mode == "ps":
            # PS learns the exponent and the sign directly, initialised from the rounded float weight
            w = self.weight.detach()
            lo, _ = shift_range(weight_bits)
            shift = torch.round(torch.log2(w.abs().clamp_min(2.0**lo))).clamp(lo + 1, 0)
            del self.weight
            self.register_parameter("weight", None)
            self.shift = nn.Parameter(shift)
            self.sign = nn.Parameter(torch.sign(w))

    def effective_weight(self) -> torch.Tensor:
        """The signed power-of-two weight the forward pass uses (zeros allowed)."""
        if self.mode == "q":
            return round_power_of_two(self.weight, self.weight_bits)
        lo, _ = shift_range(self.weight_bits)
        p = _ste(self.shift, torch.round(self.shift.clamp(lo + 1, 0)))
        s = torch.round(self.sign.detach().clamp(-1, 1))  # ternary sign
        # DeepShift's rule: the sign's gradient is the weight's gradient itself (not scaled by 2**shift), the shift's
        # is the weight's gradient times d(s * 2**p)/dp
        return s * torch.exp2(p) + (self.sign - self.sign.detach())

    def _quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return fixed_point(x, *self.act_bits) if self.act_bits else x

    @torch.no_grad()
    def shift_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer form of the weight: ``(exponent, sign)`` with ``weight = sign * 2**exponent``."""
        w = self.effective_weight()
        lo, _ = shift_range(self.weight_bits)
        exp = torch.log2(w.abs().clamp_min(2.0**lo)).round().to(torch.int64)
        return exp, torch.sign(w).to(torch.int64)

    def _shift_repr(self) -> str:
        s = f", weight_bits={self.weight_bits}"
        if self.mode != "q":
            s += f", mode={self.mode!r}"
        if self.act_bits:
            s += f", act_bits={self.act_bits}"
        return s


class ShiftConv2d(_ShiftWeight, nn.Conv2d):
    """Drop-in ``nn.Conv2d`` whose weights are signed powers of two (DeepShift).

    Args mirror ``nn.Conv2d``; ``weight_bits`` (default 5: shifts -15..0), ``mode`` ``"q"`` or ``"ps"``, and
    ``act_bits=(int_bits, frac_bits)`` for optional fixed-point input activations.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=False, weight_bits=DEFAULT_WEIGHT_BITS, mode="q", act_bits=None, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self._init_shift(weight_bits, mode, act_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self._quantize_input(x), self.effective_weight()
        if self.padding_mode != "zeros":  # nn.Conv2d pads by mode first; mult_conv2d takes numeric zero padding
            return self._conv_forward(x, w, self.bias)
        return mult_conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    @torch.no_grad()
    def forward_int(self, x: torch.Tensor) -> torch.Tensor:
        """Integer inference: fixed-point activations (``act_bits``, default 16.16) shifted by the weights'
        exponents and summed in int64; no multiplier. Equals ``forward`` on the same fixed-point input."""
        int_bits, frac_bits = self.act_bits or (16, 16)
        lo, _ = shift_range(self.weight_bits)
        xi = torch.clamp(torch.floor(x.double() * 2.0**frac_bits), -(2.0 ** (int_bits + frac_bits - 1)),
                         2.0 ** (int_bits + frac_bits - 1) - 1)
        exp, sign = self.shift_params()
        g, o = self.groups, self.out_channels
        rows, oh, ow = patch_rows(xi, self.kernel_size, self.stride, self.padding, self.dilation, g)  # exact: float64
        cols = rows.to(torch.int64)
        kern = kernels.load("cpu") or kernels.reference  # the fallback has the same contract
        lshift, sign = (exp - lo).view(g, o // g, -1), sign.view(g, o // g, -1)  # exponent >= lo: left shifts
        y = torch.cat([kern.shift_int(cols[i], lshift[i], sign[i]) for i in range(g)], 1)  # [N*L, O]
        y = y.double() * 2.0 ** (lo - frac_bits)
        y = y.view(x.shape[0], oh, ow, o).permute(0, 3, 1, 2).to(x.dtype)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._shift_repr()


class ShiftLinear(_ShiftWeight, nn.Linear):
    """Drop-in ``nn.Linear`` whose weights are signed powers of two (DeepShift)."""

    def __init__(self, in_features, out_features, bias=True, weight_bits=DEFAULT_WEIGHT_BITS, mode="q", act_bits=None,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_shift(weight_bits, mode, act_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._quantize_input(x), self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._shift_repr()

