"""Row-stationary (Eyeriss-like) mapping of one conv/linear layer: exhaustive tiling search, accesses, energy, cycles.

Loop nest (ShiftAddNAS's analytic model, read from its ``hw_utils.py``; written anew here): per group of a
grouped conv, batch ``N = N0*N3``, filters ``M = M0*M1*M2*M3``, input channels ``C = C0*C1*C2``, output rows
``E = E1*E3``, and groups ``G = G1*G3`` (our extension: ``G1`` groups side by side on the array, groups share no
data). Level 0 is the PE register file, 1 the PE array (spatial), 2 the global buffer, 3 DRAM. Constraints:
``M0 <= psum RF``, ``C0*S <= ifmap RF``, ``M0*C0*S <= weight RF``, ``M1*C1*E1*R*G1 <= PEs`` and the ifmap tile
plus the psum tile fit the global buffer. Among the valid tilings we take the one minimising
``energy/min_energy + cycles/min_cycles`` (ShiftAddNAS normalises by the maximum instead; the ratio form is
scale-free and equally simple).

Access counts (words of the datum's width; energy scales each by width/16):
- DRAM: ifmap once per outer filter tile (``M3``), weights once per outer batch and row tile (``N3*E3``),
  ofmap written once (input channels are never split at DRAM level, so no psum spills there).
- global buffer: ifmap written once per ``M3`` and read once per ``M3*M2``; psums written and read once per
  input-channel pass ``C2`` (``2*C2`` accesses per output, the last read sends it to DRAM).
- NoC: ifmap multicast to ``M1`` filter sets and ``R*E/H`` diagonal PEs; weights to ``E1`` PEs per outer
  ``N3*E3``; psums passed through ``C1*R`` PEs per ``C2`` pass.
- RF: every MAC reads an ifmap and a weight and reads and writes a psum.
Cycles: ``G3*N*M3*M2*M0*C2*C0*E3*F*S`` (a PE does its ``M0*C0*S*F`` MACs in sequence; the array works on
``M1*C1*E1*R*G1`` of them at once), and at least the DRAM traffic divided by the interface width.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..ops.registry import get_operator
from .constants import BITS, const, op_energy


@dataclass(frozen=True)
class Accelerator:
    """Modelling choices. ``eyeriss`` is ours; ``shiftaddnas`` switches on ShiftAddNAS's simplifications."""

    name: str
    accumulate: bool = True  # a MAC is the operator plus an accumulating add
    shift_word_bits: int | None = None  # every word of a shift layer at this width (ShiftAddNAS: 10)
    shift_cycle_div: float = 1.0  # shift layers' cycles divided by this (ShiftAddNAS: 3.2)
    adder_on_chip: bool = False  # adder layers' DRAM, buffer and ifmap/weight NoC accesses free (ShiftAddNAS)
    dram_bound: bool = True  # cycles are at least the DRAM transfer time


ACCELERATORS = {
    "eyeriss": Accelerator("eyeriss"),
    "shiftaddnas": Accelerator("shiftaddnas", accumulate=False, shift_word_bits=10, shift_cycle_div=3.2,
                               adder_on_chip=True, dram_bound=False),
}


@dataclass(frozen=True)
class Workload:
    """One conv (or linear: ``h=w=e=f=r=s=1``) layer; ``c`` and ``m`` are per group."""

    op: str
    g: int
    c: int
    m: int
    h: int
    w: int
    r: int
    s: int
    e: int
    f: int
    stride: int
    bits: int
    weight_bits: int
    n: int = 1

    @property
    def macs(self) -> int:
        return self.n * self.g * self.m * self.c * self.e * self.f * self.r * self.s


@dataclass(frozen=True)
class Mapping:
    tiling: dict
    accesses: dict  # level -> words
    energy: dict  # "compute" | "dram" | "gb" | "noc" | "rf" -> pJ
    cycles: float


@functools.cache
def factorizations(n: int, k: int) -> np.ndarray:
    """All ordered ``k``-tuples of positive integers whose product is ``n``, shape ``(count, k)``."""
    if k == 1:
        return np.array([[n]], dtype=np.int64)
    rows = [(d, *rest) for d in range(1, n + 1) if n % d == 0 for rest in factorizations(n // d, k - 1)]
    return np.array(rows, dtype=np.int64)


def _axis(a: np.ndarray, axis: int, ndim: int = 5) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return a.reshape(shape)


def word_bits(wl: Workload, hw: Accelerator) -> tuple[int, int]:
    """Width of activation/psum words and of weight words."""
    if wl.op == "shift" and hw.shift_word_bits:
        return hw.shift_word_bits, hw.shift_word_bits
    return wl.bits, (wl.weight_bits if wl.op == "shift" else wl.bits)


@functools.cache
def map_layer(wl: Workload, hw: Accelerator) -> Mapping:
    """The best valid row-stationary tiling of ``wl`` and its accesses, energy (pJ) and cycles."""
    if wl.bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {wl.bits}")
    mf, cf = const(f"mem_factor_{wl.bits}"), const(f"cmp_factor_{wl.bits}")
    R, S, E, F, H, stride = wl.r, wl.s, wl.e, wl.f, wl.h, wl.stride
    mt = factorizations(wl.m, 4)
    mt = mt[mt[:, 0] <= const("rf_psum_words") * mf]
    ct = factorizations(wl.c, 3)
    ct = ct[ct[:, 0] * S <= const("rf_ifmap_words") * mf]
    nt, gt, et = factorizations(wl.n, 2), factorizations(wl.g, 2), factorizations(wl.e, 2)
    N0, N3 = _axis(nt[:, 0], 0), _axis(nt[:, 1], 0)
    G1, G3 = _axis(gt[:, 0], 1), _axis(gt[:, 1], 1)
    M0, M1, M2, M3 = (_axis(mt[:, i], 2) for i in range(4))
    C0, C1, C2 = (_axis(ct[:, i], 3) for i in range(3))
    E1, E3 = _axis(et[:, 0], 4), _axis(et[:, 1], 4)

    valid = (M0 * C0 * S <= const("rf_weight_words") * mf) \
        & (M1 * C1 * E1 * R * G1 <= const("pe_rows") * const("pe_cols") * cf) \
        & (N0 * G1 * (C1 * C0 * ((E1 - 1) * stride + R) * ((F - 1) * stride + S) + M2 * M1 * M0 * E1 * F)
           <= const("gb_words") * mf)
    if not valid.any():
        raise ValueError(f"no row-stationary tiling of {wl} fits the PE array and buffers")

    n, c, m = wl.n, wl.c, wl.m
    ifmap, weights, ofmap = n * c * wl.h * wl.w, m * c * R * S, n * m * E * F
    macs = n * m * c * E * F * R * S
    ab, wb = word_bits(wl, hw)
    on_chip = hw.adder_on_chip and wl.op == "add"
    # words per level, split by datum: (ifmap, weight, psum)
    dram = (ifmap * M3, weights * N3 * E3, ofmap)
    gb = (ifmap * (M3 + M3 * M2), 0, ofmap * 2 * C2)
    noc = (ifmap * M3 * M2 * M1 * R * E / H, weights * N3 * E3 * E1, ofmap * C2 * C1 * R)
    rf = (macs, macs, 2 * macs)

    def pj(words, e_act, e_w, e_psum):
        return (words[0] * ab * e_act + words[1] * wb * e_w + words[2] * ab * e_psum) / 16

    e_dram, e_gb, e_noc = const("e_dram"), const("e_gb"), const("e_noc")
    energy = {
        "dram": 0.0 if on_chip else pj(dram, e_dram, e_dram, e_dram),
        "gb": 0.0 if on_chip else pj(gb, e_gb, e_gb, e_gb),
        "noc": pj(noc, 0 if on_chip else e_noc, 0 if on_chip else e_noc, const("e_noc_psum")),
        "rf": pj(rf, const("e_rf"), const("e_rf_weight"), const("e_rf")),
    }
    total = sum(energy.values()) * wl.g
    cycles = (G3 * n * M3 * M2 * M0 * C2 * C0 * E3 * F * S) / (hw.shift_cycle_div if wl.op == "shift" else 1)
    if hw.dram_bound:
        dram_bits = (dram[0] * ab + dram[1] * wb + dram[2] * ab) * wl.g
        cycles = np.maximum(cycles, dram_bits / const("dram_bits_per_cycle"))
    total, cycles = np.broadcast_arrays(total, cycles)
    total, cycles = np.where(valid, total, np.inf), np.where(valid, cycles, np.inf)
    best = np.unravel_index(np.argmin(total / total.min() + cycles / cycles.min()), total.shape)

    def at(x) -> float:
        return float(np.broadcast_to(x, total.shape)[best])

    tiling = {k: int(np.broadcast_to(v, total.shape)[best]) for k, v in
              dict(N0=N0, N3=N3, G1=G1, G3=G3, M0=M0, M1=M1, M2=M2, M3=M3, C0=C0, C1=C1, C2=C2, E1=E1,
                   E3=E3).items()}
    accesses = {lvl: wl.g * sum(at(x) for x in words) for lvl, words in
                (("dram", dram), ("gb", gb), ("noc", noc), ("rf", rf))}
    per_mac = sum(n * op_energy(op, wl.bits) for op, n in ops_per_mac(wl.op, hw).items())
    breakdown = {"compute": wl.macs * per_mac, **{k: wl.g * at(v) for k, v in energy.items()}}
    return Mapping(tiling, accesses, breakdown, at(cycles))


def ops_per_mac(op: str, hw: Accelerator) -> dict[str, int]:
    """Operations one MAC of a layer with operator ``op`` performs."""
    ops = dict(get_operator(op).mac_ops)
    if hw.accumulate:
        ops = {**ops, "add": ops.get("add", 0) + 1}
    return ops
