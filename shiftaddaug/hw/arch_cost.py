"""What an architecture costs, without building it: the fast path of ``profile`` and ``count`` for the search.

``arch_cost(arch, ...)`` walks the resolved network (``models.spec.resolve``) layer by layer in the order ``TinyNet``
runs them and costs every layer with the functions ``profile`` uses (``conv_cost``, ``bn_cost``, ...); peak activation
memory follows ``count``'s definition. Each distinct block is costed once and cached, so a search that draws
thousands of architectures maps each distinct layer once. The tests check it against ``profile`` and ``count`` of
the built model, which stay the reference.

A user's latency table (``LatencyTable``) replaces the cost model's latency: the sum of the measured latencies of the
network's conv and linear layers (element-wise work is taken as fused into them, as on most inference engines).
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from ..models import get_spec
from ..models.seg import ASPP_RATES
from ..models.spec import BlockCfg, check_arch, resolve
from ..ops import get_operator
from .constants import const
from .eyeriss import ACCELERATORS, Workload
from .profile import act_cost, binary_cost, bn_cost, conv_cost, pool_cost, resize_cost

_ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish}
TABLE_FIELDS = ("layer", "op", "in_ch", "out_ch", "kernel", "stride", "groups", "in_size", "latency_ms")


@dataclass(frozen=True)
class Cost:
    """One image's cost: the quantities a constraint can bound."""
    energy_uj: float
    latency_ms: float
    macs: int
    params: int
    flash_bytes: int  # weights at their word width (shift: weight_bits), biases and BN at the data width
    sram_bytes: int  # peak activation memory, int8 (MCUNet's definition, as ``count``)
    macs_by_op: tuple = ()  # ((op, MACs), ...)

    def to_dict(self) -> dict:
        d = dict(vars(self))
        d["macs_by_op"] = dict(self.macs_by_op)
        return d


class LatencyTable:
    """Measured latencies of conv and linear layers, one CSV row each (``TABLE_FIELDS``)::

        layer,op,in_ch,out_ch,kernel,stride,groups,in_size,latency_ms
        conv,shift,16,48,1,1,1,28,0.052
        linear,mult,160,10,1,1,1,1,0.004

    ``in_size`` is the input's height (= width; 1 for linear layers), ``groups`` equals ``in_ch`` for a depthwise conv.
    """

    def __init__(self, rows: dict, path: str = "table"):
        self.rows, self.path = rows, path

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                missing = [c for c in TABLE_FIELDS if c not in (reader.fieldnames or [])]
                if missing:
                    raise ValueError(f"latency table {path} lacks the column(s) {', '.join(missing)}; its header must "
                                     f"be {','.join(TABLE_FIELDS)}")
                rows = {}
                for i, r in enumerate(reader, 2):
                    try:
                        key = (r["layer"], r["op"], *(int(r[c]) for c in TABLE_FIELDS[2:-1]))
                        ms = float(r["latency_ms"])
                    except (TypeError, ValueError):
                        raise ValueError(f"latency table {path}, line {i}: in_ch..in_size must be whole numbers and "
                                         f"latency_ms a number") from None
                    if not math.isfinite(ms) or ms < 0:
                        raise ValueError(f"latency table {path}, line {i}: latency_ms={ms} must be >= 0")
                    rows[key] = ms
        except OSError as e:
            raise ValueError(f"cannot read latency table {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"latency table {path} is not a text (CSV) file") from None
        if not rows:
            raise ValueError(f"latency table {path} has no rows")
        return cls(rows, str(path))

    def latency_ms(self, keys) -> float:
        total = 0.0
        for k in keys:
            if k not in self.rows:
                raise ValueError(f"latency table {self.path} has no row for {','.join(map(str, k))} "
                                 f"({','.join(TABLE_FIELDS[:-1])}); measure that layer and add it")
            total += self.rows[k]
        return total


@dataclass(frozen=True)
class _Part:
    energy_pj: float
    cycles: float
    macs: tuple  # ((op, MACs), ...)
    params: int
    flash_bits: int
    peak: int  # elements
    keys: tuple  # latency-table keys of its conv and linear layers


class _Walk:
    """Costs layers in ``TinyNet``'s order, as ``profile`` and ``count`` see them."""

    def __init__(self, bits: int, hw: str, weight_bits: int):
        self.bits, self.hw, self.weight_bits = bits, ACCELERATORS[hw], weight_bits
        self.layers, self.producer, self.peak, self.held = [], None, 0, 0
        self.flash_bits, self.keys = 0, []

    def _mem(self, n_in: int, n_out: int) -> None:
        self.peak = max(self.peak, n_in + n_out + self.held)

    def conv(self, op, cin, cout, k, stride, groups, h, bias) -> int:
        ho = (h - 1) // stride + 1  # padding k // 2, odd k
        wb = self.weight_bits if op == "shift" else self.bits
        wl = Workload(op, groups, cin // groups, cout // groups, h, h, k, k, ho, ho, stride, self.bits, wb)
        weights = cout * (cin // groups) * k * k
        self.layers.append(conv_cost("", wl, self.hw, False, (cin, h, h), (cout, ho, ho), weights + bias * cout,
                                     bool(bias)))
        self.flash_bits += weights * wb + bias * cout * self.bits
        self.keys.append(("conv", op, cin, cout, k, stride, groups, h))
        self.producer = op
        self._mem(cin * h * h, cout * ho * ho)
        return ho

    def bn(self, shape: tuple) -> None:
        c, n = shape[0], math.prod(shape)
        self.layers.append(bn_cost("", shape, self.producer, self.bits, 2 * c))
        self.flash_bits += 2 * c * self.bits
        self._mem(n, n)

    def act(self, name: str | None, shape: tuple) -> None:
        if name is None:
            return  # nn.Identity: free, and not a layer for memory
        n = math.prod(shape)
        self.layers.append(act_cost("", _ACTS[name] if isinstance(name, str) else name, shape, self.bits))
        self._mem(n, n)

    def unit(self, op, cin, cout, h, k=1, stride=1, groups=1, act="relu6", bn=True, bias=False) -> int:
        """``ConvBNAct``: BatchNorm where the operator needs it, a conv bias only without BatchNorm."""
        bn = bn or get_operator(op).needs_bn
        ho = self.conv(op, cin, cout, k, stride, groups, h, bias and not bn)
        if bn:
            self.bn((cout, ho, ho))
        self.act(act, (cout, ho, ho))
        return ho

    def block(self, c: BlockCfg, h: int) -> int:
        if c.kind == "basic":
            return self._basic(c, h)
        if c.shortcut:
            self.held += c.in_ch * h * h
        dw = c.mid or c.in_ch
        if c.mid:
            self.unit(c.op, c.in_ch, c.mid, h, act=c.act)
        ho = self.unit(c.op, dw, dw, h, c.kernel, c.stride, dw, c.act)
        if c.se_mid:
            shape = (dw, ho, ho)
            self.layers.append(pool_cost("", shape, (dw, 1, 1), self.bits))
            self.unit(c.op, dw, c.se_mid, 1, act="relu", bn=False, bias=True)
            self.unit(c.op, c.se_mid, dw, 1, act=None, bn=False, bias=True)
            self.act(nn.Hardsigmoid, (dw, 1, 1))
            n = math.prod(shape)
            self.layers.append(binary_cost("", "mult", shape, shape, self.bits, min(n, dw) == n))
        self.unit(c.op, dw, c.out_ch, ho, act=None)
        if c.shortcut:
            shape = (c.out_ch, ho, ho)
            self.layers.append(binary_cost("", "add", shape, shape, self.bits, True))
            self.held -= c.in_ch * h * h
        return ho

    def _basic(self, c: BlockCfg, h: int) -> int:
        if c.shortcut:
            self.held += c.in_ch * h * h
        else:
            self.unit(c.op, c.in_ch, c.out_ch, h, 1, c.stride, act=None)
        ho = self.unit(c.op, c.in_ch, c.mid, h, c.kernel, c.stride, act="relu")
        self.unit(c.op, c.mid, c.out_ch, ho, c.kernel, act=None)
        shape = (c.out_ch, ho, ho)
        self.layers.append(binary_cost("", "add", shape, shape, self.bits, True))
        self.act("relu", shape)
        if c.shortcut:
            self.held -= c.in_ch * h * h
        return ho

    def part(self) -> _Part:
        macs: dict[str, int] = {}
        for lc in self.layers:
            if lc.op is not None:
                macs[lc.op] = macs.get(lc.op, 0) + lc.macs
        return _Part(sum(lc.energy_pj for lc in self.layers), sum(lc.latency_cycles for lc in self.layers),
                     tuple(sorted(macs.items())), sum(lc.params for lc in self.layers), self.flash_bits, self.peak,
                     tuple(self.keys))


@functools.cache
def _block(c: BlockCfg, h: int, bits: int, hw: str, weight_bits: int) -> tuple[_Part, int]:
    w = _Walk(bits, hw, weight_bits)
    ho = w.block(c, h)
    return w.part(), ho


def _pool_head(head: _Walk, cfg, ch: int, h: int, num_classes: int) -> None:
    """``final_expand`` -> global pool -> ``feature_mix`` -> classifier (and its BatchNorm), as ``TinyNet`` runs."""
    if cfg.final_expand:
        head.unit(cfg.head_op, ch, cfg.final_expand, h, act=cfg.head_act)
        ch = cfg.final_expand
    head.layers.append(pool_cost("", (ch, h, h), (ch, 1, 1), head.bits))
    if cfg.feature_mix:
        head.unit(cfg.head_op, ch, cfg.feature_mix, 1, act=cfg.head_act, bn=False, bias=True)
        ch = cfg.feature_mix
    op = cfg.classifier_op
    wb = head.weight_bits if op == "shift" else head.bits
    head.layers.append(conv_cost("", Workload(op, 1, ch, num_classes, 1, 1, 1, 1, 1, 1, 1, head.bits, wb), head.hw,
                                 True, (ch,), (num_classes,), ch * num_classes + num_classes, True))
    head.flash_bits += ch * num_classes * wb + num_classes * head.bits
    head.keys.append(("linear", op, ch, num_classes, 1, 1, 1, 1))
    head.producer = op
    head._mem(ch, num_classes)
    if get_operator(op).needs_bn:
        head.bn((num_classes,))


def _lraspp_head(head: _Walk, c, num_classes: int, low_h: int, h: int, resolution: int) -> None:
    """LR-ASPP in ``LRASPP.forward``'s order: the low-level features stay alive until their class conv, the high
    branch's logits while that conv runs; then the sum is resized to the input."""
    head.held = c.low_ch * low_h * low_h
    head.layers.append(pool_cost("", (c.high_ch, h, h), (c.high_ch, 1, 1), head.bits))
    head.unit(c.op, c.high_ch, c.width, 1, act=None, bn=False, bias=True)
    head.act(nn.Hardsigmoid, (c.width, 1, 1))
    head.unit(c.op, c.high_ch, c.width, h, act="relu")
    gated, up = (c.width, h, h), (c.width, low_h, low_h)
    head.layers.append(binary_cost("", "mult", gated, gated, head.bits, False))
    head.layers.append(resize_cost("", gated, up, head.bits))
    head._mem(math.prod(gated), math.prod(up))
    head.unit(c.classifier_op, c.width, num_classes, low_h, act=None, bn=False, bias=True)
    head.held = num_classes * low_h * low_h
    head.unit(c.classifier_op, c.low_ch, num_classes, low_h, act=None, bn=False, bias=True)
    head.held = 0
    logits = (num_classes, low_h, low_h)
    head.layers.append(binary_cost("", "add", logits, logits, head.bits, True))
    _resize_logits(head, num_classes, low_h, resolution)


def _aspp_head(head: _Walk, c, num_classes: int, low_h: int, h: int, resolution: int) -> None:
    """ASPP in ``ASPP.forward``'s order: its input stays alive through every branch, and from the first branch's
    projection on the accumulator of the projections (at full size), until the ReLU that ends the sum."""
    x, acc = c.high_ch * h * h, c.width * h * h
    head.held = x
    head.layers.append(pool_cost("", (c.high_ch, h, h), (c.high_ch, 1, 1), head.bits))
    head.unit(c.op, c.high_ch, c.width, 1, act="relu", bn=False, bias=True)
    head.unit(c.op, c.width, c.width, 1, act=None)
    for i, rate in enumerate((None, *ASPP_RATES)):
        if rate is not None:
            head.unit(c.op, c.high_ch, c.high_ch, h, 3, groups=c.high_ch, act="relu")
        head.unit(c.op, c.high_ch, c.width, h, act="relu")
        head.unit(c.op, c.width, c.width, h, act=None)
        head.held = x + acc
        shape = (c.width, h, h)
        head.layers.append(binary_cost("", "add", (c.width, 1, 1) if i == 0 else shape, shape, head.bits, i > 0))
    head.held = 0
    head.act("relu", (c.width, h, h))
    head.unit(c.classifier_op, c.width, num_classes, h, act=None, bn=False, bias=True)
    _resize_logits(head, num_classes, h, resolution)


def _resize_logits(head: _Walk, num_classes: int, h: int, resolution: int) -> None:
    logits = (num_classes, h, h)
    head.layers.append(resize_cost("", logits, (num_classes, resolution, resolution), head.bits))
    head._mem(math.prod(logits), num_classes * resolution * resolution)


_SEG_HEADS = {"lraspp": _lraspp_head, "aspp": _aspp_head}


def arch_cost(arch: dict, num_classes: int = 1000, in_chans: int = 3, bits: int = 32, hw: str = "eyeriss",
              op_options: dict | None = None, table: LatencyTable | None = None) -> Cost:
    """One image's cost of the plain model of ``arch`` (as ``create_model`` would build it): energy and latency on
    the Eyeriss-like model (or latency from ``table``), MACs, parameters, flash and peak SRAM bytes."""
    spec = get_spec(arch["model"])
    check_arch(arch, spec)
    cfg = resolve(arch, spec)
    weight_bits = get_operator("shift").layer_options(op_options)["weight_bits"]
    stem = _Walk(bits, hw, weight_bits)
    h = stem.unit(cfg.stem_op, in_chans, cfg.stem, arch["resolution"], 3, cfg.stem_stride, act=cfg.stem_act)
    parts = [stem.part()]
    ch, sizes, held = cfg.stem, [], 0  # held: the low-level features a segmentation head waits for
    for si, blocks in enumerate(cfg.stages):
        for c in blocks:
            part, h = _block(c, h, bits, hw, weight_bits)
            parts.append(dataclasses.replace(part, peak=part.peak + held) if held else part)
            ch = c.out_ch
        sizes.append(h)
        if cfg.seg is not None and si == cfg.seg.low_stage:
            held = ch * h * h
    head = _Walk(bits, hw, weight_bits)
    if cfg.seg is not None:
        low_h = h if cfg.seg.low_stage is None else sizes[cfg.seg.low_stage]
        _SEG_HEADS[cfg.seg.kind](head, cfg.seg, num_classes, low_h, h, arch["resolution"])
    else:
        _pool_head(head, cfg, ch, h, num_classes)
    parts.append(head.part())

    macs: dict[str, int] = {}
    for p in parts:
        for o, n in p.macs:
            macs[o] = macs.get(o, 0) + n
    cycles = sum(p.cycles for p in parts)
    latency = table.latency_ms(k for p in parts for k in p.keys) if table else cycles / const("clock_hz") * 1e3
    return Cost(sum(p.energy_pj for p in parts) / 1e6, latency, sum(macs.values()), sum(p.params for p in parts),
                math.ceil(sum(p.flash_bits for p in parts) / 8), max(p.peak for p in parts),
                tuple(sorted(macs.items())))


__all__ = ["arch_cost", "Cost", "LatencyTable", "TABLE_FIELDS"]
