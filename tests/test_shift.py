import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from shiftaddaug.ops import ShiftConv2d, ShiftLinear, fixed_point, round_power_of_two


@pytest.mark.parametrize("w, expected", [(0.75, 1.0), (0.7, 0.5), (-0.3, -0.25), (3.0, 1.0), (0.0, 0.0),
                                         (-0.0, 0.0), (1.5, 1.0), (0.36, 0.5), (0.35, 0.25), (-2.0**-20, -2.0**-15),
                                         (2.0**-7 * 1.4, 2.0**-7), (2.0**-7 * 1.42, 2.0**-6)])
def test_round_power_of_two_hand_values(w, expected):
    assert round_power_of_two(torch.tensor([w]), weight_bits=5).item() == expected


def test_weight_bits_sets_clamp_range():
    w = torch.tensor([2.0**-5, 2.0**-4, 2.0**-3])
    assert round_power_of_two(w, weight_bits=3).tolist() == [2.0**-3] * 3  # b=3: shifts -3..0
    with pytest.raises(ValueError):
        round_power_of_two(w, weight_bits=1)


def test_cut_point_is_sqrt2_in_log_domain():
    k = torch.arange(-10, 0, dtype=torch.float64)
    below = round_power_of_two(2**k * 2**0.5 * (1 - 1e-6))
    above = round_power_of_two(2**k * 2**0.5 * (1 + 1e-6))
    assert torch.equal(below, 2**k) and torch.equal(above, 2 ** (k + 1))


def test_straight_through_gradient_and_no_inplace_change():
    w = torch.randn(20, requires_grad=True) * 3
    w.retain_grad()
    before = w.detach().clone()
    q = round_power_of_two(w)
    g = torch.randn(20)
    q.backward(g)
    assert torch.equal(w.grad, g)
    assert torch.equal(w.detach(), before)


def test_shift_conv_forward_equals_conv_with_effective_weight():
    conv = ShiftConv2d(6, 8, 3, stride=2, padding=1, groups=2, bias=True)
    x = torch.randn(2, 6, 9, 9)
    w = conv.effective_weight()
    mags = w.abs()[w != 0]
    assert torch.equal(torch.exp2(torch.log2(mags).round()), mags)  # exact powers of two
    assert torch.allclose(conv(x), F.conv2d(x, w, conv.bias, 2, 1, 1, 2))
    assert isinstance(conv, nn.Conv2d)


def test_shift_linear_and_gradient_reaches_master_weight():
    lin = ShiftLinear(5, 3)
    x = torch.randn(4, 5)
    assert torch.allclose(lin(x), F.linear(x, lin.effective_weight(), lin.bias))
    lin(x).sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


def test_deepshift_ps_learns_shift_and_sign():
    conv = ShiftConv2d(4, 4, 3, padding=1, mode="ps")
    assert conv.weight is None and set(n for n, _ in conv.named_parameters()) == {"shift", "sign"}
    w = conv.effective_weight()
    assert set(w.abs().unique().log2().tolist()) <= set(range(-14, 1))
    conv(torch.randn(2, 4, 5, 5)).pow(2).sum().backward()
    assert conv.shift.grad.abs().sum() > 0 and conv.sign.grad.abs().sum() > 0


def test_deepshift_ps_gradients_follow_deepshift():
    """DeepShift's rule: the sign gets the weight's gradient itself, the shift the weight's gradient times
    ``w * ln 2`` (the derivative of ``s * 2**p``); a sign gradient scaled by ``2**p`` starves small weights."""
    conv = ShiftConv2d(3, 4, 3, padding=1, mode="ps")
    with torch.no_grad():
        conv.shift.fill_(-10.0)  # weights of 2**-10, where a 2**p-scaled sign gradient would be 1,024x too small
    x = torch.randn(2, 3, 6, 6)
    w = conv.effective_weight().detach().requires_grad_()
    F.conv2d(x, w, padding=1).pow(2).sum().backward()
    conv(x).pow(2).sum().backward()
    torch.testing.assert_close(conv.sign.grad, w.grad)
    torch.testing.assert_close(conv.shift.grad, w.grad * w.detach() * math.log(2))


def test_fixed_point_activations():
    x = torch.tensor([0.3, -1.26, 100.0, -100.0], requires_grad=True)
    y = fixed_point(x, int_bits=4, frac_bits=2)
    assert y.tolist() == [0.25, -1.5, 7.0, -8.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0] * 4
    conv = ShiftConv2d(2, 2, 1, act_bits=(8, 4))
    x = torch.randn(1, 2, 3, 3)
    assert torch.allclose(conv(x), F.conv2d(fixed_point(x, 8, 4), conv.effective_weight()))
