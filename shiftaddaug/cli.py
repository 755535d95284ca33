"""Command line: ``shiftaddaug train | eval | export | compare | profile | plot | models | search | deploy``."""
from __future__ import annotations

import argparse
import json
import sys

from .errors import UserError


def _train(args) -> None:
    from . import dist
    from .config import load_config
    from .train import train

    cfg = load_config(args.config, args.overrides)
    summary = train(cfg, resume=args.resume)
    if not dist.reports():  # under torchrun, rank 0 reports
        return
    what = "mIoU" if summary["metric"] == "miou" else "top-1"
    print(f"{summary['name']}: final {what} {summary['final_acc']:.2f} %, best {summary['best_acc']:.2f} % "
          f"({summary['train_time_s']:.0f} s training) -> {cfg.run_dir}")


def _eval(args) -> None:
    from .build import resolve_input_size
    from .data import build_loaders, dataset_info
    from .evaluate import evaluate
    from .runs import load_model

    _, cfg, model = load_model(args.checkpoint, {"data_dir": args.data_dir} if args.data_dir else {})
    if args.examples and dataset_info(cfg.dataset).task != "seg":
        raise UserError(f"--examples draws segmentation scenes; {cfg.dataset} is a classification dataset")
    data = build_loaders(cfg.dataset, cfg.data_dir, args.batch_size, resolve_input_size(cfg),
                         test_subset=cfg.test_subset, workers=cfg.workers)
    res = evaluate(model, data.test)
    if "miou" in res:  # segmentation: mean and per-class IoU, pixel accuracy
        names = dataset_info(cfg.dataset).class_names or [str(i) for i in range(len(res["iou"]))]
        if args.json:
            print(json.dumps({"checkpoint": args.checkpoint, "dataset": cfg.dataset, "miou": res["miou"],
                              "pixel_acc": res["acc"], "loss": res["loss"], "iou": dict(zip(names, res["iou"]))}))
        else:
            print(f"{args.checkpoint}: {cfg.dataset} test mIoU {res['miou']:.2f} %  pixel accuracy "
                  f"{res['acc']:.2f} %  loss {res['loss']:.4f}")
            for name, v in zip(names, res["iou"]):
                print(f"  {name:14s} IoU {v:6.2f} %")
        if args.examples:
            _seg_examples(model, data.test, names, args.examples)
    elif args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "dataset": cfg.dataset, "top1": res["acc"],
                          "loss": res["loss"]}))
    else:
        print(f"{args.checkpoint}: {cfg.dataset} test top-1 {res['acc']:.2f} %  loss {res['loss']:.4f}")


def _seg_examples(model, loader, names, path: str, n: int = 6) -> None:
    from pathlib import Path

    from .evaluate import predict
    from .plots import seg_examples

    x, y = next(iter(loader))
    x, y = x[:n], y[:n]
    pred = predict(model, x)
    lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    shown = ((x - lo) / (hi - lo).clamp_min(1e-6)).permute(0, 2, 3, 1)  # each image stretched to [0, 1]
    seg_examples((shown[..., 0] if shown.shape[-1] == 1 else shown).numpy(), y.numpy(), pred.numpy(), names, Path(path))
    print(f"wrote {path}")


def _export(args) -> None:
    from pathlib import Path

    from .runs import export_target, load_model

    ckpt, cfg, supernet = load_model(args.checkpoint)
    if ckpt["kind"] != "supernet":
        raise UserError(f"{args.checkpoint} is a {ckpt['kind']} checkpoint, not a ShiftAddAug supernet: "
                        "nothing to export")
    out = Path(args.output or Path(args.checkpoint).with_name("exported.pt"))
    if out.is_dir():
        raise UserError(f"-o {out} is a folder; give a file path such as {out / 'exported.pt'}")
    export_target(supernet, cfg, ckpt["num_classes"], ckpt["in_chans"], out)
    print(f"exported the {cfg.op} target of {args.checkpoint} -> {out}")


SUMMARY_KEYS = ("config", "final_acc", "train_time_s", "params", "macs", "energy_uj", "latency_ms")


def _summaries(runs: list[str]) -> list:
    from pathlib import Path

    rows = []
    for d in map(Path, runs):
        f = d / "summary.json"
        if not f.exists():
            raise UserError(f"{d} holds no finished run (no summary.json); train it first or check the path")
        try:
            summary = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            summary = None
        if not isinstance(summary, dict) or any(k not in summary for k in SUMMARY_KEYS):
            raise UserError(f"{f} is corrupt or not a shiftaddaug summary; retrain the run")
        rows.append((d, summary))
    return rows


def _compare(args) -> None:
    from .ops import OPERATORS

    rows = _summaries(args.runs)
    base = rows[0][1]["final_acc"]
    macs_head = " ".join(f"{op + ' MACs':>11s}" for op in OPERATORS)
    print(f"{'run':28s} {'training':25s} {'top-1 %':>8s} {'vs first':>9s} {'train s':>8s} {'params':>9s} "
          f"{macs_head} {'energy uJ':>10s} {'lat. ms':>8s}")
    for d, s in rows:
        c = s["config"]
        how = "direct" if c["aug_op"] == "none" else f"ShiftAddAug {c['aug_op']}/{c['remap']}"
        macs = " ".join(f"{s['macs'].get(op, 0) / 1e6:10.2f}M" for op in OPERATORS)
        print(f"{d.name[:28]:28s} {how:25s} {s['final_acc']:8.2f} {s['final_acc'] - base:+9.2f} "
              f"{s['train_time_s']:8.0f} {s['params']:9,d} {macs} {s['energy_uj']:10.1f} {s['latency_ms']:8.3f}")
        if (d / "exported.pt").exists():
            print(f"{'':28s} exported model: {d / 'exported.pt'}")


def _profile(args) -> None:
    from .hw import count, profile
    from .models import DEFAULT_RES, create_model
    from .ops import OPERATORS

    try:
        if args.arch:
            if args.op or args.input_size or args.mf_stem_head:
                raise UserError("--arch sets the operators and the resolution; drop --op, --input-size, --mf-stem-head")
            model = create_model(args.model, args.num_classes, in_chans=args.in_chans, arch=args.arch)
            size, args.op = model.arch["resolution"], "per block"
        else:
            size, args.op = args.input_size or DEFAULT_RES.get(args.model, 224), args.op or "mult"
            model = create_model(args.model, args.num_classes, op=args.op, in_chans=args.in_chans, input_size=size,
                                 mf_stem_head=args.mf_stem_head)
    except ValueError as e:
        raise UserError(str(e)) from None
    c = count(model, size, args.in_chans)
    hw = profile(model, size, bits=args.bits, hw=args.hw, in_chans=args.in_chans) if args.hw else None
    if args.json:
        print(json.dumps({"model": args.model, "op": args.op, "input_size": size, "params": c.params,
                          "macs": c.macs, "peak_activation_bytes": c.peak_activation_bytes,
                          "layers": [vars(lc) for lc in c.layers], "hw": hw.to_dict() if hw else None}))
        return
    if hw:  # the cost model's per-layer table
        print(f"{'layer':40s} {'type':6s} {'op':5s} {'out':>12s} {'MACs':>11s} {'mult':>10s} {'add':>10s} "
              f"{'shift':>10s} {'energy uJ':>10s} {'cycles':>10s}")
        for lc in hw.layers:
            print(f"{lc.name[:40]:40s} {lc.type:6s} {lc.op or '':5s} {'x'.join(map(str, lc.out_shape)):>12s} "
                  f"{lc.macs:11,d} {lc.count('mult'):10,d} {lc.count('add'):10,d} {lc.count('shift'):10,d} "
                  f"{lc.energy_pj / 1e6:10.3f} {lc.latency_cycles:10,.0f}")
    elif args.layers:
        print(f"{'layer':44s} {'op':5s} {'in':>14s} {'out':>14s} {'MACs':>12s} {'params':>9s}")
        for lc in c.layers:
            print(f"{lc.name:44s} {lc.op:5s} {'x'.join(map(str, lc.in_shape)):>14s} "
                  f"{'x'.join(map(str, lc.out_shape)):>14s} {lc.macs:12,d} {lc.params:9,d}")
    print(f"{args.model} op={args.op} @ {size}px, {args.num_classes} classes")
    print(f"  parameters       {c.params:,d} ({c.params / 1e6:.3f} M)")
    for op in OPERATORS:
        print(f"  {op + ' MACs':16s} {c.macs.get(op, 0):,d} ({c.macs.get(op, 0) / 1e6:.2f} M)")
    print(f"  peak activation  {c.peak_activation_bytes / 1024:.1f} KiB (int8, MCUNet definition)")
    if hw:
        t = hw.total
        print(f"  {args.hw}, {args.bits}-bit data (one image, batch 1):")
        print(f"    operations     mult {t['mult']:,d}  add {t['add']:,d}  shift {t['shift']:,d}")
        print(f"    energy         {t['energy_pj'] / 1e6:.2f} uJ  (" + ", ".join(
            f"{k} {v / t['energy_pj']:.0%}" for k, v in t["energy_by_level"].items()) + ")")
        print(f"    latency        {t['latency_cycles']:,.0f} cycles = {t['latency_ms']:.3f} ms")


def _plot(args) -> None:
    from pathlib import Path

    from . import plots

    if args.zoo == bool(args.runs):
        raise UserError("give either run folders (accuracy vs energy) or --zoo (energy of every zoo model)")
    if args.zoo:
        from .hw.zoo import zoo_costs

        out = Path(args.output or "zoo_energy.png")
        costs = zoo_costs(args.input_size, args.bits, args.hw, args.num_classes)
        plots.zoo_energy(costs, out, f"energy per image by operator type ({args.hw}, {args.bits} bit, "
                                     f"{'paper resolutions' if not args.input_size else f'{args.input_size} px'})")
    else:
        from .runs import run_cost

        out = Path(args.output or "accuracy_energy.png")
        runs = [(d.name, s, run_cost(s, args.bits, args.hw)) for d, s in _summaries(args.runs)]
        plots.accuracy_vs_energy(runs, out, args.bits, args.hw)
    print(f"wrote {out}")


def _models(args) -> None:
    from .models import DEFAULT_RES, list_models

    for name in list_models():
        print(f"{name:20s} paper resolution {DEFAULT_RES[name]}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as every other error of the CLI, not the usage block
        print(f"shiftaddaug: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


_positive, _non_negative = _int_at_least(1), _int_at_least(0)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="shiftaddaug", description="Multiplication-free tiny networks, "
                                "trained with hybrid computing augmentation (ShiftAddAug).")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a model from a YAML config plus key=value overrides")
    t.add_argument("config", nargs="?", help="YAML config file (optional)")
    t.add_argument("overrides", nargs="*", help="key=value, e.g. op=shift epochs=5")
    t.add_argument("--resume", action="store_true", help="continue runs/<name>/last.pt")
    t.set_defaults(fn=_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on its dataset's test split")
    e.add_argument("checkpoint")
    e.add_argument("--data-dir")
    e.add_argument("--batch-size", type=_positive, default=256)
    e.add_argument("--json", action="store_true")
    e.add_argument("--examples", metavar="PNG", help="segmentation: write image, ground truth and prediction of the "
                   "first test scenes side by side to PNG")
    e.set_defaults(fn=_eval)

    x = sub.add_parser("export", help="write the plain target model of a ShiftAddAug supernet checkpoint")
    x.add_argument("checkpoint")
    x.add_argument("-o", "--output", help="default: exported.pt beside the checkpoint")
    x.set_defaults(fn=_export)

    c = sub.add_parser("compare", help="one table of finished runs: accuracy, training time, inference cost")
    c.add_argument("runs", nargs="+", help="run folders (runs/<name>); the first is the baseline")
    c.set_defaults(fn=_compare)

    pr = sub.add_parser("profile", help="parameters, MACs per operator type, peak activation memory, energy, latency")
    pr.add_argument("model", help="a zoo model, or 'custom' with --arch")
    pr.add_argument("--arch", help="an architecture JSON file (it sets operators and resolution)")
    pr.add_argument("--op", help="an operator of the registry: mult (default), shift, add")
    pr.add_argument("--input-size", type=_positive)
    pr.add_argument("--num-classes", type=_positive, default=1000)
    pr.add_argument("--in-chans", type=_positive, default=3)
    pr.add_argument("--mf-stem-head", action="store_true")
    pr.add_argument("--layers", action="store_true", help="print one row per layer (always with --hw)")
    pr.add_argument("--hw", choices=["eyeriss", "shiftaddnas"],
                    help="also estimate energy and latency on this accelerator model (shiftaddnas: with "
                         "ShiftAddNAS's simplifications)")
    pr.add_argument("--bits", type=int, default=32, choices=[32, 16, 8], help="data width for --hw")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(fn=_profile)

    pl = sub.add_parser("plot", help="accuracy vs inference energy of finished runs, or energy of every zoo model")
    pl.add_argument("runs", nargs="*", help="run folders (runs/<name>)")
    pl.add_argument("--zoo", action="store_true", help="bars of energy by operator type for every zoo model")
    pl.add_argument("--hw", default="eyeriss", choices=["eyeriss", "shiftaddnas"])
    pl.add_argument("--bits", type=int, default=32, choices=[32, 16, 8])
    pl.add_argument("--input-size", type=_positive, help="--zoo: one resolution for all (default: each paper's)")
    pl.add_argument("--num-classes", type=_positive, default=100, help="--zoo: classifier size (default CIFAR-100)")
    pl.add_argument("-o", "--output", help="PNG path (default accuracy_energy.png or zoo_energy.png)")
    pl.set_defaults(fn=_plot)

    m = sub.add_parser("models", help="list the model zoo")
    m.set_defaults(fn=_models)

    from .deploy.cli import add_parser as add_deploy
    from .nas.cli import add_parser as add_search

    add_search(sub)
    add_deploy(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        # key=value overrides after an option (train cfg.yaml --resume epochs=3): argparse leaves them over
        if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = [*args.overrides, *extra]
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:  # --help, or a bad argument already reported in one line
        return e.code
    # a config file is optional: a first positional with '=' is an override
    if getattr(args, "config", None) and "=" in args.config:
        args.overrides, args.config = [args.config, *args.overrides], None
    try:
        args.fn(args)
    except UserError as e:
        print(f"shiftaddaug: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be read or written: say which, in one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"shiftaddaug: error: {where}{e.strerror or e}; check the path and its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shiftaddaug: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
