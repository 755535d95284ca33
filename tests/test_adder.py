import itertools
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from shiftaddaug.ops import AdderConv2d, AdderLinear, adder2d


def naive_adder(x, w, stride, padding, dilation, groups, gy):
    """Independent loop implementation: forward, and AdderNet's gradients, over output positions."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    xp = F.pad(x, (padding, padding, padding, padding))
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    y = torch.zeros(n, o, oh, ow, dtype=x.dtype)
    gxp = torch.zeros_like(xp)
    gw = torch.zeros_like(w)
    for g, i, j in itertools.product(range(groups), range(oh), range(ow)):
        rows = slice(i * stride, i * stride + dilation * (kh - 1) + 1, dilation)
        cols = slice(j * stride, j * stride + dilation * (kw - 1) + 1, dilation)
        patch = xp[:, g * cg:(g + 1) * cg, rows, cols]  # [n, cg, kh, kw]
        wg = w[g * og:(g + 1) * og]  # [og, cg, kh, kw]
        diff = patch[:, None] - wg[None]  # [n, og, cg, kh, kw]
        y[:, g * og:(g + 1) * og, i, j] = -diff.abs().sum((2, 3, 4))
        gij = gy[:, g * og:(g + 1) * og, i, j][:, :, None, None, None]
        gw[g * og:(g + 1) * og] += (gij * diff).sum(0)
        gxp[:, g * cg:(g + 1) * cg, rows, cols] += (gij * (-diff).clamp(-1, 1)).sum(1)
    gx = gxp[:, :, padding:padding + h, padding:padding + wd]
    return y, gx, gw


CASES = [  # (n, cin, cout, h, w, k, stride, padding, dilation, groups)
    (2, 3, 5, 7, 6, 3, 1, 1, 1, 1),
    (2, 4, 6, 9, 8, 3, 2, 1, 1, 2),
    (1, 6, 6, 7, 7, 3, 1, 1, 1, 6),  # depthwise
    (3, 5, 5, 8, 5, 5, 2, 2, 1, 5),  # depthwise, stride 2, k5
    (2, 4, 4, 9, 9, 3, 1, 2, 2, 1),  # dilation
    (2, 7, 3, 5, 5, 1, 1, 0, 1, 1),  # pointwise fast path
    (2, 6, 9, 6, 7, 1, 2, 0, 1, 3),  # strided grouped 1x1
    (1, 2, 4, 4, 4, 4, 1, 0, 1, 1),  # even kernel, no padding
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_adder_matches_naive_loops(case, channels_last):
    n, cin, cout, h, w, k, s, p, d, g = case
    x = torch.randn(n, cin, h, w, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    wt = (torch.randn(cout, cin // g, k, k, dtype=torch.float64) * 0.7).requires_grad_()
    y = adder2d(x, wt, None, s, p, d, g, eta=None)
    gy = torch.randn_like(y)
    y.backward(gy)
    ref_y, ref_gx, ref_gw = naive_adder(x.detach(), wt.detach(), s, p, d, g, gy)
    torch.testing.assert_close(y, ref_y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x.grad, ref_gx, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(wt.grad, ref_gw, rtol=1e-10, atol=1e-10)


def test_adaptive_gradient_scaling():
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    adder2d(x, w, padding=1, eta=None).backward(gy)
    raw = w.grad.clone()
    w.grad = None
    adder2d(x, w, padding=1, eta=0.2).backward(gy)
    torch.testing.assert_close(w.grad, 0.2 * raw.numel() ** 0.5 * raw / raw.norm())
    torch.testing.assert_close(w.grad.norm(), torch.tensor(0.2 * raw.numel() ** 0.5, dtype=torch.float64))


def test_adder_modules_bias_and_linear():
    conv = AdderConv2d(3, 4, 3, padding=1, bias=True)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(conv(x), adder2d(x, conv.weight, padding=1) + conv.bias.view(1, -1, 1, 1))
    lin = AdderLinear(6, 3)
    z = torch.randn(4, 6)
    torch.testing.assert_close(lin(z), -(z[:, None] - lin.weight[None]).abs().sum(-1) + lin.bias)
    with pytest.raises(ValueError):
        AdderConv2d(3, 4, 3, padding="same")


def test_peak_memory_stays_near_unfolded_input():
    # the official broadcast would need Cout*Cin*k*k*N*H*W*4 B = 1.2 GB here; unfolded input is 19 MB
    code = """
import resource, torch
from shiftaddaug.ops import adder2d
x = torch.randn(32, 64, 16, 16, requires_grad=True); w = torch.randn(64, 64, 3, 3, requires_grad=True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
adder2d(x, w, padding=1).sum().backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    grew_mb = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert grew_mb < 200, f"adder layer grew the process by {grew_mb} MB"
