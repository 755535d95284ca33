"""``shiftaddaug deploy CHECKPOINT --out DIR``: the integer bundle of a trained model (classification or
segmentation) as C, with its report."""
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


@torch.no_grad()
def check(model: torch.nn.Module, bundle, loader, num_classes: int, task: str) -> dict:
    """The float model against the integer engine on ``loader``: how often they predict the same (per image, or
    per pixel), and each one's top-1 (classification) or mIoU (segmentation)."""
    from ..metrics import ConfusionMatrix
    from . import run

    agree = n = 0
    scores = {"float": ConfusionMatrix(num_classes), "integer": ConfusionMatrix(num_classes)}
    for x, y in loader:
        f, q = model.eval()(x).argmax(1), torch.from_numpy(run(bundle, x.numpy()).argmax(1))
        agree, n = agree + int((f == q).sum()), n + f.numel()
        scores["float"].update(f, y)
        scores["integer"].update(q, y)
    if task == "seg":
        return {"pixels": n, "agreement": 100 * agree / n, **{f"{k}_miou": 100 * m.miou() for k, m in scores.items()}}
    return {"images": n, "agreement": 100 * agree / n, **{f"{k}_top1": 100 * m.pixel_acc() for k, m in scores.items()}}


def _deploy(args) -> None:
    from ..build import resolve_input_size
    from ..data import build_loaders, dataset_info
    from ..runs import load_model
    from . import emit_c, quantize, run, save_bundle

    ckpt, cfg, model = load_model(args.checkpoint, {"data_dir": args.calib_data} if args.calib_data else {})
    if ckpt["kind"] == "supernet":
        model = model.export()  # the target: what ShiftAddAug trains for
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} exists and is not empty; choose a new folder")
    data = build_loaders(cfg.dataset, cfg.data_dir, 64, resolve_input_size(cfg), test_subset=args.check or None,
                         calib_images=args.calib_images, workers=0)
    try:
        info = dataset_info(cfg.dataset)
        bundle = quantize(model, _images(data.calib, args.calib_images), args.act_bits, scale_terms=args.scale_terms,
                          per_channel=not args.per_tensor, calibration=args.calibration,
                          pixels=None if args.normalised_input else (info.mean, info.std))
    except ValueError as e:
        raise UserError(str(e)) from None
    emitted = emit_c(bundle, "model")
    counts: dict = {}
    x, _ = next(iter(data.test))
    run(bundle, x[:1].numpy(), counts)
    rep = report(bundle, emitted, counts, model)
    if args.check:
        rep["check"] = check(model, bundle, data.test, data.num_classes, cfg.task)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".deploy-", dir=out.parent))  # beside --out: the rename stays atomic
    except OSError as e:
        raise UserError(f"cannot write --out {out}: {e.strerror}") from None
    try:
        (tmp / "model.c").write_text(emitted.source)
        (tmp / "model.h").write_text(emitted.header)
        shutil.copy(HARNESS, tmp / "harness.c")
        (tmp / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
        save_bundle(bundle, tmp / "bundle.npz")
        if out.exists():
            out.rmdir()
        tmp.rename(out)  # all files or none
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; after a failure, nothing half-written
    print(f"{args.checkpoint} -> {out}/model.c, model.h, bundle.npz ({bundle.act_bits}-bit activations)")
    print(f"  flash (weights) {rep['weight_bytes']:,} B (float32: {rep['float32_weight_bytes']:,} B), "
          f"RAM (arena) {rep['arena_bytes']:,} B")
    print("  integer operations per image: " + ", ".join(f"{k} {v:,}" for k, v in rep["ops_per_image"].items()))
    print("  multiplies remain in: " + (", ".join(f"{k} ({v:,})" for k, v in rep["multiplies"].items()) or "none"))
    if args.check:
        c = rep["check"]
        if "images" in c:
            print(f"  {c['images']} test images: float top-1 {c['float_top1']:.2f} %, integer {c['integer_top1']:.2f} "
                  f"%, same prediction {c['agreement']:.2f} %")
        else:
            print(f"  {args.check} test images: float mIoU {c['float_miou']:.2f} %, integer {c['integer_miou']:.2f} "
                  f"%, same prediction on {c['agreement']:.2f} % of pixels")


def add_parser(sub) -> None:
    from ..cli import _non_negative, _positive

    d = sub.add_parser("deploy", help="integer inference of a trained model as C99, with a report")
    d.add_argument("checkpoint", help="a checkpoint (a ShiftAddAug supernet deploys its target)")
    d.add_argument("--out", required=True, help="a new folder for model.c, model.h, harness.c, bundle.npz, report.json")
    d.add_argument("--act-bits", type=int, choices=[8, 16], default=8)
    d.add_argument("--scale-terms", type=int, choices=range(1, 9), default=4, metavar="1-8",
                   help="powers of two per BatchNorm/requantisation scale")
    d.add_argument("--normalised-input", action="store_true",
                   help="the input as the normalised image on a power-of-two grid (default: its exact 8-bit pixels, "
                        "the normalisation folded into a multiplicative stem)")
    d.add_argument("--per-tensor", action="store_true",
                   help="one format per tensor everywhere (default: per channel where every reader takes it)")
    d.add_argument("--calibration", choices=["mse", "max"], default="mse",
                   help="each format: the least squared error on the calibration images (may clip rare outliers), "
                        "or the finest that holds their largest value")
    d.add_argument("--calib-data", help="the data folder of the model's dataset (default: its training config's)")
    d.add_argument("--calib-images", type=_positive, default=256, help="training images that set the formats")
    d.add_argument("--check", type=_non_negative, default=100,
                   help="test images run through the integer engine (0: none)")
    d.set_defaults(fn=_deploy)
