"""Energy and latency of every zoo model (mult, shift, add) on the Eyeriss-like model .

    python benchmarks/hw_costs.py                  # paper resolutions and 32 px, 100 classes (CIFAR-100)
For each model and operator: MACs, energy and latency at 32 and 8 bit with the ratio to the multiplicative
model, the same ratio under ShiftAddNAS's simplifications (``hw="shiftaddnas"``), and the unit-energy estimate
(MACs x energy of one operation: mult 3.7, shift 0.13, add 0.9 pJ) so that the memory model's share is visible.
Writes benchmarks/out/hw_costs.md, .json and zoo_energy_<res>.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from shiftaddaug.hw.constants import op_energy
from shiftaddaug.hw.zoo import zoo_costs
from shiftaddaug.models import DEFAULT_RES, list_models
from shiftaddaug.ops import OPERATORS
from shiftaddaug.plots import zoo_energy

PAPER_RATIO = 1 - 0.689  # "68.9 % less energy than multiplicative networks of the same structure"


def unit_estimate(t: dict) -> float:
    """pJ if every MAC cost only its operator's energy (no accumulation, no memory, nothing else)."""
    return sum(t["macs_by_op"][op] * op_energy(op, 32) for op in OPERATORS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-classes", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records, lines = [], []
    for res in (None, 32):
        runs = {(bits, hw): zoo_costs(res, bits, hw, args.num_classes) for bits, hw in
                ((32, "eyeriss"), (8, "eyeriss"), (32, "shiftaddnas"))}
        main32 = runs[(32, "eyeriss")]
        zoo_energy(main32, args.out / f"zoo_energy_{res or 'paper'}.png",
                   f"energy per image by operator type (Eyeriss-like, 32 bit, "
                   f"{'paper resolutions' if res is None else f'{res} px'}, {args.num_classes} classes)")
        for name in list_models():
            size = res or DEFAULT_RES[name]
            if res and size == DEFAULT_RES[name]:
                continue  # already listed at its paper resolution
            base = {k: v[name]["mult"] for k, v in runs.items()}
            unit_base = unit_estimate(base[(32, "eyeriss")])
            for op in OPERATORS:
                t = {k: v[name][op] for k, v in runs.items()}
                e32 = t[(32, "eyeriss")]
                rec = {"model": name, "res": size, "op": op, "macs": e32["macs"],
                       "energy_uj": e32["energy_pj"] / 1e6, "latency_ms": e32["latency_ms"],
                       "energy_ratio": e32["energy_pj"] / base[(32, "eyeriss")]["energy_pj"],
                       "latency_ratio": e32["latency_cycles"] / base[(32, "eyeriss")]["latency_cycles"],
                       "energy_ratio_8bit": t[(8, "eyeriss")]["energy_pj"] / base[(8, "eyeriss")]["energy_pj"],
                       "energy_uj_8bit": t[(8, "eyeriss")]["energy_pj"] / 1e6,
                       "energy_ratio_shiftaddnas": t[(32, "shiftaddnas")]["energy_pj"]
                       / base[(32, "shiftaddnas")]["energy_pj"],
                       "unit_uj": unit_estimate(e32) / 1e6, "unit_ratio": unit_estimate(e32) / unit_base,
                       "dram_share": e32["energy_by_level"]["dram"] / e32["energy_pj"],
                       "compute_share": e32["energy_by_level"]["compute"] / e32["energy_pj"]}
                records.append(rec)
    lines.append("| model | res | op | MACs (M) | energy (uJ) | vs mult | latency (ms) | vs mult | 8-bit energy (uJ) "
                 "| vs mult | ShiftAddNAS-preset vs mult | unit estimate (uJ) | vs mult | DRAM share | compute share |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in records:
        lines.append(f"| {r['model']} | {r['res']} | {r['op']} | {r['macs'] / 1e6:.2f} | {r['energy_uj']:.1f} | "
                     f"{r['energy_ratio']:.3f} | {r['latency_ms']:.3f} | {r['latency_ratio']:.3f} | "
                     f"{r['energy_uj_8bit']:.1f} | {r['energy_ratio_8bit']:.3f} | "
                     f"{r['energy_ratio_shiftaddnas']:.3f} | {r['unit_uj']:.1f} | {r['unit_ratio']:.3f} | "
                     f"{r['dram_share']:.0%} | {r['compute_share']:.1%} |")
    mf = [r for r in records if r["op"] != "mult"]
    for key in ("energy_ratio", "energy_ratio_8bit", "energy_ratio_shiftaddnas", "unit_ratio"):
        for op in ("shift", "add"):
            xs = [r[key] for r in mf if r["op"] == op]
            lines.append(f"\n{key} {op}: min {min(xs):.3f}, max {max(xs):.3f} (paper claim: {PAPER_RATIO:.3f})")
    head = (f"hw_costs: {args.num_classes} classes, {platform.machine()}, {time.strftime('%Y-%m-%d')}, "
            f"{time.perf_counter() - t0:.1f} s")
    text = "\n".join([head, ""] + lines)
    print(text)
    (args.out / "hw_costs.md").write_text(text)
    (args.out / "hw_costs.json").write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
