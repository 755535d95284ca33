"""Every adder kernel backend against the reference and independent loops: values and both gradients."""
import os
import warnings

import pytest
import torch
from test_adder import CASES, naive_adder

from shiftaddaug.ops import adder2d, kernels
from shiftaddaug.ops.kernels import reference

BACKENDS = ["cpu", "triton"]


def device(name):
    """Triton takes CUDA tensors on a GPU (run with TRITON_INTERPRET=0) and CPU ones in its interpreter (conftest)."""
    return "cuda" if name == "triton" and os.environ["TRITON_INTERPRET"] != "1" else "cpu"


def backend(name):
    mod = kernels.load(name)
    assert mod is not None, f"the {name} backend did not build here"
    return mod


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 37, 19, 21), (3, 8, 5, 7), (2, 45, 40, 33), (1, 5, 1, 1), (4, 9, 9, 1)])
def test_l1_kernels_match_reference(name, shape):
    g, r, k, o = shape
    x, w, gy = (t.to(device(name)) for t in (torch.randn(g, r, k), torch.randn(g, o, k), torch.randn(g, r, o)))
    mod = backend(name)
    torch.testing.assert_close(mod.l1_forward(x, w), reference.l1_forward(x, w), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(mod.l1_grad_x(x, w, gy), reference.l1_grad_x(x, w, gy), rtol=1e-5, atol=1e-4)


def run_adder(x, w, s, p, d, g, gy):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = adder2d(x, w, None, s, p, d, g, eta=None)
    y.backward(gy)
    return y.detach(), x.grad, w.grad


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_adder2d_backend_matches_naive_loops(name, case, channels_last, monkeypatch):
    """The whole autograd function on each backend (depthwise kernels included), float32 against float64 loops."""
    mod = backend(name)
    monkeypatch.setattr(kernels, "for_tensor", lambda x: mod)
    n, cin, cout, h, w, k, s, p, d, g = case
    x = torch.randn(n, cin, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(cout, cin // g, k, k) * 0.7
    oh, ow = ((size + 2 * p - d * (k - 1) - 1) // s + 1 for size in (h, w))
    gy = torch.randn(n, cout, oh, ow)
    got = run_adder(x.to(device(name)), wt.to(device(name)), s, p, d, g, gy.to(device(name)))
    want = naive_adder(x.double(), wt.double(), s, p, d, g, gy.double())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu().double(), b, rtol=1e-4, atol=1e-4)


def test_cpu_backend_is_the_default_for_float32_and_reference_for_float64(monkeypatch):
    assert kernels.for_tensor(torch.zeros(1)) is backend("cpu")
    assert kernels.for_tensor(torch.zeros(1, dtype=torch.float64)) is reference
    monkeypatch.setenv("SHIFTADDAUG_KERNELS", "reference")
    assert kernels.for_tensor(torch.zeros(1)) is reference
    monkeypatch.setenv("SHIFTADDAUG_KERNELS", "fast")
    with pytest.raises(ValueError, match="SHIFTADDAUG_KERNELS"):
        kernels.for_tensor(torch.zeros(1))


def test_failed_build_falls_back_to_reference_with_one_warning(monkeypatch):
    def broken():
        raise RuntimeError("Error building extension 'x'\nlong compiler log")

    monkeypatch.setitem(kernels._BUILDERS, "cpu", broken)
    monkeypatch.setattr(kernels, "_loaded", {})
    with pytest.warns(RuntimeWarning, match="cpu adder kernel is unavailable.*Error building extension"):
        assert kernels.for_tensor(torch.zeros(1)) is reference
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call does not warn again
        x = torch.randn(2, 3, 5, 5)
        assert adder2d(x, torch.randn(4, 3, 3, 3), padding=1).shape == (2, 4, 5, 5)


def test_integer_shift_kernel_matches_reference():
    x = torch.randint(-(2**31), 2**31, (13, 7))
    lshift, sign = torch.randint(0, 16, (5, 7)), torch.randint(-1, 2, (5, 7))
    got = backend("cpu").shift_int(x, lshift, sign)
    assert torch.equal(got, reference.shift_int(x, lshift, sign))
    assert torch.equal(got, (sign[None] * (x[:, None] * 2**lshift[None])).sum(-1))  # the multiplicative meaning


@pytest.mark.parametrize("cfg", [(4, 6, 3, 1, 1, 1), (6, 6, 3, 2, 1, 6), (8, 4, 1, 1, 0, 2), (3, 5, 2, 1, 0, 1)])
@pytest.mark.parametrize("mode", ["q", "ps"])
def test_shift_integer_inference_equals_float_forward(cfg, mode):
    from shiftaddaug.ops import ShiftConv2d

    cin, cout, k, s, p, g = cfg
    m = ShiftConv2d(cin, cout, k, s, p, groups=g, bias=True, act_bits=(12, 10), mode=mode).double()
    x = torch.randn(2, cin, 7, 6, dtype=torch.float64) * 4
    with torch.no_grad():
        torch.testing.assert_close(m.forward_int(x), m(x), rtol=0, atol=1e-12)
