"""Every constant of the hardware cost model, in one table, each with its source.

Energies are in pJ. Memory energies are per access of a 16-bit word and scale with the word width (bits / 16),
as in ShiftAddNAS's analytic model (GATECH-EIC/ShiftAddNAS ``hw_utils.py``), which normalises Eyeriss's
(Chen et al., ISCA 2016) relative access costs to 3.7 pJ = one 32-bit float multiply (Horowitz, ISSCC 2014).
"""
from __future__ import annotations

from dataclasses import dataclass

SHIFTADDNAS = "ShiftAddNAS hw_utils.py (You et al., ICML 2022)"
HOROWITZ = "Horowitz, ISSCC 2014, 45 nm"
EYERISS = "Eyeriss v1 (Chen et al., JSSC 2017)"


@dataclass(frozen=True)
class Constant:
    value: float
    unit: str
    source: str


CONSTANTS: dict[str, Constant] = {
    # array and clock
    "pe_rows": Constant(12, "PEs", f"{SHIFTADDNAS}; {EYERISS} (12 x 14 there)"),
    "pe_cols": Constant(16, "PEs", SHIFTADDNAS),
    "clock_hz": Constant(250e6, "Hz", SHIFTADDNAS),
    "dram_bits_per_cycle": Constant(64, "bit/cycle", f"{EYERISS}: 64-bit data bus; ours: at the core clock"),
    # storage, in words of the data width at 32 bit (scaled by the per-width factors below)
    "rf_psum_words": Constant(16, "words", f"{SHIFTADDNAS}: output RF, M0 <= 16"),
    "rf_ifmap_words": Constant(12, "words", f"{SHIFTADDNAS}: input RF, C0*S < 12; {EYERISS}: 12 entries"),
    "rf_weight_words": Constant(960, "words", f"{SHIFTADDNAS}: weight RF, M0*C0*S < 192*5"),
    "gb_words": Constant(65536, "words", f"{SHIFTADDNAS}: global buffer (ifmap tile + psum tile)"),
    # energy per 16-bit word access
    "e_dram": Constant(200.0, "pJ/16b", SHIFTADDNAS),
    "e_gb": Constant(6 * 3.7, "pJ/16b", f"{SHIFTADDNAS}: 6x RF, Eyeriss's ratio"),
    "e_noc": Constant(2 * 3.7, "pJ/16b", f"{SHIFTADDNAS}: 2x RF"),
    "e_noc_psum": Constant(1 * 3.7, "pJ/16b", f"{SHIFTADDNAS}: 1x RF (neighbour PE to PE)"),
    "e_rf": Constant(1 * 3.7, "pJ/16b", SHIFTADDNAS),
    "e_rf_weight": Constant(2 * 3.7, "pJ/16b", f"{SHIFTADDNAS}: the larger weight scratchpad costs 2x"),
    # compute energy per operation
    "e_mult_32": Constant(3.7, "pJ", f"{HOROWITZ}: fp32 multiply"),
    "e_add_32": Constant(0.9, "pJ", f"{HOROWITZ}: fp32 add"),
    "e_shift_32": Constant(0.13, "pJ", f"{SHIFTADDNAS} (ShiftAddNet, You et al. 2020)"),
    "e_mult_16": Constant(0.79, "pJ", "ours: geometric mean of int8 (0.2) and int32 (3.1) multiply, Horowitz"),
    "e_add_16": Constant(0.055, "pJ", "ours: geometric mean of int8 (0.03) and int32 (0.1) add, Horowitz"),
    "e_shift_16": Constant(0.056, "pJ", "ours: geometric mean of the 8-bit and 32-bit shift energies"),
    "e_mult_8": Constant(0.2, "pJ", f"{HOROWITZ}: int8 multiply"),
    "e_add_8": Constant(0.03, "pJ", f"{HOROWITZ}: int8 add"),
    "e_shift_8": Constant(0.024, "pJ", SHIFTADDNAS),
    # per-width capacity factors: words held scale by mem, MAC lanes per PE by cmp (sub-word parallelism)
    "mem_factor_32": Constant(1, "x", SHIFTADDNAS),
    "cmp_factor_32": Constant(1, "x", SHIFTADDNAS),
    "mem_factor_16": Constant(1, "x", "ours: storage as at 32 bit (conservative)"),
    "cmp_factor_16": Constant(2, "x", "ours: two 16-bit lanes per 32-bit PE datapath"),
    "mem_factor_8": Constant(2, "x", SHIFTADDNAS),
    "cmp_factor_8": Constant(4, "x", SHIFTADDNAS),
    # DeepShift weights: 1 sign bit + 4 shift bits
    "shift_weight_bits": Constant(5, "bit", "DeepShift (Elhoushi et al. 2021) default weight_bits=5"),
}

BITS = (32, 16, 8)


def const(name: str) -> float:
    return CONSTANTS[name].value


def op_energy(op: str, bits: int) -> float:
    """Energy of one ``op`` in ``"mult" | "add" | "shift"`` at ``bits``."""
    return const(f"e_{op}_{bits}")


def markdown_table() -> str:
    rows = ["| constant | value | unit | source |", "|---|---|---|---|"]
    rows += [f"| `{k}` | {c.value:g} | {c.unit} | {c.source} |" for k, c in CONSTANTS.items()]
    return "\n".join(rows)
