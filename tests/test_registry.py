"""The operator registry: one entry makes an operator usable by the zoo, the supernet, export and the cost model."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from shiftaddaug.augment import build_augmented
from shiftaddaug.hw import count, profile
from shiftaddaug.models import create_model
from shiftaddaug.ops import OPERATORS, Operator, get_operator, op_of


class HalfConv2d(nn.Conv2d):
    """A toy operator: a convolution with its weights halved (a 1-bit right shift of every weight)."""

    def forward(self, x):
        return F.conv2d(x, self.weight * 0.5, self.bias, self.stride, self.padding, self.dilation, self.groups)


class HalfLinear(nn.Linear):
    def forward(self, x):
        return F.linear(x, self.weight * 0.5, self.bias)


def half(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, **_):
    return F.conv2d(x, w * 0.5, bias, stride, padding, dilation, groups)


def test_one_registry_entry_makes_a_new_operator_work_everywhere(monkeypatch):
    entry = Operator("half", HalfConv2d, HalfLinear, half, lambda w, **_: w * 0.5, {"shift": 1}, default_remap="none")
    monkeypatch.setitem(OPERATORS, "half", entry)
    model = create_model("mobilenetv2_tiny", 10, op="half", in_chans=1, input_size=28)
    assert {op_of(m) for m in model.modules()} - {None} == {"mult", "half"}  # stem and classifier stay mult
    c = count(model, 28, 1)
    assert c.macs["half"] > 10 * c.macs["mult"]
    assert profile(model, 28, in_chans=1).total["macs_by_op"]["half"] == c.macs["half"]

    torch.manual_seed(0)
    net = build_augmented("mobilenetv2_tiny", 10, op="half", aug_op="hybrid", in_chans=1, input_size=28)
    x = torch.randn(2, 1, 28, 28)
    net.set_active("random")
    net(x)  # the hybrid form folds the target block into the multiplicative conv (it has a conv weight)
    net.set_active("min")
    net.eval()
    exported = net.export().eval()
    torch.testing.assert_close(exported(x), net(x), atol=1e-4, rtol=0)
    assert type(exported.stages[1].blocks[0].expand.conv) is HalfConv2d


def test_defaults_are_the_layers_own():
    shift, add = get_operator("shift"), get_operator("add")
    first = lambda op: create_model("resnet20", 10, op=op).stages[0].blocks[0].conv1.conv  # noqa: E731
    assert first("shift").weight_bits == shift.options["weight_bits"]
    assert first("add").eta == add.options["eta"]
    assert shift.layer_options({"eta": 0.5, "weight_bits": 3}) == {"weight_bits": 3, "mode": "q"}
