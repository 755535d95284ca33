"""Evidence for integer deployment on Fashion-MNIST: shift and adder MobileNetV2-Tiny models, trained directly, then
deployed at 8 and 16 bits. Per model and width: top-1 of the float model, of the generated C (native, the whole
test set) and of the NumPy engine (a subset, where it must equal the C bit for bit); flash and RAM bytes against
float32; RV32I instructions per image under QEMU's instruction counting; a Cortex-M4 build's size; CPU latency per
image of the native C against PyTorch float inference, both on one thread of this machine.

    python benchmarks/deploy.py                           # everything; trained models are reused when present
    python benchmarks/deploy.py --ops shift --bits 8 --train-subset 500 --epochs 1 --test-subset 50 \
        --engine-images 5 --latency-images 5 --qemu-images 1 --out-dir /tmp/d --record /tmp/d.json   # a smoke run

Each finished (op, bits) result goes into ``benchmarks/records/deploy_fmnist.json`` at once, with its CPU time.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from shiftaddaug.cli import main as cli
from shiftaddaug.data import build_loaders
from shiftaddaug.deploy import emit_c, load_bundle, run, targets
from shiftaddaug.deploy.emit import plan_buffers
from shiftaddaug.deploy.engine import input_integers
from shiftaddaug.runs import load_model

sys.path.insert(0, str(Path(__file__).parent))
from search import cpu_time  # noqa: E402  (the benchmarks' one CPU clock)

RECORD = Path(__file__).parent / "records" / "deploy_fmnist.json"
RV_TOOLS = ("riscv64-unknown-elf-gcc", "riscv64-unknown-elf-objdump", "qemu-system-riscv32")


def train(args, op: str) -> Path:
    """The directly trained model's checkpoint (trained unless its run folder already finished)."""
    name = f"deploy_{op}_s{args.seed}"
    run_dir = Path(args.out_dir) / name
    if not (run_dir / "summary.json").exists():
        overrides = [f"model={args.model}", f"op={op}", "dataset=fashion-mnist", f"train_subset={args.train_subset}",
                     f"epochs={args.epochs}", "batch_size=128", "lr=0.05", f"seed={args.seed}",
                     f"out_dir={args.out_dir}", f"name={name}", "overwrite=true"]
        if code := cli(["train", *overrides]):
            sys.exit(f"shiftaddaug train {name} failed (exit {code})")
    return run_dir / "last.pt"


def median_ms(fn, items) -> float:
    times = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def measure(args, ckpt: Path, op: str, bits: int, images: torch.Tensor, labels: np.ndarray, float_pred: np.ndarray,
            model: torch.nn.Module) -> dict:
    out = Path(args.out_dir) / f"c_{op}_{bits}"
    if out.exists():
        for p in out.iterdir():
            p.unlink()
        out.rmdir()
    if code := cli(["deploy", str(ckpt), "--out", str(out), "--act-bits", str(bits), "--check", "0",
                    "--calib-images", str(args.calib_images)]):
        sys.exit(f"shiftaddaug deploy failed (exit {code})")
    report = json.loads((out / "report.json").read_text())
    bundle = load_bundle(out / "bundle.npz")
    ints = input_integers(bundle, images.numpy())
    native = targets.NativeModel(out, bits, bundle.num_classes)
    c_out = native(ints)
    c_pred = c_out.argmax(1)
    n = args.engine_images
    e_out = run(bundle, images[:n].numpy())
    plan, arena = plan_buffers(bundle)
    res = {"op": op, "bits": bits, "images": len(labels),
           "float_top1": 100 * float((float_pred == labels).mean()),
           "c_top1": 100 * float((c_pred == labels).mean()),
           "agreement": 100 * float((c_pred == float_pred).mean()),
           "engine_images": n, "engine_top1": 100 * float((e_out.argmax(1) == labels[:n]).mean()),
           "engine_equals_c": bool(np.array_equal(e_out, c_out[:n])),
           "flash_bytes": report["weight_bytes"], "float32_flash_bytes": report["float32_weight_bytes"],
           "ram_bytes": report["arena_bytes"], "float32_ram_bytes": 4 * arena,  # the same plan, float32 tensors
           "ops_per_image": report["ops_per_image"], "multiplies": report["multiplies"]}
    torch.set_num_threads(1)  # one core for both: a microcontroller has one
    one = [images[i:i + 1] for i in range(args.latency_images)]
    with torch.no_grad():
        model(one[0])  # warm-up
        res["torch_float_ms"] = median_ms(model, one)
    res["c_native_ms"] = median_ms(native, [ints[i:i + 1] for i in range(args.latency_images)])
    if not targets.missing(*RV_TOOLS):
        rv = Path(args.out_dir) / f"rv32i_{op}_{bits}"
        rv.mkdir(parents=True, exist_ok=True)
        targets.write_sources(emit_c(bundle), rv, ints[:args.qemu_images])
        elf = targets.build_rv32i(rv)
        calls = targets.helper_calls(elf)
        outputs, instructions = targets.run_qemu(elf, timeout=1800)
        res.update({"rv32i_instructions_per_image": instructions, "rv32i_equals_engine": bool(
            np.array_equal(outputs, run(bundle, images[:args.qemu_images].numpy()))),
            "rv32i_mf_functions_calling_multiply": sorted(f for f in targets.MF_FUNCTIONS if calls.get(f))})
    if not targets.missing("arm-none-eabi-gcc", "arm-none-eabi-size"):
        res["cortex_m4_bytes"] = targets.cortex_m4_size(out)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", nargs="+", default=["shift", "add"], choices=["shift", "add"])
    ap.add_argument("--bits", nargs="+", type=int, default=[8, 16], choices=[8, 16])
    ap.add_argument("--model", default="mobilenetv2_tiny")
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-subset", type=int, default=None, help="test images (default: all 10,000)")
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--engine-images", type=int, default=500, help="test images through the NumPy engine")
    ap.add_argument("--qemu-images", type=int, default=2)
    ap.add_argument("--latency-images", type=int, default=200)
    ap.add_argument("--out-dir", default="benchmarks/out/deploy")
    ap.add_argument("--record", default=str(RECORD))
    args = ap.parse_args(argv)
    record_path = Path(args.record)
    record = json.loads(record_path.read_text()) if record_path.exists() else {"runs": {}}
    record.update({"recipe": {k: getattr(args, k) for k in ("model", "train_subset", "epochs", "seed", "test_subset",
                                                             "calib_images", "engine_images", "qemu_images",
                                                             "latency_images")},
                   "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "torch": torch.__version__})
    for op in args.ops:
        ckpt = train(args, op)
        summary = json.loads((ckpt.parent / "summary.json").read_text())
        trained = {k: summary[k] for k in ("final_acc", "best_acc", "train_time_s", "params", "energy_uj", "latency_ms")
                   if k in summary}
        _, cfg, model = load_model(ckpt)
        model = model.eval()
        data = build_loaders("fashion-mnist", cfg.data_dir, 1000, 28, test_subset=args.test_subset, workers=0)
        xs, ys = zip(*data.test)
        images, labels = torch.cat(xs), torch.cat(ys).numpy()
        with torch.no_grad():
            float_pred = torch.cat([model(x).argmax(1) for x in xs]).numpy()
        for bits in args.bits:
            key = f"{op}_{bits}"
            c0, t0 = cpu_time(), time.time()
            res = measure(args, ckpt, op, bits, images, labels, float_pred, model)
            res.update({"trained": trained, "cpu_s": cpu_time() - c0, "wall_s": time.time() - t0,
                        "date": time.strftime("%Y-%m-%d")})
            record["runs"][key] = res
            record_path.write_text(json.dumps(record, indent=1) + "\n")
            print(f"== {key}: float {res['float_top1']:.2f} %, C {res['c_top1']:.2f} % (same prediction "
                  f"{res['agreement']:.2f} %), engine on {res['engine_images']}: {res['engine_top1']:.2f} % "
                  f"(equals C: {res['engine_equals_c']}); flash {res['flash_bytes']:,} B (float32 "
                  f"{res['float32_flash_bytes']:,}), RAM {res['ram_bytes']:,} B (float32 "
                  f"{res['float32_ram_bytes']:,}); "
                  f"C {res['c_native_ms']:.3f} ms vs PyTorch {res['torch_float_ms']:.3f} ms; RV32I "
                  f"{res.get('rv32i_instructions_per_image')} instructions/image")


if __name__ == "__main__":
    main()
