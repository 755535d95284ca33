"""Scaling of distributed training: the same training (global batch, learning rate, images) as one process and
under ``torchrun`` as N processes, throughput and accuracy side by side. On a CPU host the processes share its cores
(gloo); on a GPU host each takes one GPU (NCCL).

    python benchmarks/dist_scaling.py                              # 1 vs 2 processes, direct and ShiftAddAug
    python benchmarks/dist_scaling.py --procs 1 2 4 8 --device cuda  # a GPU host

Records ``benchmarks/records/dist_scaling_<device>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

RECORDS = Path(__file__).parent / "records"


def launch(procs: int, threads: int, args: list[str]) -> None:
    head = [sys.executable, "-m", "shiftaddaug"] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m",
         "shiftaddaug"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    r = subprocess.run([*head, "train", *args], env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(head)} train failed:\n{r.stderr[-3000:]}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--aug-ops", nargs="+", default=["none", "mult"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--global-batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05, help="for the global batch")
    ap.add_argument("--train-subset", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out-dir", default="benchmarks/out/dist_scaling")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    record = {"command": "python benchmarks/dist_scaling.py " + " ".join(argv or sys.argv[1:]),
              "machine": f"{platform.machine()}, {cores} cores", "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "runs": []}
    for aug in args.aug_ops:
        for n in args.procs:
            threads = max(1, cores // n) if args.device == "cpu" else 1  # the host's cores, shared
            name = f"{aug}_{n}p"
            cfg = ["model=mobilenetv2_tiny", "op=shift", f"aug_op={aug}", "dataset=fashion-mnist",
                   f"train_subset={args.train_subset}", "test_subset=2000", f"epochs={args.epochs}",
                   f"device={args.device}",
                   f"batch_size={args.global_batch // n}", f"lr={args.lr / n}", f"threads={threads}", "workers=0",
                   f"out_dir={args.out_dir}", f"name={name}", "overwrite=true"]
            t0 = time.time()
            launch(n, threads, cfg)
            s = json.loads((Path(args.out_dir) / name / "summary.json").read_text())
            row = {"aug_op": aug, "processes": n, "threads_each": threads, "images_per_s": s["images_per_s"],
                   "final_acc": s["final_acc"], "train_time_s": s["train_time_s"], "wall_s": time.time() - t0}
            record["runs"].append(row)
            print(f"{aug:5s} {n} process(es) x {threads} thread(s): {row['images_per_s']:.0f} img/s, "
                  f"top-1 {row['final_acc']:.2f} %")
    out = RECORDS / f"dist_scaling_{args.device}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
