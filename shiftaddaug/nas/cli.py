"""``shiftaddaug search space | train | evolve``: the two-stage search from the command line."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..cli import _positive
from ..errors import UserError
from .constraints import LIMITS

_FLAGS = {"energy_uj": "uJ per image", "latency_ms": "ms per image (cost model, or --latency-table)",
          "params": "parameters", "flash_kb": "KiB of weights", "sram_kb": "KiB peak activation memory (int8)",
          "macs_m": "million MACs"}
DEFAULT_VAL_IMAGES = 5000


def _float(ok, what: str):
    """An argparse type: a finite number for which ``ok(v)`` holds, else one line saying it must be ``what``."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (ok(v) and v != float("inf")):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return v
    return parse


_number = _float(lambda v: v > 0, "a positive number")
_fraction = _float(lambda v: 0 <= v <= 1, "between 0 and 1")


def _list(kind):
    def parse(text: str) -> list:
        try:
            items = [kind(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None
        if not items:
            raise argparse.ArgumentTypeError("the list is empty")
        return items
    return parse


def _add_budget(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("constraints (any of them; one image)")
    for name, unit in _FLAGS.items():
        g.add_argument("--" + name.replace("_", "-"), type=_number, dest=name, help=f"at most this many {unit}")
    g.add_argument("--hw", default="eyeriss", choices=["eyeriss", "shiftaddnas"], help="cost model preset")
    g.add_argument("--bits", type=int, default=32, choices=[32, 16, 8], help="data width of the cost model")
    g.add_argument("--latency-table", help="CSV of measured layer latencies, used instead of the cost model's")


def _budget(args, num_classes: int, in_chans: int, op_options=None):
    from ..hw.arch_cost import LatencyTable
    from .constraints import Budget

    try:
        table = LatencyTable.load(args.latency_table) if args.latency_table else None
        return Budget({n: getattr(args, n) for n in LIMITS if getattr(args, n) is not None}, num_classes, in_chans,
                      args.bits, args.hw, table, op_options)
    except ValueError as e:
        raise UserError(str(e)) from None


def _done(result: str, files: list, next_step: str) -> None:
    print(result)
    print("wrote " + ", ".join(map(str, files)))
    print(f"next: {next_step}")


def _space(args) -> None:
    from ..data import dataset_info
    from .report import write_space_report
    from .space import search_space
    from .space_search import optimise_space

    num_classes, in_chans = args.num_classes, args.in_chans
    if args.dataset:
        info = dataset_info(args.dataset)
        num_classes, in_chans = num_classes or info.num_classes or 1000, in_chans or info.channels
    budget = _budget(args, num_classes or 1000, in_chans or 3)
    if not budget.limits:
        raise UserError("give at least one constraint (e.g. --energy-uj 20 --sram-kb 256); see search space --help")
    t0 = time.perf_counter()
    try:
        stats, chosen = optimise_space(args.model, budget, args.widths, args.resolutions, args.multiples, args.op,
                                       args.samples, args.seed, args.mf_stem_head, args.min_fraction,
                                       args.workers, show_progress=sys.stderr.isatty())  # under a minute
        space = search_space(args.model, chosen.width, chosen.resolution, chosen.multiple, args.op,
                             mf_stem_head=args.mf_stem_head)
    except ValueError as e:
        raise UserError(str(e)) from None
    meta = {"model": args.model, "ops": args.op, "samples": args.samples, "seed": args.seed,
            "mf_stem_head": args.mf_stem_head, "cpu_s": time.perf_counter() - t0}
    files = write_space_report(Path(args.out), stats, chosen, budget, space, meta)
    _done(f"chosen space: width {chosen.width:g}, resolution {chosen.resolution}, augmentation multiple "
          f"{chosen.multiple:g} ({chosen.fraction:.0%} of its sub-networks meet {budget.describe()}, mean "
          f"{chosen.mean_macs / 1e6:.2f} M MACs); {meta['cpu_s']:.1f} s", files,
          f"shiftaddaug search train {files[0]} dataset=... epochs=...")


def _train(args) -> None:
    from .. import dist
    from ..config import load_config, parse_overrides
    from ..train import train

    over = parse_overrides(args.overrides)
    over["search_space"] = args.space
    if args.ops:
        over["search_ops"] = args.ops
    over.setdefault("val_images", DEFAULT_VAL_IMAGES)
    cfg = load_config(args.config, over)
    summary = train(cfg, resume=args.resume)
    if not dist.reports():  # under torchrun, rank 0 reports
        return
    print(f"{summary['name']}: smallest sub-network val top-1 {summary['final_acc']:.2f} % "
          f"({summary['train_time_s']:.0f} s training) -> {cfg.run_dir}")
    print(f"next: shiftaddaug search evolve {cfg.run_dir} --energy-uj ...")


def _evolve(args) -> None:
    import torch

    from ..build import resolve_device, resolve_input_size
    from ..data import build_loaders
    from ..evaluate import evaluate, recalibrate_bn
    from ..runs import load_model
    from .evolve import Evolution, EvolutionSettings
    from .report import write_search_result

    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    ckpt, cfg, model = load_model(run / "last.pt" if run.is_dir() else run)
    if not cfg.search_space:
        raise UserError(f"{args.run} is not a search supernet (train one with 'shiftaddaug search train')")
    if not cfg.val_images:
        raise UserError(f"{args.run} was trained without held-out validation images (val_images=0): the search "
                        "would have to score on images the supernet trained on; retrain it with val_images=N")
    model.to(device=resolve_device(cfg.device),  # where and how the supernet trained
             memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    budget = _budget(args, ckpt["num_classes"], ckpt["in_chans"], cfg.op_options())
    out = Path(args.out or (run if run.is_dir() else run.parent) / "evolve")
    state = out / "evolve_state.json"
    if state.exists() and not args.resume:
        raise UserError(f"{out} holds a search already; pass --resume to continue it, or choose another --out")
    try:
        settings = EvolutionSettings(args.population, args.generations, args.parent_ratio, args.mutation_ratio,
                                     args.mutation_prob, args.seed)
    except ValueError as e:
        raise UserError(str(e)) from None
    data = build_loaders(cfg.dataset, cfg.data_dir, args.batch_size, resolve_input_size(cfg), seed=cfg.seed,
                         train_subset=cfg.train_subset, workers=cfg.workers, calib_images=args.calib_images,
                         val_images=cfg.val_images)

    def fitness(arch: dict) -> float:
        model.set_active(arch, augment=False)
        recalibrate_bn(model, data.calib, args.calib_images, cfg.channels_last)
        return evaluate(model, data.val, channels_last=cfg.channels_last)["acc"]

    evo = Evolution(model.space, budget, fitness, settings, state)
    t0 = time.perf_counter()
    try:
        if args.resume and not evo.resume():
            raise UserError(f"--resume: {out} holds no search state to continue; drop --resume to start one")
        best = evo.run()
    except ValueError as e:
        raise UserError(str(e)) from None
    meta = {"val_images": cfg.val_images, "calib_images": args.calib_images, "cpu_s": time.perf_counter() - t0}
    files = write_search_result(out, best, evo.front(), list(evo.evaluated.values()), budget, meta)
    _done(f"best: val top-1 {best['val_acc']:.2f} %, {best['energy_uj']:.3f} uJ, {best['latency_ms']:.4f} ms, "
          f"{best['macs'] / 1e6:.2f} M MACs, {best['params']:,d} parameters ({len(evo.evaluated)} evaluated, "
          f"{meta['cpu_s']:.0f} s)", files, f"shiftaddaug train arch={files[0]} aug_op=mult dataset={cfg.dataset} ...")


def add_parser(sub) -> None:
    s = sub.add_parser("search", help="two-stage architecture search under hardware constraints")
    ss = s.add_subparsers(dest="stage", required=True)

    p = ss.add_parser("space", help="stage 1: choose the search space (width x resolution x augmentation multiple)")
    p.add_argument("--model", required=True, help="zoo family whose space is searched (e.g. mcunet)")
    p.add_argument("--op", type=_list(str), default=["shift", "add"],
                   help="candidate operators of the blocks, comma-separated (default shift,add; the first is the "
                        "smallest network's)")
    p.add_argument("--widths", type=_list(float), default=None, help="width multipliers (default 0.5,0.75,1.0)")
    p.add_argument("--resolutions", type=_list(int), default=None,
                   help="input resolutions (default: 0.5, 0.75 and 1 x the model's, multiples of 8)")
    p.add_argument("--multiples", type=_list(float), default=None,
                   help="augmentation multiples (default 2.2,2.4,2.8,3.2)")
    p.add_argument("--samples", type=_positive, default=1000, help="sub-networks drawn per space")
    p.add_argument("--min-fraction", type=_fraction, default=0.05,
                   help="a space qualifies when at least this share of its sub-networks meets the constraints")
    p.add_argument("--dataset", help="take the number of classes and input channels from this dataset")
    p.add_argument("--num-classes", type=_positive)
    p.add_argument("--in-chans", type=_positive)
    p.add_argument("--mf-stem-head", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_positive, default=os.cpu_count() or 1, help="processes (default: one per core)")
    p.add_argument("--out", default="search", help="folder for space.json, report.md, spaces.json, macs_cdf.png")
    _add_budget(p)
    p.set_defaults(fn=_space)

    t = ss.add_parser("train", help="stage 2a: train the elastic supernet of a space (sandwich rule, hybrid "
                                    "augmentation); config keys as for train")
    t.add_argument("space", help="space.json from 'search space'")
    t.add_argument("config", nargs="?", help="YAML config file (optional)")
    t.add_argument("overrides", nargs="*", help="key=value, e.g. dataset=fashion-mnist epochs=10 sandwich=2")
    t.add_argument("--ops", type=_list(str), help="candidate operators of the blocks (default: the space's)")
    t.add_argument("--resume", action="store_true", help="continue runs/<name>/last.pt")
    t.set_defaults(fn=_train)

    e = ss.add_parser("evolve", help="stage 2b: evolutionary search of a trained supernet under the constraints")
    e.add_argument("run", help="the supernet's run folder (or its last.pt)")
    e.add_argument("--population", type=_positive, default=100)
    e.add_argument("--generations", type=int, default=20)
    e.add_argument("--parent-ratio", type=_fraction, default=0.25)
    e.add_argument("--mutation-ratio", type=_fraction, default=0.5, help="share of children made by mutation")
    e.add_argument("--mutation-prob", type=_fraction, default=0.1, help="probability that a dimension mutates")
    e.add_argument("--calib-images", type=_positive, default=2000, help="training images for BN recalibration")
    e.add_argument("--batch-size", type=_positive, default=256)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=_positive)
    e.add_argument("--out", help="default: <run>/evolve")
    e.add_argument("--resume", action="store_true", help="continue the search saved in --out")
    _add_budget(e)
    e.set_defaults(fn=_evolve)
