"""What the search writes: stage 1's space report, stage 2's best architecture and Pareto front."""
from __future__ import annotations

import json
from pathlib import Path

from .. import plots
from ..files import atomic_write, write_json, write_text
from .space import space_to_dict


def write_space_report(out: Path, stats, chosen, budget, space, meta: dict) -> list[Path]:
    """``space.json`` (the chosen space, stage 2's input), ``spaces.json`` (every space's numbers), ``report.md`` (a
    table per space) and ``macs_cdf.png``."""
    rows = [s.row() for s in stats]
    write_json(out / "spaces.json", {"budget": budget.to_dict(), **meta, "spaces": rows, "chosen": chosen.row()})
    lines = [f"# Stage 1: search-space optimisation ({meta['model']}, ops {', '.join(meta['ops'])})", "",
             f"Budget: {budget.describe()} ({budget.hw}, {budget.bits} bit, {budget.num_classes} classes). "
             f"{meta['samples']} sub-networks drawn per space; chosen: the space whose satisfying sub-networks have "
             f"the highest mean MACs.", "",
             "| width | resolution | aug. multiple | satisfying | mean MACs (M) |", "|---|---|---|---|---|"]
    for s in sorted(stats, key=lambda s: -s.mean_macs):
        mark = " **chosen**" if s is chosen else ""
        lines.append(f"| {s.width:g} | {s.resolution} | {s.multiple:g} | {s.fraction:.1%} | "
                     f"{s.mean_macs / 1e6:.2f}{mark} |")
    write_text(out / "report.md", "\n".join(lines) + "\n")
    write_json(out / "space.json", {"space": space_to_dict(space), "budget": budget.to_dict(), **chosen.row()})
    atomic_write(out / "macs_cdf.png", lambda tmp: plots.macs_cdf(stats, chosen, tmp, budget.describe()))
    return [out / n for n in ("space.json", "report.md", "spaces.json", "macs_cdf.png")]


def write_search_result(out: Path, best: dict, front: list, points: list, budget, meta: dict) -> list[Path]:
    """``best_arch.json`` (trains with ``train arch=PATH``), ``pareto.csv``/``pareto.md``, ``pareto.png`` and
    ``search.json`` (the best record, the front and the settings)."""
    arch = dict(best["arch"])
    arch["stages"] = [{**st, "blocks": st["blocks"][: st["depth"]]} for st in arch["stages"]]  # the blocks that run
    write_text(out / "best_arch.json", json.dumps(arch, indent=2) + "\n")
    write_json(out / "search.json", {"best": best, "front": front, "budget": budget.to_dict(), **meta,
                                     "evaluated": len(points)})
    cols = ["val_acc", "energy_uj", "latency_ms", "macs", "params", "sram_bytes"]
    write_text(out / "pareto.csv", "\n".join([",".join(cols)] + [",".join(str(p[c]) for c in cols) for p in front])
               + "\n")
    lines = [f"# Evolutionary search: Pareto front ({len(points)} sub-networks evaluated)", "",
             f"Budget: {budget.describe()}. Accuracy: validation split ({meta['val_images']} images held out of "
             f"the training set), BN recalibrated on {meta['calib_images']} training images per network.", "",
             "| val top-1 % | energy uJ | latency ms | MACs (M) | params | peak SRAM KiB |",
             "|---|---|---|---|---|---|"]
    for p in front:
        mark = " **best**" if p["arch"] == best["arch"] else ""
        lines.append(f"| {p['val_acc']:.2f}{mark} | {p['energy_uj']:.3f} | {p['latency_ms']:.4f} | "
                     f"{p['macs'] / 1e6:.2f} | {p['params']:,d} | {p['sram_bytes'] / 1024:.1f} |")
    write_text(out / "pareto.md", "\n".join(lines) + "\n")
    atomic_write(out / "pareto.png", lambda tmp: plots.pareto(points, front, tmp, budget.limits.get("energy_uj")))
    return [out / n for n in ("best_arch.json", "pareto.md", "pareto.csv", "pareto.png", "search.json")]
