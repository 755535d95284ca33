"""Is the direct baseline hurt by evaluating with BatchNorm running statistics, where ShiftAddAug recalibrates?

    python benchmarks/bn_recalibration.py RUN_DIR [RUN_DIR ...]     # direct runs of benchmarks/ablation.py
ShiftAddAug runs recompute BN statistics on 2,000 fixed training images before every evaluation (NetAug); direct
runs keep their running statistics. This evaluates each run's final model (last.pt) both ways on the test set, so
that a gain of ShiftAddAug over direct training can be told apart from a gain of BN recalibration. Trains nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from shiftaddaug.data import build_loaders
from shiftaddaug.train import (
    BN_CALIB_IMAGES,
    calibration_loader,
    evaluate,
    load_model,
    recalibrate_bn,
    resolve_input_size,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("| run | test top-1, running BN stats (%) | test top-1, BN recalibrated (%) | difference (pp) |")
    print("|---|---|---|---|")
    for run_dir in args.runs:
        _, cfg, model = load_model(run_dir / "last.pt")
        if cfg.aug_op != "none":
            raise SystemExit(f"{run_dir} is a ShiftAddAug run (it recalibrates already): pass direct runs")
        size = resolve_input_size(cfg)
        train_loader, test_loader, _, _ = build_loaders(cfg.dataset, cfg.data_dir, cfg.batch_size, size,
                                                        seed=cfg.seed, train_subset=cfg.train_subset,
                                                        test_subset=cfg.test_subset, workers=0)
        calib = calibration_loader(train_loader, cfg, BN_CALIB_IMAGES, size)
        model = model.to(memory_format=torch.channels_last)
        before = evaluate(model, test_loader)["acc"]
        recalibrate_bn(model, calib, BN_CALIB_IMAGES)
        after = evaluate(model, test_loader)["acc"]
        print(f"| {run_dir.name} | {before:.2f} | {after:.2f} | {after - before:+.2f} |", flush=True)


if __name__ == "__main__":
    main()
