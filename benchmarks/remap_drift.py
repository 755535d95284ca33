"""How far did a run's learnable remap parameters move from their initial values? Measured on trained checkpoints.

    python benchmarks/remap_drift.py RUN_DIR [RUN_DIR ...]      # runs of benchmarks/ablation.py (reads last.pt)
Both learnable remaps start as a fixed map: `fc` at the identity after the Laplace map (a k*k mixing matrix for
k x k kernels, a scale of 1 and an offset of 0 for 1x1 ones), `bins` with every factor 1. Per run, over the target's
multiplication-free convolutions: `fc` max abs(mix - I) per layer, abs(scale - 1), abs(offset) / std(shared W);
`bins` max abs(factor - 1) per layer. Maximum and median over layers. Trains nothing.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from shiftaddaug.augment.dynamic import DynamicConv2d
from shiftaddaug.train import load_model


def drift(run_dir: Path) -> tuple[str, dict[str, list[float]]]:
    """The run's remap and, per kind of learnable parameter, one drift value per layer."""
    _, cfg, net = load_model(run_dir / "last.pt")
    out: dict[str, list[float]] = {}
    with torch.no_grad():
        for m in net.modules():
            if not isinstance(m, DynamicConv2d) or m.remap is None:
                continue
            r = m.remap
            if r.kind == "fc" and r.k2 > 1:
                out.setdefault("max abs(mix - I)", []).append((r.mix - torch.eye(r.k2)).abs().max().item())
            elif r.kind == "fc":
                out.setdefault("abs(scale - 1)", []).append(abs(r.scale.item() - 1))
                out.setdefault("abs(offset) / std(W)", []).append(abs(r.offset.item()) / m.weight.std().item())
            elif r.kind == "bins":
                out.setdefault("max abs(factor - 1)", []).append((r.factors - 1).abs().max().item())
    return cfg.remap, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    results = []
    for run_dir in args.runs:  # every run read before anything is printed: a bad argument leaves no half table
        if not (run_dir / "last.pt").exists():
            raise SystemExit(f"{run_dir}/last.pt not found: pass run directories of benchmarks/ablation.py")
        remap, rows = drift(run_dir)
        if not rows:
            raise SystemExit(f"{run_dir} has no learnable remap (remap {remap}): only `fc` and `bins` learn")
        results.append((run_dir.name, remap, rows))
    print("| run | remap | parameter | layers | max over layers | median over layers |")
    print("|---|---|---|---|---|---|")
    for name, remap, rows in results:
        for param, v in rows.items():
            print(f"| {name} | {remap} | {param} | {len(v)} | {max(v):.4f} | {statistics.median(v):.4f} |")


if __name__ == "__main__":
    main()
