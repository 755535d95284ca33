"""``profile(model, input_size)``: per-layer operations, memory accesses, energy and latency on an Eyeriss-like
accelerator, from one forward pass of one image.

Conv and linear layers are mapped by ``eyeriss.map_layer``. Everything else the forward pass computes is counted
too, as vector work on the PE array (one operation per PE lane per cycle):
- BatchNorm: at 32 bit (float) BN folds into a multiplicative conv's weights (one bias add per element), but not
  into shift or adder weights (a multiply and an add per element: powers of two and L1 distances do not absorb a
  scale). At 16/8 bit BN's scale folds into the requantisation multiplier of any layer (one add per element).
- requantisation (16/8 bit only): one multiply and one shift per conv/linear output element.
- activations: comparisons count as adds (ReLU 1, ReLU6 2; hard-sigmoid and hard-swish add their multiplies).
- residual adds and gating multiplies in ``forward`` code (seen through ``TorchFunctionMode``): one op per output
  element, and the second operand is read back from DRAM through the global buffer.
- means and pools: one add per reduced element and one multiply per output.
BN, activations, requantisation and pools are fused into the producing layer's output stream: they cost compute
and cycles, no extra memory traffic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from ..models.seg import Resize
from ..ops import OPERATORS, get_operator, op_of
from .constants import BITS, const, op_energy
from .eyeriss import ACCELERATORS, Accelerator, Workload, map_layer, ops_per_mac

# per-element (mult, add) of activation modules; comparisons count as adds
_ACT_OPS = {nn.ReLU: (0, 1), nn.ReLU6: (0, 2), nn.Hardtanh: (0, 2), nn.Hardsigmoid: (1, 3), nn.Hardswish: (2, 3)}
_FREE = (nn.Identity, nn.Dropout, nn.Flatten)
_BINARY = {"__add__": "add", "__radd__": "add", "__iadd__": "add", "add": "add", "add_": "add",
           "__mul__": "mult", "__rmul__": "mult", "__imul__": "mult", "mul": "mult", "mul_": "mult"}
_LEVELS = ("dram", "gb", "noc", "rf")


@dataclass
class LayerCost:
    name: str
    type: str  # conv | linear | bn | act | add | mul | pool
    op: str | None  # operator of a conv/linear layer
    in_shape: tuple
    out_shape: tuple
    macs: int = 0
    ops: dict = field(default_factory=dict)  # op -> {bits: count}
    accesses: dict = field(default_factory=lambda: dict.fromkeys(_LEVELS, 0.0))  # level -> words
    energy: dict = field(default_factory=dict)  # "compute" and each level -> pJ
    latency_cycles: float = 0.0
    params: int = 0
    tiling: dict | None = None

    @property
    def energy_pj(self) -> float:
        return sum(self.energy.values())

    def count(self, op: str) -> int:
        return sum(self.ops.get(op, {}).values())

    def to_dict(self) -> dict:
        d = dict(vars(self))
        d.update(energy_pj=self.energy_pj, ops={k: {str(b): n for b, n in v.items()} for k, v in self.ops.items()})
        return d


@dataclass
class Profile:
    bits: int
    hw: str
    params: int
    layers: list

    @property
    def total(self) -> dict:
        t = {"macs": sum(lc.macs for lc in self.layers), "params": self.params,
             **{op: sum(lc.count(op) for lc in self.layers) for op in ("mult", "add", "shift")},
             "energy_pj": sum(lc.energy_pj for lc in self.layers),
             "latency_cycles": sum(lc.latency_cycles for lc in self.layers)}
        t["latency_ms"] = t["latency_cycles"] / const("clock_hz") * 1e3
        t["macs_by_op"] = {op: sum(lc.macs for lc in self.layers if lc.op == op) for op in OPERATORS}
        t["energy_by_level"] = {k: sum(lc.energy.get(k, 0.0) for lc in self.layers) for k in ("compute", *_LEVELS)}
        by_class: dict[str, float] = {}
        for lc in self.layers:
            key = lc.op or "vector"
            by_class[key] = by_class.get(key, 0.0) + lc.energy_pj
        t["energy_by_class"] = by_class
        return t

    def to_dict(self) -> dict:
        return {"bits": self.bits, "hw": self.hw, "total": self.total, "layers": [lc.to_dict() for lc in self.layers]}


def _vector(rec: LayerCost, mult: int, add: int, shift: int, bits: int, dram_words: int = 0) -> LayerCost:
    """Fill in the compute, memory and cycles of element-wise work on the PE array."""
    lanes = const("pe_rows") * const("pe_cols") * const(f"cmp_factor_{bits}")
    for op, n in (("mult", mult), ("add", add), ("shift", shift)):
        if n:
            per_bits = rec.ops.setdefault(op, {})
            per_bits[bits] = per_bits.get(bits, 0) + n
            rec.energy["compute"] = rec.energy.get("compute", 0.0) + n * op_energy(op, bits)
    if dram_words:  # an operand read from DRAM into the global buffer, then out to the array
        rec.accesses["dram"] += dram_words
        rec.accesses["gb"] += 2 * dram_words
        rec.energy["dram"] = rec.energy.get("dram", 0.0) + dram_words * bits / 16 * const("e_dram")
        rec.energy["gb"] = rec.energy.get("gb", 0.0) + 2 * dram_words * bits / 16 * const("e_gb")
    rec.latency_cycles += max((mult + add + shift) / lanes, dram_words * bits / const("dram_bits_per_cycle"))
    return rec


def conv_cost(name: str, wl: Workload, hw: Accelerator, linear: bool, in_shape: tuple, out_shape: tuple, params: int,
              bias: bool) -> LayerCost:
    """A conv (or linear) layer: its row-stationary mapping, plus a bias add and requantisation per output."""
    mp = map_layer(wl, hw)
    ops = {k: {wl.bits: v * wl.macs} for k, v in ops_per_mac(wl.op, hw).items()}
    rec = LayerCost(name, "linear" if linear else "conv", wl.op, in_shape, out_shape, wl.macs, ops,
                    dict(mp.accesses), dict(mp.energy), mp.cycles, params, mp.tiling)
    n = math.prod(out_shape)
    requant = n if wl.bits < 32 else 0
    return _vector(rec, requant, n if bias else 0, requant, wl.bits)


def bn_cost(name: str, shape: tuple, producer: str | None, bits: int, params: int) -> LayerCost:
    """BatchNorm after a layer of operator ``producer``; see the module docstring for when its scale folds."""
    n = math.prod(shape)
    scale = bits == 32 and (producer is None or get_operator(producer).multiplication_free)
    return _vector(LayerCost(name, "bn", None, shape, shape, params=params), n if scale else 0, n, 0, bits)


def act_cost(name: str, act: type, shape: tuple, bits: int) -> LayerCost:
    mult, add = _ACT_OPS[act]
    n = math.prod(shape)
    return _vector(LayerCost(name, "act", None, shape, shape), mult * n, add * n, 0, bits)


def pool_cost(name: str, in_shape: tuple, out_shape: tuple, bits: int, average: bool = True) -> LayerCost:
    """Average (one add per reduced element, one multiply per output) or max pooling (comparisons as adds)."""
    n = math.prod(out_shape)
    return _vector(LayerCost(name, "pool", None, in_shape, out_shape), n if average else 0,
                   math.prod(in_shape) - n, 0, bits)


def binary_cost(name: str, kind: str, in_shape: tuple, out_shape: tuple, bits: int, residual: bool) -> LayerCost:
    """An element-wise add or multiply in ``forward`` code; a full-size second operand (a residual) comes back from
    DRAM through the global buffer, a broadcast gate stays on chip."""
    n = math.prod(out_shape)
    typ = "add" if kind == "add" else "mul"
    return _vector(LayerCost(name, typ, None, in_shape, out_shape), n if kind == "mult" else 0,
                   n if kind == "add" else 0, 0, bits, n if residual else 0)


def resize_cost(name: str, in_shape: tuple, out_shape: tuple, bits: int) -> LayerCost:
    """Bilinear resizing: three linear interpolations per output element, each a multiply and two adds (for the
    power-of-two scales of a segmentation head the weights are dyadic, so shift hardware needs no multiplier;
    the Eyeriss-like model still counts multiplies)."""
    n = math.prod(out_shape)
    return _vector(LayerCost(name, "resize", None, in_shape, out_shape), 3 * n, 6 * n, 0, bits)


class _Recorder(TorchFunctionMode):
    """Sees the element-wise arithmetic written in ``forward`` code (residual adds, gates, means)."""

    def __init__(self, profiler: _Profiler):
        super().__init__()
        self.p = profiler

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.p.depth == 0 and isinstance(out, torch.Tensor):
            self.p.functional(getattr(func, "__name__", ""), args, out)
        return out


class _Profiler:
    def __init__(self, bits: int, hw: str):
        self.bits, self.hw = bits, ACCELERATORS[hw]
        self.layers: list[LayerCost] = []
        self.depth, self.producer = 0, None

    def _name(self, kind: str) -> str:
        return f"{kind}.{sum(1 for lc in self.layers if lc.type == kind)}"

    def functional(self, fname: str, args, out: torch.Tensor) -> None:
        if fname in _BINARY:
            n = out[0].numel()
            others = [a for a in args if isinstance(a, torch.Tensor)]
            second = min((a[0].numel() if a.dim() == out.dim() else a.numel() for a in others), default=0)
            kind = _BINARY[fname]
            in_shape = tuple(args[0].shape[1:]) if isinstance(args[0], torch.Tensor) else ()
            self.layers.append(binary_cost(self._name("add" if kind == "add" else "mul"), kind, in_shape,
                                           tuple(out.shape[1:]), self.bits, len(others) == 2 and second == n))
        elif fname == "mean":
            self.layers.append(pool_cost(self._name("pool"), tuple(args[0].shape[1:]), tuple(out.shape[1:]),
                                         self.bits))

    def module(self, name: str, m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
        shapes = (tuple(x.shape[1:]), tuple(out.shape[1:]))
        op = op_of(m)
        if op is not None:
            self.layers.append(conv_cost(name, workload(m, op, x, out, self.bits), self.hw,
                                         not isinstance(m, nn.Conv2d), *shapes, _params(m),
                                         getattr(m, "bias", None) is not None))
            self.producer = op
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            self.layers.append(bn_cost(name, shapes[1], self.producer, self.bits, _params(m)))
        elif type(m) in _ACT_OPS:
            self.layers.append(act_cost(name, type(m), shapes[1], self.bits))
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool2d)):
            average = isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d))
            self.layers.append(pool_cost(name, *shapes, self.bits, average))
        elif isinstance(m, Resize):
            self.layers.append(resize_cost(name, *shapes, self.bits))
        elif not isinstance(m, _FREE):
            raise ValueError(f"the cost model does not know {type(m).__name__} ({name}); "
                             f"add it to shiftaddaug/hw/profile.py")


def workload(m: nn.Module, op: str, x: torch.Tensor, out: torch.Tensor, bits: int) -> Workload:
    """The mapping problem of a conv or linear layer on one image."""
    if isinstance(m, nn.Conv2d):
        g = m.groups
        return Workload(op, g, m.in_channels // g, m.out_channels // g, x.shape[2], x.shape[3], m.kernel_size[0],
                        m.kernel_size[1], out.shape[2], out.shape[3], m.stride[0], bits,
                        getattr(m, "weight_bits", bits))
    return Workload(op, 1, m.in_features, m.out_features, 1, 1, 1, 1, 1, 1, 1, bits, getattr(m, "weight_bits", bits))


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters(recurse=False))


@torch.no_grad()
def profile(model: nn.Module, input_size: int | tuple, bits: int = 32, hw: str = "eyeriss",
            in_chans: int = 3) -> Profile:
    """Cost of one image at ``input_size`` on the accelerator ``hw`` (``"eyeriss"`` or ``"shiftaddnas"``, the
    latter with ShiftAddNAS's simplifications) with ``bits``-wide data (32: float, 16/8: fixed point)."""
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits}")
    if hw not in ACCELERATORS:
        raise ValueError(f"unknown hardware {hw!r}; choose one of {', '.join(ACCELERATORS)}")
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    p = _Profiler(bits, hw)
    hooks = []

    def pre(m, inp):
        p.depth += 1

    def post_for(name):
        def post(m, inp, out):
            p.depth -= 1
            if p.depth == 0:
                p.module(name, m, inp[0], out)
        return post

    for name, m in model.named_modules():
        if not list(m.children()):
            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post_for(name))]
    was_training = model.training
    model.eval()
    try:
        with _Recorder(p):
            model(torch.zeros(1, in_chans, *size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return Profile(bits, hw, sum(q.numel() for q in model.parameters()), p.layers)
