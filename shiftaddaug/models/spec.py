"""Model families as spec tables, architectures as plain data, and the one rule that turns both into channels.

A ``NetSpec`` is a family's skeleton (stem, stages of blocks, head, base widths). An *architecture* is a plain,
JSON-serialisable dict that picks, inside that skeleton, per block the kernel, expand ratio and operator, per stage
the depth (its first ``depth`` blocks run) and a width multiplier per width point, and the input resolution::

    {"model": "mcunet", "resolution": 176,
     "stem": {"width": 1.0, "op": "mult"},
     "stages": [{"width": 1.0, "depth": 1, "blocks": [{"kernel": 3, "expand": null, "op": "shift"}]}, ...],
     "head": {"width": 1.0, "op": "shift"}, "classifier": {"op": "mult"}}

An optional ``"seg": {"head": "lraspp", "width": 1.0, "op": "shift", "output_stride": 8}`` makes it a segmentation
network (``models/seg.py``); ``output_stride`` (optional) trades the strides beyond it for dilation.

``resolve`` turns (spec, architecture) into per-layer channel counts; the plain model (``create_model``) and the
elastic supernet (``shiftaddaug.augment``) both build from it, so a sub-network and its export always agree.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..ops import get_operator
from .seg import SEG_HEADS, SegCfg, seg_cfg

OUTPUT_STRIDES = (8, 16, 32)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor`` without going more than 10 % below it (MobileNet rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


@dataclass(frozen=True)
class StageSpec:
    out: int  # output channels at width 1
    expand: Sequence[float | None]  # per block: expand ratio (absolute middle width when ``absolute_mid``); None: no
    kernel: Sequence[int]  # expansion layer (a depthwise-separable block)
    stride: int
    act: str = "relu6"
    se: bool = False
    block: str = "ir"  # "ir": inverted residual (expand ratio = middle / input width); "basic": ResNet basic block
    # (expand ratio = inner / output width)
    first_shortcut: bool = False  # the first block keeps an identity shortcut when its shapes allow (later ones do)


@dataclass(frozen=True)
class NetSpec:
    stem: int
    stages: Sequence[StageSpec]
    final_expand: int | None = None  # 1x1 conv before pooling
    feature_mix: int | None = None  # 1x1 conv with bias after pooling, no BN (MobileNetV3)
    stem_act: str = "relu6"
    stem_stride: int = 2
    head_act: str = "relu6"
    absolute_mid: bool = False  # MobileNetV3 lists middle widths; others list expand ratios
    res: int = 224
    small_input: int = 64  # inputs of this size or less keep full resolution in the stem and first strided stage
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BlockCfg:
    """One block, resolved: channels, kernel, stride, operator."""
    kind: str
    in_ch: int
    out_ch: int
    mid: int | None  # middle (ir) or inner (basic) width; None: no expansion layer
    kernel: int
    stride: int
    act: str
    se_mid: int | None  # squeeze-excite width, None: no SE
    shortcut: bool  # identity shortcut (basic blocks without one project theirs)
    op: str
    dilation: int = 1  # of its kxk convolutions: a stride traded for dilation (a segmentation output stride)


@dataclass(frozen=True)
class NetCfg:
    """A whole network, resolved: what ``TinyNet`` builds."""
    stem: int
    stem_stride: int
    stem_act: str
    stem_op: str
    stages: tuple  # of tuples of BlockCfg, the blocks that run
    final_expand: int | None
    feature_mix: int | None
    head_act: str
    head_op: str
    classifier_op: str
    seg: SegCfg | None = None  # a segmentation head instead of pooling and the classifier

    def feature_info(self) -> list[dict]:
        """Per stage: its output channels and its output's reduction from the input (timm's ``feature_info``)."""
        info, reduction = [], self.stem_stride
        for i, blocks in enumerate(self.stages):
            reduction *= blocks[0].stride
            info.append({"stage": i, "channels": blocks[-1].out_ch, "reduction": reduction})
        return info


class ArchError(ValueError):
    """A malformed architecture; the message names the field."""


def _small(spec: NetSpec, resolution: int) -> bool:
    return resolution <= spec.small_input


def strides(spec: NetSpec, resolution: int) -> tuple[int, list[int]]:
    """Stem stride and per-stage stride; small inputs keep full resolution in the stem and first strided stage."""
    stem, stage = spec.stem_stride, [s.stride for s in spec.stages]
    if _small(spec, resolution):
        stem = 1
        first = next((i for i, s in enumerate(stage) if s > 1), None)
        if first is not None:
            stage[first] = 1
    return stem, stage


def dilate(stem_stride: int, stage_strides: list[int], output_stride: int | None) -> tuple[list[int], list[int]]:
    """Per-stage strides and dilations for ``output_stride`` (DeepLab): a stride that would take the reduction past
    it becomes 1 and multiplies the dilation of that stage's and every later stage's kxk convolutions."""
    reduction, dilation, out, dilations = stem_stride, 1, [], []
    for s in stage_strides:
        if output_stride is not None and reduction * s > output_stride:
            dilation, s = dilation * s, 1
        reduction *= s
        out.append(s)
        dilations.append(dilation)
    return out, dilations


def tied(spec: NetSpec, i: int) -> bool:
    """Stage ``i``'s first block has an identity shortcut at every width: its width is its input's."""
    s, prev = spec.stages[i], (spec.stem if i == 0 else spec.stages[i - 1].out)
    return s.first_shortcut and s.stride == 1 and prev == s.out


def width_of(base: int, mult: float) -> int:
    return max(1, round(base * mult))


def default_arch(name: str, spec: NetSpec, op: str = "mult", mf_stem_head: bool = False,
                 resolution: int | None = None, seg_head: str | None = None, output_stride: int | None = None) -> dict:
    """The zoo model's own architecture: the spec's kernels and expand ratios, every block ``op``; ``seg_head``
    (``"lraspp"``, ``"aspp"``) makes it a segmentation network with that head, of operator ``op``, at
    ``output_stride`` (None: the backbone's own)."""
    edge = op if mf_stem_head else "mult"
    stages, in_ch = [], spec.stem
    for s in spec.stages:
        blocks = []
        for e, k in zip(s.expand, s.kernel):
            if e is not None and spec.absolute_mid:  # MobileNetV3's listed middle widths, as ratios
                e = make_divisible(e * 0.35) / in_ch
            elif e is not None and s.block == "ir":
                e = make_divisible(round(e * in_ch)) / in_ch
            blocks.append({"kernel": k, "expand": e, "op": op})
            in_ch = s.out
        stages.append({"width": 1.0, "depth": len(blocks), "blocks": blocks})
    arch = {"model": name, "resolution": resolution or spec.res, "stem": {"width": 1.0, "op": edge},
            "stages": stages, "head": {"width": 1.0, "op": op}, "classifier": {"op": edge}}
    if seg_head is not None:
        arch["seg"] = {"head": seg_head, "width": 1.0, "op": op}
        if output_stride is not None:
            arch["seg"]["output_stride"] = output_stride
    return arch


def _need(d, key, where, kind):
    if not isinstance(d, dict) or key not in d:
        raise ArchError(f"arch: {where} needs a {key!r} entry")
    v = d[key]
    ok = {"int": isinstance(v, int) and not isinstance(v, bool),
          "num": isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
          "str": isinstance(v, str), "list": isinstance(v, list)}[kind]
    if not ok:
        what = {"num": "number", "int": "whole number", "str": "string", "list": "list"}[kind]
        raise ArchError(f"arch: {where}.{key}={v!r} is not a {what}")
    return v


def _op(d, where):
    name = _need(d, "op", where, "str")
    try:
        get_operator(name)
    except ValueError as e:
        raise ArchError(f"arch: {where}.op: {e}") from None
    return name


def check_arch(arch: dict, spec: NetSpec) -> None:
    """Stop with a one-line ``ArchError`` naming the field when ``arch`` does not describe a network of ``spec``."""
    if not isinstance(arch, dict):
        raise ArchError(f"arch must be a dict (JSON object), not {type(arch).__name__}")
    if _need(arch, "resolution", "arch", "int") < 1:
        raise ArchError(f"arch: resolution={arch['resolution']} must be a positive whole number")
    for part in ("stem", "head"):
        if _need(arch.get(part), "width", part, "num") <= 0:
            raise ArchError(f"arch: {part}.width={arch[part]['width']} must be positive")
    for part in ("stem", "head", "classifier"):
        _op(arch.get(part), part)
    if "seg" in arch:
        head = _need(arch["seg"], "head", "seg", "str")
        if head not in SEG_HEADS:
            raise ArchError(f"arch: seg.head={head!r} is not a segmentation head; choose one of {', '.join(SEG_HEADS)}")
        if _need(arch["seg"], "width", "seg", "num") <= 0:
            raise ArchError(f"arch: seg.width={arch['seg']['width']} must be positive")
        _op(arch["seg"], "seg")
        os_ = arch["seg"].get("output_stride")
        if os_ is not None and os_ not in OUTPUT_STRIDES:
            raise ArchError(f"arch: seg.output_stride={os_!r} must be one of {', '.join(map(str, OUTPUT_STRIDES))} "
                            "or null (the backbone's own)")
    stages = _need(arch, "stages", "arch", "list")
    if len(stages) != len(spec.stages):
        raise ArchError(f"arch: stages has {len(stages)} entries but the model has {len(spec.stages)} stages")
    for i, (st, ss) in enumerate(zip(stages, spec.stages)):
        where = f"stages[{i}]"
        if _need(st, "width", where, "num") <= 0:
            raise ArchError(f"arch: {where}.width={st['width']} must be positive")
        blocks, depth = _need(st, "blocks", where, "list"), _need(st, "depth", where, "int")
        if not blocks:
            raise ArchError(f"arch: {where}.blocks is empty")
        if not 1 <= depth <= len(blocks):
            raise ArchError(f"arch: {where}.depth={depth} must be between 1 and its {len(blocks)} listed blocks")
        if ss.expand[0] is None and len(blocks) != 1:
            raise ArchError(f"arch: {where} is the model's fixed first block: it has exactly one block")
        for j, b in enumerate(blocks):
            w = f"{where}.blocks[{j}]"
            k = _need(b, "kernel", w, "int")
            if k < 1 or k % 2 == 0:
                raise ArchError(f"arch: {w}.kernel={k} must be odd and positive")
            _op(b, w)
            e = b.get("expand") if isinstance(b, dict) else None
            if ss.expand[0] is None:
                if e is not None:
                    raise ArchError(f"arch: {w}.expand={e!r} must be null: this block has no expansion layer")
            elif _need(b, "expand", w, "num") <= 0:
                raise ArchError(f"arch: {w}.expand={e} must be positive")
    if tied_mismatch := [i for i in range(len(spec.stages)) if tied(spec, i) and
                         stages[i]["width"] != (arch["stem"]["width"] if i == 0 else stages[i - 1]["width"])]:
        i = tied_mismatch[0]
        raise ArchError(f"arch: stages[{i}].width must equal the width before it: its first block keeps an "
                        "identity shortcut")


def resolve(arch: dict, spec: NetSpec) -> NetCfg:
    """Per-layer channels of ``arch`` (checked by ``check_arch`` first): widths ``round(base x multiplier)``, middle
    widths ``round(expand x input)`` (``x output`` for basic blocks)."""
    stem_stride, stage_strides = strides(spec, arch["resolution"])
    stage_strides, dilations = dilate(stem_stride, stage_strides, arch.get("seg", {}).get("output_stride"))
    c = stem = width_of(spec.stem, arch["stem"]["width"])
    stages = []
    for i, (st, ss) in enumerate(zip(arch["stages"], spec.stages)):
        out = c if tied(spec, i) else width_of(ss.out, st["width"])
        blocks = []
        for j, b in enumerate(st["blocks"][: st["depth"]]):
            stride = stage_strides[i] if j == 0 else 1
            shortcut = (j > 0 or ss.first_shortcut) and stride == 1 and c == out
            if b["expand"] is None:
                mid = None
            else:
                mid = max(1, round(b["expand"] * (out if ss.block == "basic" else c)))
            se_mid = max(make_divisible((mid or c) / 4), 16) if ss.se else None
            blocks.append(BlockCfg(ss.block, c, out, mid, b["kernel"], stride, ss.act, se_mid, shortcut, b["op"],
                                   dilations[i]))
            c = out
        stages.append(tuple(blocks))
    if "seg" in arch:  # no pooling head: the segmentation head takes the stages
        return NetCfg(stem, stem_stride, spec.stem_act, arch["stem"]["op"], tuple(stages), None, None, spec.head_act,
                      arch["head"]["op"], arch["classifier"]["op"], seg_cfg(arch, stages, stage_strides))
    final = width_of(spec.final_expand, arch["head"]["width"]) if spec.final_expand else None
    return NetCfg(stem, stem_stride, spec.stem_act, arch["stem"]["op"], tuple(stages), final, spec.feature_mix,
                  spec.head_act, arch["head"]["op"], arch["classifier"]["op"])


def load_arch(path: str | Path) -> dict:
    """An architecture from a JSON file; a one-line ``ArchError`` when it cannot be read."""
    try:
        arch = json.loads(Path(path).read_text())
    except OSError as e:
        raise ArchError(f"cannot read architecture {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ArchError(f"architecture {path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(arch, dict) or not isinstance(arch.get("model"), str):
        raise ArchError(f"architecture {path} needs a \"model\" entry naming the model family it belongs to")
    return arch


__all__ = ["NetSpec", "StageSpec", "BlockCfg", "NetCfg", "ArchError", "default_arch", "check_arch", "resolve",
           "load_arch", "make_divisible", "strides", "dilate", "tied", "width_of"]
