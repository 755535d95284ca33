"""A plain ``TinyNet`` (classification, or segmentation with its head) as a list of integer-ready nodes, in
execution order.

A node is a conv-BN-activation unit (``conv``: a conv or linear layer of any operator, its BatchNorm and its clamp),
a sum (``add``; one input may be one value per channel, broadcast), a global average pool (``pool``), an h-swish
after a unit (``hswish``), a gate (``gate``: the input times the hard sigmoid of another tensor, squeeze-excite and
LR-ASPP) or a bilinear resize (``resize``, to the size of tensor ``like``); tensors are numbered, 0 being the
input.
``run_float`` executes the nodes with the model's own layers: it reproduces the model's logits (a test checks it)
and gives the value range of every tensor, which calibration turns into fixed-point formats.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.layers import BasicBlock, ConvBNAct, InvertedResidual, SqueezeExcite
from ..models.seg import ASPP, LRASPP
from ..ops import op_of

ACTS = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Identity: None}


@dataclass
class Node:
    kind: str  # "conv" | "add" | "pool" | "hswish" | "gate" | "resize"
    name: str
    inputs: tuple[int, ...]
    output: int
    layer: nn.Module | None = None  # conv: the conv or linear layer
    bn: nn.Module | None = None  # conv: its BatchNorm (2d, or 1d after a classifier)
    act: str | None = None  # conv and add: "relu", "relu6" or None
    like: int | None = None  # resize: the tensor whose height and width it takes (not an input: nothing held)

    @property
    def op(self) -> str | None:
        return op_of(self.layer) if self.layer is not None else None


def _act(module: nn.Module, where: str) -> str | None:
    if type(module) not in ACTS:
        raise ValueError(f"deploy: {where} uses {type(module).__name__}, which has no integer form here; "
                         "models with ReLU, ReLU6 or Hardswish deploy")
    return ACTS[type(module)]


class _Tracer:
    def __init__(self):
        self.nodes: list[Node] = []
        self.tensors = 1  # tensor 0: the input image

    def _new(self, kind, name, inputs, **kw) -> int:
        out = self.tensors
        self.tensors += 1
        self.nodes.append(Node(kind, name, tuple(inputs), out, **kw))
        return out

    def unit(self, name: str, u: ConvBNAct, x: int) -> int:
        bn = getattr(u, "bn", None)
        if isinstance(u.act, nn.Hardswish):  # its own node: the unit's output gets a format before the activation
            return self._new("hswish", f"{name}.hswish", (self._new("conv", name, (x,), layer=u.conv, bn=bn),))
        return self._new("conv", name, (x,), layer=u.conv, bn=bn, act=_act(u.act, name))

    def squeeze_excite(self, name: str, se: SqueezeExcite, x: int) -> int:
        s = self.unit(f"{name}.expand", se.expand, self.unit(f"{name}.reduce", se.reduce, self.pool(f"{name}.pool", x)))
        return self._new("gate", f"{name}.gate", (x, s))

    def add(self, name: str, a: int, b: int, act: str | None = None) -> int:
        return self._new("add", name, (a, b), act=act)

    def pool(self, name: str, x: int) -> int:
        return self._new("pool", name, (x,))

    def linear(self, name: str, layer: nn.Module, bn: nn.Module | None, x: int) -> int:
        return self._new("conv", name, (x,), layer=layer, bn=bn)

    def resize(self, name: str, x: int, like: int) -> int:
        return self._new("resize", name, (x,), like=like)

    def lraspp(self, head: LRASPP, feats: list[int]) -> int:
        low, high = feats[head.low_stage], feats[-1]
        scale = self.unit("head.scale", head.scale, self.pool("head.pool", high))
        x = self._new("gate", "head.gate", (self.unit("head.cbr", head.cbr, high), scale))
        x = self.unit("head.high_classifier", head.high_classifier, self.resize("head.up", x, low))
        return self.add("head.add", self.unit("head.low_classifier", head.low_classifier, low), x)

    def aspp(self, head: ASPP, feats: list[int]) -> int:
        x = feats[-1]
        y = self.unit("head.project.4", head.project[-1], self.unit("head.pool", head.pool,
                                                                    self.pool("head.pool.mean", x)))
        for i, (branch, project) in enumerate(zip(head.branches, head.project)):
            b = x
            for j, u in enumerate([branch] if isinstance(branch, ConvBNAct) else branch):
                b = self.unit(f"head.branches.{i}.{j}", u, b)
            y = self.add(f"head.add.{i}", y, self.unit(f"head.project.{i}", project, b),
                         act="relu" if i == len(head.branches) - 1 else None)  # the ReLU after the whole sum
        return self.unit("head.classifier", head.classifier, y)


def trace(model: nn.Module) -> list[Node]:
    """The nodes of a plain ``TinyNet`` (an exported or directly trained model)."""
    t = _Tracer()
    x = t.unit("stem", model.stem, 0)
    feats = []
    for si, stage in enumerate(model.stages):
        for bi, block in enumerate(stage.blocks[: stage.depth]):
            where = f"stages.{si}.blocks.{bi}"
            if isinstance(block, InvertedResidual):
                y = x if block.expand is None else t.unit(f"{where}.expand", block.expand, x)
                y = t.unit(f"{where}.depthwise", block.depthwise, y)
                if block.se is not None:
                    y = t.squeeze_excite(f"{where}.se", block.se, y)
                y = t.unit(f"{where}.project", block.project, y)
                x = t.add(f"{where}.add", x, y) if block.shortcut else y
            elif isinstance(block, BasicBlock):
                identity = x if block.downsample is None else t.unit(f"{where}.downsample", block.downsample, x)
                y = t.unit(f"{where}.conv2", block.conv2, t.unit(f"{where}.conv1", block.conv1, x))
                x = t.add(f"{where}.add", identity, y, act="relu")
            else:
                raise ValueError(f"deploy: {where} is a {type(block).__name__}, which has no integer form here")
        feats.append(x)
    if model.seg_head is not None:
        heads = {LRASPP: t.lraspp, ASPP: t.aspp}
        if type(model.seg_head) not in heads:
            raise ValueError(f"deploy: the {type(model.seg_head).__name__} head has no integer form here")
        t.resize("resize", heads[type(model.seg_head)](model.seg_head, feats), 0)  # logits at the input's size
        return t.nodes
    if model.final_expand is not None:
        x = t.unit("final_expand", model.final_expand, x)
    x = t.pool("pool", x)
    if model.feature_mix is not None:
        x = t.unit("feature_mix", model.feature_mix, x)
    t.linear("classifier", model.classifier, model.classifier_bn, x)
    return t.nodes


def _apply(node: Node, xs: list[torch.Tensor], tensors: list[torch.Tensor]) -> torch.Tensor:
    if node.kind == "resize":
        return F.interpolate(xs[0], size=tuple(tensors[node.like].shape[-2:]), mode="bilinear", align_corners=False)
    if node.kind == "pool":
        return xs[0].mean((2, 3), keepdim=True)
    if node.kind == "hswish":
        return F.hardswish(xs[0])
    if node.kind == "gate":
        return xs[0] * F.hardsigmoid(xs[1])
    if node.kind == "add":
        y = xs[0] + xs[1]
    else:
        x = xs[0]
        if isinstance(node.layer, nn.Linear):
            x = x.flatten(1)
        y = node.layer(x)
        if node.bn is not None:
            y = node.bn(y)
    return {"relu": F.relu, "relu6": F.relu6, None: lambda v: v}[node.act](y)


@torch.no_grad()
def run_float(nodes: list[Node], x: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor of the graph for input ``x`` (eval mode), in float, with the model's own layers."""
    tensors = [x]
    for node in nodes:
        tensors.append(_apply(node, [tensors[i] for i in node.inputs], tensors))
    return tensors
