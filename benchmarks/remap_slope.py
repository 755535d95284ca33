"""Does the `laplace` remap change how fast an MF target's weights move? Measured on trained supernet checkpoints.

    python benchmarks/remap_slope.py RUN_DIR [RUN_DIR ...]      # runs of benchmarks/ablation.py (reads last.pt)
For every adder or shift convolution of the target (and a direct run's adders, the reference shape): the excess
kurtosis of the stored (shared) weights and of the weights the operator uses, and the squared slope of the `laplace`
quantile map at each stored weight, J(z)^2 with J(z) = exp(-z^2/2) / (sqrt(pi) erfc(|z|/sqrt 2)): a step on the
shared weight reaches the MF weight times J, and the MF weight's gradient reaches the shared weight times J again,
so J^2 is how much faster (>1) or slower (<1) each MF weight moves than in direct training at the same lr (only
`laplace` runs train with it). Trains nothing.
"""
from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import torch
import torch.nn as nn

from shiftaddaug.augment.dynamic import DynamicConv2d
from shiftaddaug.ops import op_of
from shiftaddaug.train import load_model


def excess_kurtosis(w: torch.Tensor) -> float:
    z = (w - w.mean()) / w.std()
    return (z**4).mean().item() - 3.0


def slope_sq(w: torch.Tensor) -> torch.Tensor:
    z = ((w - w.mean()) / w.std()).double()
    return (torch.exp(-z * z / 2) / (math.sqrt(math.pi) * torch.special.erfc(z.abs() / math.sqrt(2)))) ** 2


def weights(run_dir: Path) -> tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The run's remap and, per multiplication-free conv of the target, (stored weight, weight the operator uses)."""
    _, cfg, net = load_model(run_dir / "last.pt")
    pairs = []
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, DynamicConv2d) and m.op != "mult":  # a supernet: the target's leading slice
                w = m.weight[: m.target_out, : 1 if m.depthwise else m.target_in]
                pairs.append((w, m.mf_weight(w)))
            elif isinstance(m, nn.Conv2d) and op_of(m) == "add":  # direct training: the adder's own weights
                pairs.append((m.weight, m.weight))
    remap = cfg.remap if cfg.aug_op != "none" else "(direct)"
    return remap, [(w, u) for w, u in pairs if w.numel() >= 16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    print("| run | remap | MF layers | excess kurtosis, stored W (median) | excess kurtosis, used W (median) | "
          "J^2 median (median over layers) | weights with J^2 < 0.5 | weights with J^2 > 2 |")
    print("|---|---|---|---|---|---|---|---|")
    for run_dir in args.runs:
        if not (run_dir / "last.pt").exists():
            raise SystemExit(f"{run_dir}/last.pt not found: pass run directories of benchmarks/ablation.py")
        remap, pairs = weights(run_dir)
        if not pairs:
            raise SystemExit(f"{run_dir} has no multiplication-free convolutions")
        n = sum(w.numel() for w, _ in pairs)
        j2 = [slope_sq(w) for w, _ in pairs]
        slow = sum((j < 0.5).sum().item() for j in j2) / n
        fast = sum((j > 2).sum().item() for j in j2) / n
        kurt = [statistics.median(excess_kurtosis(x[i]) for x in pairs) for i in (0, 1)]
        print(f"| {run_dir.name} | {remap} | {len(pairs)} | {kurt[0]:.2f} | {kurt[1]:.2f} | "
              f"{statistics.median(j.median().item() for j in j2):.2f} | {100 * slow:.0f} % | {100 * fast:.0f} % |")


if __name__ == "__main__":
    main()
