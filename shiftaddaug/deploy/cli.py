"""``shiftaddaug deploy CHECKPOINT --out DIR``: the integer bundle of a trained model as C, with its report."""
from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import torch

from ..errors import UserError

HARNESS = Path(__file__).parent / "c" / "harness.c"


def _images(loader, n: int) -> torch.Tensor:
    xs, seen = [], 0
    for x, _ in loader:
        xs.append(x[: n - seen])
        seen += len(xs[-1])
        if seen >= n:
            break
    return torch.cat(xs)


def report(bundle, emitted, counts: dict, model: torch.nn.Module) -> dict:
    """Flash and RAM bytes, integer operations per image by kind, and where multiplies remain."""
    total = Counter()
    for c in counts.values():
        total.update(c)
    mults = {name: c["mult"] for name, c in counts.items() if c.get("mult")}
    return {"act_bits": bundle.act_bits, "weight_bytes": emitted.weight_bytes, "arena_bytes": emitted.arena_bytes,
            "float32_weight_bytes": 4 * sum(p.numel() for p in model.parameters()),
            "ops_per_image": dict(sorted(total.items())), "multiplies": mults,
            "nodes": {name: dict(sorted(c.items())) for name, c in counts.items()}}


def _deploy(args) -> None:
    from ..build import resolve_input_size
    from ..data import build_loaders
    from ..runs import load_model
    from . import emit_c, quantize, run, save_bundle

    ckpt, cfg, model = load_model(args.checkpoint, {"data_dir": args.calib_data} if args.calib_data else {})
    if ckpt["kind"] == "supernet":
        model = model.export()  # the target: what ShiftAddAug trains for
    if cfg.task != "cls":
        raise UserError(f"deploy covers classification models; {args.checkpoint} is a {cfg.task} model")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} exists and is not empty; choose a new folder")
    data = build_loaders(cfg.dataset, cfg.data_dir, 64, resolve_input_size(cfg), test_subset=args.check or None,
                         calib_images=args.calib_images, workers=0)
    try:
        bundle = quantize(model, _images(data.calib, args.calib_images), args.act_bits, scale_terms=args.scale_terms)
    except ValueError as e:
        raise UserError(str(e)) from None
    emitted = emit_c(bundle, "model")
    counts: dict = {}
    x, _ = next(iter(data.test))
    run(bundle, x[:1].numpy(), counts)
    rep = report(bundle, emitted, counts, model)
    if args.check:
        agree = correct_f = correct_q = n = 0
        with torch.no_grad():
            for x, y in data.test:
                f, q = model.eval()(x).argmax(1).numpy(), run(bundle, x.numpy()).argmax(1)
                agree += int((f == q).sum())
                correct_f, correct_q = correct_f + int((f == y.numpy()).sum()), correct_q + int((q == y.numpy()).sum())
                n += len(y)
        rep["check"] = {"images": n, "agreement": 100 * agree / n, "float_top1": 100 * correct_f / n,
                        "integer_top1": 100 * correct_q / n}
    tmp = Path(tempfile.mkdtemp(prefix=".deploy-", dir=out.parent if out.parent.exists() else None))
    (tmp / "model.c").write_text(emitted.source)
    (tmp / "model.h").write_text(emitted.header)
    shutil.copy(HARNESS, tmp / "harness.c")
    (tmp / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
    save_bundle(bundle, tmp / "bundle.npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    tmp.rename(out)  # all files or none
    print(f"{args.checkpoint} -> {out}/model.c, model.h, bundle.npz ({bundle.act_bits}-bit activations)")
    print(f"  flash (weights) {rep['weight_bytes']:,} B (float32: {rep['float32_weight_bytes']:,} B), "
          f"RAM (arena) {rep['arena_bytes']:,} B")
    print("  integer operations per image: " + ", ".join(f"{k} {v:,}" for k, v in rep["ops_per_image"].items()))
    print("  multiplies remain in: " + (", ".join(f"{k} ({v:,})" for k, v in rep["multiplies"].items()) or "none"))
    if args.check:
        c = rep["check"]
        print(f"  {c['images']} test images: float top-1 {c['float_top1']:.2f} %, integer {c['integer_top1']:.2f} %, "
              f"same prediction {c['agreement']:.2f} %")


def add_parser(sub) -> None:
    from ..cli import _positive

    d = sub.add_parser("deploy", help="integer inference of a trained classification model as C99, with a report")
    d.add_argument("checkpoint", help="a checkpoint (a ShiftAddAug supernet deploys its target)")
    d.add_argument("--out", required=True, help="a new folder for model.c, model.h, harness.c, bundle.npz, report.json")
    d.add_argument("--act-bits", type=int, choices=[8, 16], default=8)
    d.add_argument("--scale-terms", type=int, choices=range(1, 9), default=4, metavar="1-8",
                   help="powers of two per BatchNorm/requantisation scale")
    d.add_argument("--calib-data", help="the data folder of the model's dataset (default: its training config's)")
    d.add_argument("--calib-images", type=_positive, default=256, help="training images that set the formats")
    d.add_argument("--check", type=int, default=100, help="test images run through the integer engine (0: none)")
    d.set_defaults(fn=_deploy)
