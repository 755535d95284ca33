import pytest
import torch
import torch.nn.functional as F

from shiftaddaug.ops import ShiftConv2d, conv2d, mult_conv2d


@pytest.mark.parametrize("k,hw,stride,dilation", [(3, 1, 1, 1), (3, 2, 1, 1), (3, 2, 2, 1), (5, 3, 1, 1),
                                                  (5, 4, 2, 1), (7, 4, 1, 1), (3, 3, 1, 2), (3, (2, 5), 1, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_fast_path_equals_conv2d_in_values_and_gradients(k, hw, stride, dilation, channels_last):
    h, w = (hw, hw) if isinstance(hw, int) else hw
    x = torch.randn(3, 5, h, w, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(5, 1, k, k, dtype=torch.float64)
    bias = torch.randn(5, dtype=torch.float64)
    pad = dilation * (k // 2)
    ins = [t.clone().requires_grad_() for t in (x, weight, bias)]
    ref = [t.clone().requires_grad_() for t in (x, weight, bias)]
    y = mult_conv2d(*ins, stride, pad, dilation, groups=5)
    y_ref = F.conv2d(*ref, stride, pad, dilation, groups=5)
    assert y.grad_fn.next_functions[0][0].name().endswith("_DepthwiseConv2dBackward")  # the fast path ran
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y_ref)
    y.backward(g)
    y_ref.backward(g)
    for a, b in zip(ins, ref):
        torch.testing.assert_close(a.grad, b.grad)


def test_plain_conv2d_where_the_kernel_fits_or_no_weight_gradient_is_needed():
    w = torch.randn(4, 1, 3, 3, requires_grad=True)
    big, small = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 2, 2)
    assert "Depthwise" not in mult_conv2d(big, w, padding=1, groups=4).grad_fn.name()
    assert "Depthwise" not in mult_conv2d(small, torch.randn(8, 4, 3, 3, requires_grad=True), padding=1).grad_fn.name()
    with torch.no_grad():
        torch.testing.assert_close(mult_conv2d(small, w, padding=1, groups=4), F.conv2d(small, w, padding=1, groups=4))
    assert mult_conv2d(small, w.detach(), padding=1, groups=4).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # lower-precision gradients: PyTorch's own backward
        assert "Depthwise" not in mult_conv2d(small, w, padding=1, groups=4).grad_fn.name()


@pytest.mark.parametrize("op", ["mult", "shift"])
def test_operators_and_shift_layers_take_the_fast_path(op):
    x = torch.randn(2, 6, 2, 2)
    layer = ShiftConv2d(6, 6, 3, padding=1, groups=6)
    w = layer.weight
    y = conv2d(op, x, w, padding=1, groups=6) if op == "mult" else layer(x)
    ref = F.conv2d(x, w if op == "mult" else layer.effective_weight(), padding=1, groups=6)
    torch.testing.assert_close(y, ref)
    y.sum().backward()
    ref_w = w.detach().clone().requires_grad_()
    F.conv2d(x, ref_w, padding=1, groups=6).sum().backward()  # straight-through: the same gradient for shift
    torch.testing.assert_close(w.grad, ref_w.grad)


@pytest.mark.parametrize("padding,stride", [((2, 0), 1), ((1, 0), 2), ((3, 3), 2)])
def test_depthwise_weight_gradient_with_uneven_padding(padding, stride):
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64)
    w = torch.randn(4, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    w_ref = w.detach().clone().requires_grad_()
    y = mult_conv2d(x, w, None, stride, padding, 1, 4)
    y_ref = F.conv2d(x, w_ref, None, stride, padding, 1, 4)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y_ref)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(w.grad, w_ref.grad)
