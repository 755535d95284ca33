"""Evidence for segmentation on the Fashion-MNIST scenes: direct training versus ShiftAddAug for shift and add
(two seeds each), and the multiplicative model of the same structure, with mIoU, pixel accuracy, per-class IoU,
and the inference energy and latency of the cost model (Eyeriss-like, 32 bit, one image).

    python benchmarks/segmentation.py                       # every run, each skipped once recorded
    python benchmarks/segmentation.py --ops shift --seeds 1   # a part of them

The recipe (below, and in the record) is scaled to the issue's CPU budget; each finished run goes into
``benchmarks/records/seg_fmnist_scenes.json`` at once, with its CPU time, so no result depends on a run folder.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from shiftaddaug.cli import main as cli
from shiftaddaug.data import build_loaders, dataset_info
from shiftaddaug.evaluate import evaluate
from shiftaddaug.runs import load_model

sys.path.insert(0, str(Path(__file__).parent))
from search import cpu_time  # noqa: E402  (the benchmarks' one CPU clock)

RECORD = Path(__file__).parent / "records" / "seg_fmnist_scenes.json"


def recipe(args) -> dict:
    return {"model": args.model, "dataset": "fmnist-scenes", "input_size": args.input_size,
            "train_subset": args.train_subset, "test_subset": args.test_subset, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr}


def one_run(args, op: str, aug: str, seed: int) -> dict:
    name = f"seg_{op}_{aug}_s{seed}"
    overrides = [f"{k}={v}" for k, v in recipe(args).items()]
    overrides += ["task=seg", f"op={op}", f"aug_op={aug}", f"seed={seed}", f"out_dir={args.out_dir}", f"name={name}",
                  "overwrite=true"]
    c0, t0 = cpu_time(), time.time()
    if code := cli(["train", *overrides]):
        sys.exit(f"shiftaddaug train {name} failed (exit {code})")
    run_dir = Path(args.out_dir) / name
    summary = json.loads((run_dir / "summary.json").read_text())
    _, cfg, model = load_model(run_dir / "last.pt")
    data = build_loaders(cfg.dataset, cfg.data_dir, 256, summary["input_size"], test_subset=cfg.test_subset,
                         workers=0)
    res = evaluate(model, data.test)
    names = dataset_info(cfg.dataset).class_names
    return {"op": op, "aug_op": aug, "seed": seed, "miou": res["miou"], "pixel_acc": res["acc"],
            "best_miou": summary["best_acc"], "iou": dict(zip(names, res["iou"])),
            "energy_uj": summary["energy_uj"], "latency_ms": summary["latency_ms"], "params": summary["params"],
            "macs": summary["macs"], "peak_activation_bytes": summary["peak_activation_bytes"],
            "train_time_s": summary["train_time_s"], "images_per_s": summary["images_per_s"],
            "cpu_s": cpu_time() - c0, "wall_s": time.time() - t0, "threads": summary["threads"],
            "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", nargs="*", default=["shift", "add"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--mult-seeds", type=int, nargs="*", default=[0], help="seeds of the multiplicative model")
    ap.add_argument("--model", default="mobilenetv2_tiny")
    ap.add_argument("--input-size", type=int, default=48)
    ap.add_argument("--train-subset", type=int, default=3000)
    ap.add_argument("--test-subset", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--out-dir", default="runs/bench_seg")
    ap.add_argument("--record", type=Path, default=RECORD)
    args = ap.parse_args()

    record = json.loads(args.record.read_text()) if args.record.exists() else {}
    if record.setdefault("recipe", recipe(args)) != recipe(args):
        sys.exit(f"{args.record} holds runs of another recipe ({record['recipe']}); pass another --record")
    record.setdefault("machine", f"{platform.machine()} {platform.processor() or ''}".strip())
    record.setdefault("torch", torch.__version__)
    runs = record.setdefault("runs", {})
    plan = [("mult", "none", s) for s in args.mult_seeds]
    plan += [(op, aug, s) for s in args.seeds for op in args.ops for aug in ("none", "mult")]
    for op, aug, seed in plan:
        key = f"{op}_{aug}_s{seed}"
        if key in runs:
            print(f"== {key}: recorded (mIoU {runs[key]['miou']:.2f} %), skipped")
            continue
        print(f"== {key}", flush=True)
        runs[key] = one_run(args, op, aug, seed)
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=2) + "\n")
        print(f"== {key}: mIoU {runs[key]['miou']:.2f} %, {runs[key]['cpu_s']:.0f} CPU s", flush=True)


if __name__ == "__main__":
    main()
