"""Evidence for the two-stage search on Fashion-MNIST: search under the energy of mobilenetv2_tiny-shift, then train
the found network with ShiftAddAug exactly as that baseline was trained, and compare.

    python benchmarks/search.py --name mf --ops shift,add                  # every stage, each skipped once done
    python benchmarks/search.py --name mixed --ops shift,add,mult
    python benchmarks/search.py --name mf --ops shift,add --stage final    # one stage (its inputs from the record)

Stages: ``space`` (stage 1 on the grid below), ``supernet`` (``search train``), ``evolve`` (``search evolve``),
``final`` (``train arch=best aug_op=mult``, 10k images, seed 0: the recipe of the baseline run
``benchmarks/records/elastic_regression_shift_10k_e20_s0.json``). After each stage its result, with its CPU time,
goes into ``benchmarks/records/search_<name>.json``; the found architecture is in the record, so the final training
does not depend on a run folder.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from shiftaddaug.cli import main as cli
from shiftaddaug.hw.arch_cost import arch_cost
from shiftaddaug.models import create_model

RECORDS = Path(__file__).parent / "records"
BASELINE = RECORDS / "elastic_regression_shift_10k_e20_s0.json"
DATA = ["dataset=fashion-mnist", "train_subset=10000", "seed=0", "lr=0.05"]


def budget_uj() -> float:
    """Energy of mobilenetv2_tiny-shift on one 28 px Fashion-MNIST image (Eyeriss-like, 32 bit)."""
    arch = create_model("mobilenetv2_tiny", 10, op="shift", in_chans=1, input_size=28).arch
    return arch_cost(arch, 10, 1).energy_uj


def cpu_time() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def stage(record: dict, name: str, path: Path, fn) -> None:
    if name in record:
        print(f"== {name}: done ({record[name]['cpu_s']:.0f} CPU s), skipped")
        return
    print(f"== {name}", flush=True)
    c0, t0 = cpu_time(), time.time()
    result = fn()
    record[name] = {**result, "cpu_s": cpu_time() - c0, "wall_s": time.time() - t0, "date": time.strftime("%Y-%m-%d")}
    path.write_text(json.dumps(record, indent=2) + "\n")


def run(argv: list[str]) -> None:
    code = cli(argv)
    if code:
        sys.exit(f"shiftaddaug {' '.join(argv[:2])} failed (exit {code})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--ops", default="shift,add")
    ap.add_argument("--stage", choices=["all", "space", "supernet", "evolve", "final"], default="all")
    ap.add_argument("--widths", default="0.25,0.35,0.5")
    ap.add_argument("--resolutions", default="28,32,40")
    ap.add_argument("--supernet-epochs", type=int, default=8)
    ap.add_argument("--val-images", type=int, default=2000)
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--calib-images", type=int, default=1000)
    ap.add_argument("--final-epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/search"))
    args = ap.parse_args()
    out = args.out / args.name
    path = RECORDS / f"search_{args.name}.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    limit = budget_uj()
    record.setdefault("setup", {"ops": args.ops, "energy_budget_uj": limit, "machine": platform.processor() or
                                platform.machine(), "cores": os.cpu_count(), "baseline": BASELINE.name})
    want = (lambda s: True) if args.stage == "all" else (lambda s: s == args.stage)
    budget = ["--energy-uj", f"{limit:.6f}"]

    if want("space"):
        def space():
            run(["search", "space", "--model", "mcunet", "--op", args.ops, "--dataset", "fashion-mnist", "--widths",
                 args.widths, "--resolutions", args.resolutions, "--out", str(out / "space"), *budget])
            s = json.loads((out / "space" / "spaces.json").read_text())
            return {"chosen": s["chosen"], "spaces": s["spaces"],
                    "space": json.loads((out / "space" / "space.json").read_text())["space"]}
        stage(record, "space", path, space)
    if want("supernet"):
        def supernet():
            (out / "space").mkdir(parents=True, exist_ok=True)
            (out / "space" / "space.json").write_text(json.dumps({"space": record["space"]["space"]}))
            resume = (out / "runs" / "supernet" / "last.pt").exists()
            run(["search", "train", str(out / "space" / "space.json"), *DATA, f"epochs={args.supernet_epochs}",
                 f"val_images={args.val_images}", f"out_dir={out / 'runs'}", "name=supernet", "threads=2",
                 *(["--resume"] if resume else ["overwrite=true"])])
            s = json.loads((out / "runs" / "supernet" / "summary.json").read_text())
            return {"smallest_val_acc": s["final_acc"], "train_time_s": s["train_time_s"],
                    "images_per_s": s["images_per_s"], "epochs": args.supernet_epochs,
                    "val_images": args.val_images, "config": s["config"]}
        stage(record, "supernet", path, supernet)
    if want("evolve"):
        def evolve():
            ev = out / "runs" / "supernet" / "evolve"
            run(["search", "evolve", str(out / "runs" / "supernet"), *budget, "--population", str(args.population),
                 "--generations", str(args.generations), "--calib-images", str(args.calib_images), "--threads", "2",
                 *(["--resume"] if (ev / "evolve_state.json").exists() else [])])
            s = json.loads((ev / "search.json").read_text())
            return {"best": s["best"], "front": [{k: v for k, v in r.items() if k != "arch"} for r in s["front"]],
                    "evaluated": s["evaluated"], "population": args.population, "generations": args.generations,
                    "calib_images": args.calib_images,
                    "best_arch": json.loads((ev / "best_arch.json").read_text())}
        stage(record, "evolve", path, evolve)
    if want("final"):
        def final():
            arch = out / "best_arch.json"
            arch.parent.mkdir(parents=True, exist_ok=True)
            arch.write_text(json.dumps(record["evolve"]["best_arch"]))
            resume = (out / "runs" / "final" / "last.pt").exists()
            run(["train", f"arch={arch}", "aug_op=mult", *DATA, f"epochs={args.final_epochs}",
                 f"out_dir={out / 'runs'}", "name=final", "threads=2",
                 *(["--resume"] if resume else ["overwrite=true"])])
            s = json.loads((out / "runs" / "final" / "summary.json").read_text())
            keys = ("final_acc", "best_acc", "train_time_s", "params", "macs", "peak_activation_bytes", "energy_uj",
                    "latency_ms")
            return {k: s[k] for k in keys}
        stage(record, "final", path, final)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk not in ("spaces", "space", "front", "best_arch",
                                                                       "config", "best")}
                      for k, v in record.items()}, indent=1))


if __name__ == "__main__":
    main()
