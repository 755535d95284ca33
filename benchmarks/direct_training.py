"""Training one zoo model with each operator (mult, shift, add) on the same recipe, directly or with ShiftAddAug.

Prints and records test top-1, wall time and training throughput per operator and seed:
    python benchmarks/direct_training.py --epochs 5 --train-subset 10000 --seeds 0
Results go to benchmarks/out/direct_<model>.json (one entry per run) and the run folders to runs/bench_direct/.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from shiftaddaug.config import load_config
from shiftaddaug.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenetv2_tiny")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ops", nargs="+", default=["mult", "shift", "add"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--aug-op", default="none", help="none: direct training; mf | hybrid | mult: ShiftAddAug")
    ap.add_argument("--remap", default="laplace")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    out = Path(args.out or f"benchmarks/out/direct_{args.model}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    records = json.loads(out.read_text()) if out.exists() else []
    for op in args.ops:
        for seed in args.seeds:
            cfg = load_config(overrides={
                "model": args.model, "op": op, "dataset": args.dataset, "epochs": args.epochs, "seed": seed,
                "lr": args.lr, "train_subset": args.train_subset, "out_dir": "runs/bench_direct",
                "name": f"{args.model}_{op}_{args.aug_op}-{args.remap}_s{seed}", "overwrite": True,
                "aug_op": args.aug_op if op != "mult" else "none", "remap": args.remap})
            s = train(cfg)
            rec = {"model": args.model, "op": op, "aug_op": cfg.aug_op, "remap": cfg.remap, "seed": seed,
                   "epochs": args.epochs, "train_subset": args.train_subset, "dataset": args.dataset,
                   "final_acc": s["final_acc"],
                   "best_acc": s["best_acc"], "train_time_s": s["train_time_s"], "images_per_s": s["images_per_s"],
                   "params": s["params"], "macs": s["macs"], "threads": s["threads"], "torch": torch.__version__,
                   "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                   "date": time.strftime("%Y-%m-%d")}
            records.append(rec)
            out.write_text(json.dumps(records, indent=2))
    print(f"\naug_op={args.aug_op} remap={args.remap}")
    print(f"{'op':6s} {'seeds':>5s} {'top-1 % (mean ± std)':>22s} {'train s':>8s} {'img/s':>7s}")
    for op in args.ops:
        aug = "none" if op == "mult" else args.aug_op
        rs = [r for r in records if r["op"] == op and r["epochs"] == args.epochs and r.get("aug_op") == aug
              and r["train_subset"] == args.train_subset and r["model"] == args.model]
        accs = [r["final_acc"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        secs = statistics.mean(r["train_time_s"] for r in rs)
        ips = statistics.mean(r["images_per_s"] for r in rs)
        print(f"{op:6s} {len(rs):5d} {statistics.mean(accs):15.2f} ± {std:4.2f} {secs:8.0f} {ips:7.0f}")


if __name__ == "__main__":
    main()
