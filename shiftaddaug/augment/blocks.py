"""Elastic blocks and stages: the plain blocks' forward on elastic layers, plus each block's ``set_active``.

``ElasticLayers`` is the layer factory ``TinyNet`` builds the supernet with: every unit of a block gets the
block's candidate operators and kernels from the ``Space``.
"""
from __future__ import annotations

from ..models.layers import BasicBlock, InvertedResidual, Stage
from ..models.seg import ASPP, LRASPP, SegCfg
from ..models.spec import BlockCfg
from .layers import ElasticConvBNAct, ElasticLinear
from .space import Space


class ElasticInvertedResidual(InvertedResidual):
    def set_active(self, c: BlockCfg) -> None:
        """Run as the block ``c`` describes (its channels, kernel, operator)."""
        self.active = c
        dw = c.mid or c.in_ch
        if self.expand is not None:
            self.expand.set_active(c.in_ch, c.mid, 1, c.op)
        self.depthwise.set_active(dw, dw, c.kernel, c.op)
        if self.se is not None:
            self.se.reduce.set_active(dw, c.se_mid, 1, c.op)
            self.se.expand.set_active(c.se_mid, dw, 1, c.op)
        self.project.set_active(dw, c.out_ch, 1, c.op)


class ElasticBasicBlock(BasicBlock):
    def set_active(self, c: BlockCfg) -> None:
        self.active = c
        self.conv1.set_active(c.in_ch, c.mid, c.kernel, c.op)
        self.conv2.set_active(c.mid, c.out_ch, c.kernel, c.op)
        if self.downsample is not None:
            self.downsample.set_active(c.in_ch, c.out_ch, 1, c.op)


ELASTIC_BLOCKS = {"ir": ElasticInvertedResidual, "basic": ElasticBasicBlock}


class ElasticLRASPP(LRASPP):
    def set_active(self, c: SegCfg, num_classes: int) -> None:
        self.cbr.set_active(c.high_ch, c.width, 1, c.op)
        self.scale.set_active(c.high_ch, c.width, 1, c.op)
        self.low_classifier.set_active(c.low_ch, num_classes, 1, c.classifier_op)
        self.high_classifier.set_active(c.width, num_classes, 1, c.classifier_op)


class ElasticASPP(ASPP):
    def set_active(self, c: SegCfg, num_classes: int) -> None:
        h, w = c.high_ch, c.width
        self.branches[0].set_active(h, w, 1, c.op)
        for depthwise, pointwise in self.branches[1:]:
            depthwise.set_active(h, h, 3, c.op)
            pointwise.set_active(h, w, 1, c.op)
        self.pool.set_active(h, w, 1, c.op)
        for project in self.project:
            project.set_active(w, w, 1, c.op)
        self.classifier.set_active(w, num_classes, 1, c.classifier_op)


ELASTIC_SEG_HEADS = {"lraspp": ElasticLRASPP, "aspp": ElasticASPP}


class ElasticStage(Stage):
    def set_active(self, cfgs) -> None:
        """Run the first ``len(cfgs)`` blocks, each with its configuration."""
        self.depth = len(cfgs)
        for block, c in zip(self.blocks, cfgs):
            block.set_active(c)


class ElasticLayers:
    """Builds the supernet's layers at their largest sizes, each with its candidate operators and kernels."""

    def __init__(self, space: Space, options: dict | None, aug_op: str, remap: str, kernel_transform: bool):
        self.space, self.options = space, options
        self.conv_kw = dict(options=options, remap=remap, kernel_transform=kernel_transform, aug_op=aug_op)

    def unit(self, where):
        if isinstance(where, tuple):
            choices = self.space.block(*where)
            ops, kernels = choices["op"], choices["kernel"]
        else:
            ops, kernels = (self.space.base[where]["op"],), None

        def make(op, in_ch, out_ch, kernel_size=1, stride=1, groups=1, act="relu6", bn=True, bias=False, dilation=1):
            ks = kernels if kernels and kernel_size > 1 else (kernel_size,)
            return ElasticConvBNAct(in_ch, out_ch, ks, stride, groups > 1, act, bn, bias, ops=tuple(dict.fromkeys(
                (op, *ops))), dilation=dilation, **self.conv_kw)
        return make

    def block(self, c: BlockCfg, where):
        return ELASTIC_BLOCKS[c.kind](c, self.unit(where))

    def stage(self, blocks):
        return ElasticStage(blocks)

    def linear(self, op, in_features, out_features):
        return ElasticLinear(op, in_features, out_features, self.options)

    def seg_head(self, c: SegCfg, num_classes: int):
        return ELASTIC_SEG_HEADS[c.kind](c, num_classes, self.unit("seg"))
