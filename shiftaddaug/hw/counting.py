"""Operation counts by operator type and peak activation memory, measured by running the model once.

MACs of a conv are ``out_elements * in_channels/groups * k*k`` whatever its operator: a shift layer's MACs are
shift-accumulates, an adder layer's are subtract-abs-accumulates. BatchNorm and activations are not MACs (the
energy model in ``shiftaddaug.hw`` counts them separately).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..models.seg import ASPP, LRASPP
from ..ops import op_of


@dataclass
class LayerCount:
    name: str
    op: str
    kind: str  # "conv" or "linear"
    in_shape: tuple
    out_shape: tuple
    macs: int
    params: int


@dataclass
class Counts:
    params: int
    macs: dict = field(default_factory=dict)  # op -> MACs per image
    peak_activation_bytes: int = 0
    layers: list = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())


def _macs(m: nn.Module, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1]
        return out[0].numel() * (m.in_channels // m.groups) * k
    return m.in_features * m.out_features


@torch.no_grad()
def count(model: nn.Module, input_size: int | tuple, in_chans: int = 3, bytes_per_element: int = 1) -> Counts:
    """Count one image at ``input_size``. Peak activation memory follows MCUNet's definition: the largest
    input + output of any layer, plus the block input a residual block keeps alive, and what a segmentation head
    keeps alive (``bytes_per_element=1`` for int8 deployment)."""
    hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    layers, peak, held = [], [0], [0]
    hooks = []

    def leaf_hook(name):
        def hook(m, inp, out):
            op = op_of(m)
            if op is not None:
                layers.append(LayerCount(name, op, "conv" if isinstance(m, nn.Conv2d) else "linear",
                                         tuple(inp[0].shape[1:]), tuple(out.shape[1:]), _macs(m, out),
                                         sum(p.numel() for p in m.parameters(recurse=False))))
            peak[0] = max(peak[0], (inp[0][0].numel() + out[0].numel() + held[0]) * bytes_per_element)
        return hook

    def block_pre(m, inp):
        held[0] += inp[0][0].numel()

    def block_post(m, inp, out):
        held[0] -= inp[0][0].numel()

    seg = getattr(model, "seg_head", None)
    if seg is not None:  # what a segmentation head keeps alive while it computes (its forward's order)
        sizes = {}

        def keep(key, of_input=False):
            def hook(m, inp, out=None):
                t = inp[0][-1] if of_input else out  # a head's input is the list of stage outputs
                sizes[key] = t[0].numel()
                held[0] += sizes[key]
            return hook

        def release(*keys):
            return lambda m, *_: held.__setitem__(0, held[0] - sum(sizes[k] for k in keys))

        if isinstance(seg, LRASPP):  # the low-level stage's output until its class conv, the high logits meanwhile
            hooks += [model.stages[seg.low_stage].register_forward_hook(keep("low")),
                      seg.low_classifier.register_forward_pre_hook(release("low")),
                      seg.high_classifier.register_forward_hook(keep("high")),
                      seg.low_classifier.register_forward_hook(release("high"))]
        elif isinstance(seg, ASPP):  # the input through every branch; the projections' sum from the first one
            hooks += [seg.register_forward_pre_hook(keep("x", of_input=True)),
                      seg.project[0].register_forward_hook(keep("acc")),
                      seg.act.register_forward_pre_hook(release("x", "acc"))]
        else:
            raise ValueError(f"count does not know what {type(seg).__name__} keeps alive; add it here")
    for name, m in model.named_modules():
        if len(list(m.children())) == 0 and not isinstance(m, (nn.Identity, nn.Dropout)):
            hooks.append(m.register_forward_hook(leaf_hook(name)))
        if getattr(m, "shortcut", False) is True or getattr(m, "downsample", 0) is None:
            hooks += [m.register_forward_pre_hook(block_pre), m.register_forward_hook(block_post)]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, in_chans, *hw, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    macs: dict[str, int] = {}
    for lc in layers:
        macs[lc.op] = macs.get(lc.op, 0) + lc.macs
    return Counts(sum(p.numel() for p in model.parameters()), macs, peak[0], layers)
