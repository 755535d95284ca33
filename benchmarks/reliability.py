"""Bad inputs, tried as a new user would: every one must end in one line on stderr, exit code 2, nothing written.

    python benchmarks/reliability.py [--out docs/reliability.md]
Each case runs the CLI in-process (``shiftaddaug.cli.main``) in a fresh temporary folder holding only the files the
case sets up (and, for the cases that need one, a finished tiny run). It records the exit code, whether stderr held
exactly one line, whether anything escaped as a traceback, and which files the command left behind. Prints and
writes a markdown table; exits non-zero if any case misbehaved. The faults injected into running trainings (kill -9
mid-epoch and mid-write, two processes on one folder, a NaN mid-run) are tests: tests/test_runs.py.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shiftaddaug.cli import main
from shiftaddaug.models import create_model

TINY = ["dataset=synthetic", "model=resnet20", "epochs=1", "batch_size=32", "train_subset=64", "test_subset=32",
        "workers=0", "threads=1"]

# a one-space grid, with a constraint every network meets: the case's own fault is the only one
SMALL = ["--widths", "0.25", "--resolutions", "28", "--multiples", "2.2", "--samples", "5", "--workers", "1",
         "--energy-uj", "1e9"]

BAD_VALUES = {  # key -> values that are ill-typed, out of range or unknown
    "epochs": ["0", "-1", "1.5", "abc", "true"], "batch_size": ["0", "-3", "x"], "seed": ["-1", "abc"],
    "train_subset": ["0", "-5"], "test_subset": ["0"], "workers": ["-1"], "threads": ["0", "-1"],
    "input_size": ["0", "-5", "abc"], "bn_calibration_images": ["-1"], "weight_bits": ["1", "17", "abc"],
    "lr": ["0", "-1", "abc", ".inf", ".nan"], "momentum": ["-1", "1", "2"], "weight_decay": ["-1"],
    "warmup_epochs": ["-1", "abc"], "label_smoothing": ["1", "2", "-0.1"], "grad_clip": ["0", "abc"],
    "alpha": ["-1"], "width_aug_frac": ["2"], "remap_lr_scale": ["-1"], "remap_kl": ["-1"], "eta": ["-1"],
    "dropout": ["1.5", "-0.1"], "divergence_factor": ["-1"], "overwrite": ["maybe"], "nesterov": ["2"],
    "channels_last": ["2"], "mf_stem_head": ["maybe"], "skip_corrupt_images": ["3"], "aug_op": ["both"],
    "remap": ["lap"], "shift_mode": ["x"], "device": ["tpu", "cuda:x"], "model": ["resnet99"],
    "dataset": ["mnist3d"], "op": ["mul", "[shift, mul]", "5"], "name": ["../x", "/abs", "a/b"],
    "width_factors": ["[0.5, 1]", "abc"], "expand_factors": ["abc"], "epochz": ["3"], "extra": ["5"],
    "task": ["detect"], "seg_head": ["fcn"], "output_stride": ["6", "abc"],
}
SEG = ["task=seg", "dataset=voc", "data_dir=voc", "input_size=24", "epochs=1", "workers=0", "threads=1"]


def voc(fault: str | None = None):
    """A two-image VOC 2012 folder, with ``fault``: "no masks", "wrong size" or "rgb mask"."""
    from PIL import Image

    def setup(tmp):
        base = tmp / "voc" / "VOCdevkit" / "VOC2012"
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (base / sub).mkdir(parents=True)
        for i, split in enumerate(("train", "val")):
            Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(base / f"JPEGImages/{i}.jpg")
            size = (10, 10) if fault == "wrong size" else (30, 40)
            mask = Image.fromarray(np.zeros(size + ((3,) if fault == "rgb mask" else ()), np.uint8))
            mask.save(base / f"SegmentationClass/{i}.png")
            (base / f"ImageSets/Segmentation/{split}.txt").write_text(f"{i}\n")
        if fault == "no masks":
            shutil.rmtree(base / "SegmentationClass")
    return setup


def finished_run(root: Path, name: str, *extra: str) -> Path:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", *TINY, f"out_dir={root}", f"name={name}", *extra]) == 0
    return root / name


def cases(root: Path) -> list[tuple[str, list[str], object]]:
    """(what, argv, setup) with setup(tmp) creating the case's files."""
    out = [(f"train {k}={v}", ["train", *TINY, f"{k}={v}"], None) for k, vs in BAD_VALUES.items() for v in vs]
    done, aug = finished_run(root, "done"), finished_run(root, "aug", "aug_op=mult")
    ckpt = torch.load(done / "last.pt", weights_only=True)

    def copy_run(tmp):  # where train's default out_dir puts runs "done" and "aug"
        shutil.copytree(done, tmp / "runs" / "done")
        shutil.copytree(aug, tmp / "runs" / "aug")

    def write(name, data):
        def setup(tmp):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, bytes):
                (tmp / name).write_bytes(data)
            elif isinstance(data, dict) and "format" in data:
                torch.save(data, tmp / name)
            else:
                (tmp / name).write_text(data if isinstance(data, str) else json.dumps(data))
        return setup

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    nan = {**ckpt, "model": {k: v * torch.nan if v.is_floating_point() else v for k, v in ckpt["model"].items()}}
    cut = {**ckpt, "model": {**ckpt["model"], "stem.conv.weight": ckpt["model"]["stem.conv.weight"][:3]}}
    labels = bytes([0, 0, 8, 1]) + (4).to_bytes(4, "big") + bytes([1, 2, 99, 3])
    arch = create_model("resnet20", 10).arch

    def arch_with(**block):  # the resnet20 architecture with its second stage's first block changed
        a = json.loads(json.dumps(arch))
        a["stages"][1]["blocks"][0].update(block)
        return a
    out += [
        ("remap_kl on direct training", ["train", *TINY, "remap_kl=1"], None),
        ("shift_mode=ps with augmentation", ["train", *TINY, "shift_mode=ps", "aug_op=mult"], None),
        ("override without =", ["train", *TINY, "epochs"], None),
        ("override with broken YAML", ["train", *TINY, "alpha='"], None),
        ("config file missing", ["train", "nope.yaml"], None),
        ("config file is a folder", ["train", "cfgdir"], lambda t: (t / "cfgdir").mkdir()),
        ("config file is binary", ["train", "bin.yaml"], write("bin.yaml", b"\xff\xfe\x00\x01")),
        ("config file is invalid YAML", ["train", "bad.yaml"], write("bad.yaml", "a: [1,\n")),
        ("config file is a list", ["train", "list.yaml"], write("list.yaml", "- 1\n- 2\n")),
        ("config file has an unknown key", ["train", "k.yaml"], write("k.yaml", "epochz: 3\n")),
        ("out_dir is a file", ["train", *TINY, "out_dir=f", "name=x"], write("f", "a file")),
        ("data_dir does not exist", ["train", *TINY, "dataset=fashion-mnist", "data_dir=nope"], None),
        ("cifar10 folder empty", ["train", *TINY, "dataset=cifar10", "data_dir=empty"],
         lambda t: (t / "empty").mkdir()),
        ("Fashion-MNIST labels out of range", ["train", *TINY, "dataset=fashion-mnist", "data_dir=fm"],
         lambda t: [write(f"fm/{n}", labels if "labels" in n else bytes([0, 0, 8, 3]) + b"".join(
             s.to_bytes(4, "big") for s in (4, 28, 28)) + bytes(4 * 784))(t)
             for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                       "t10k-labels-idx1-ubyte")]),
        ("corrupt IDX file", ["train", *TINY, "dataset=fashion-mnist", "data_dir=fm"],
         write("fm/train-images-idx3-ubyte", b"\x00\x00\x0d\x01garbage")),
        ("CIFAR pickle labels out of range", ["train", *TINY, "dataset=cifar10", "data_dir=c"],
         lambda t: [write(f"c/cifar-10-batches-py/{n}", pickle.dumps(
             {"data": np.zeros((2, 3072), np.uint8), "labels": [1, 10]}))(t)
             for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]]),
        ("image folders with different classes", ["train", *TINY, "dataset=imagefolder", "data_dir=im"],
         lambda t: [(t / "im" / s / c).mkdir(parents=True) for s, c in (("train", "a"), ("val", "b"))]),
        ("arch: no such file", ["train", *TINY, "arch=none.json"], None),
        ("arch: not JSON", ["train", *TINY, "arch=a.json"], write("a.json", "{\"model\": ")),
        ("arch: no model entry", ["train", *TINY, "arch=a.json"], write("a.json", {"stages": []})),
        ("arch: unknown operator", ["train", *TINY, "arch=a.json"], write("a.json", arch_with(op="xor"))),
        ("arch: even kernel", ["train", *TINY, "arch=a.json"], write("a.json", arch_with(kernel=4))),
        ("arch: negative expand", ["train", *TINY, "arch=a.json"], write("a.json", arch_with(expand=-1))),
        ("arch: depth above its blocks", ["train", *TINY, "arch=a.json"],
         write("a.json", {**arch, "stages": [{**arch["stages"][0], "depth": 9}, *arch["stages"][1:]]})),
        ("arch: a stage missing", ["train", *TINY, "arch=a.json"],
         write("a.json", {**arch, "stages": arch["stages"][1:]})),
        ("arch of another model", ["train", *TINY, "model=mcunet", "arch=a.json"], write("a.json", arch)),
        ("arch and op together", ["train", *TINY, "arch=a.json", "op=shift"], write("a.json", arch)),
        ("profile --arch with --op", ["profile", "custom", "--arch", "a.json", "--op", "add"], write("a.json", arch)),
        ("profile custom without --arch", ["profile", "custom"], None),
        ("an existing run without --resume", ["train", *TINY, "name=done"], copy_run),
        ("--resume without a run", ["train", *TINY, "name=none", "--resume"], None),
        ("--resume with another lr", ["train", *TINY, "name=done", "lr=0.1", "--resume"], copy_run),
        ("--resume with another op", ["train", *TINY, "name=done", "op=shift", "--resume"], copy_run),
        ("overwrite a folder with foreign files", ["train", *TINY, "name=mine", "overwrite=true"],
         write("runs/mine/notes.txt", "mine")),
        ("eval: no such checkpoint", ["eval", "none.pt"], None),
        ("eval: empty file", ["eval", "e.pt"], write("e.pt", b"")),
        ("eval: a text file", ["eval", "t.pt"], write("t.pt", "hello")),
        ("eval: a truncated checkpoint", ["eval", "trunc.pt"],
         lambda t: (t / "trunc.pt").write_bytes((done / "last.pt").read_bytes()[:5000])),
        ("eval: a pickle with a code payload", ["eval", "evil.pt"],
         lambda t: torch.save({"format": 1, "x": Payload()}, t / "evil.pt")),
        ("eval: another format version", ["eval", "v.pt"], write("v.pt", {**ckpt, "format": 99})),
        ("eval: no kind", ["eval", "k.pt"], write("k.pt", {k: v for k, v in ckpt.items() if k != "kind"})),
        ("eval: a plain state dict", ["eval", "sd.pt"], lambda t: torch.save(ckpt["model"], t / "sd.pt")),
        ("eval: NaN weights", ["eval", "nan.pt"], write("nan.pt", nan)),
        ("eval: a tensor of another shape", ["eval", "cut.pt"], write("cut.pt", cut)),
        ("eval: unknown config key", ["eval", "u.pt"], write("u.pt", {**ckpt, "config": {**ckpt["config"], "zz": 1}})),
        ("eval --batch-size 0", ["eval", "runs/done/last.pt", "--batch-size", "0"], copy_run),
        ("eval --batch-size -1", ["eval", "runs/done/last.pt", "--batch-size", "-1"], copy_run),
        ("eval --batch-size abc", ["eval", "runs/done/last.pt", "--batch-size", "abc"], copy_run),
        ("export a plain model's checkpoint", ["export", "runs/done/last.pt", "-o", "x.pt"], copy_run),
        ("export -o an existing folder", ["export", "runs/aug/last.pt", "-o", "runs/done"], copy_run),
        ("export: no such checkpoint", ["export", "none.pt"], None),
        ("export -o an unwritable path", ["export", "runs/aug/last.pt", "-o", "/proc/nope/x.pt"], copy_run),
        ("compare: no such folder", ["compare", "nope"], None),
        ("compare: summary.json is {}", ["compare", "s"], write("s/summary.json", {})),
        ("compare: summary.json is []", ["compare", "s"], write("s/summary.json", [])),
        ("compare: summary.json is corrupt", ["compare", "s"], write("s/summary.json", "{\"a\": ")),
        ("compare: summary.json is binary", ["compare", "s"], write("s/summary.json", b"\xff\x00")),
        ("plot: summary.json is []", ["plot", "s", "-o", "p.png"], write("s/summary.json", [])),
        ("plot: neither runs nor --zoo", ["plot"], None),
        ("plot --zoo --num-classes 0", ["plot", "--zoo", "--num-classes", "0"], None),
        ("profile: unknown model", ["profile", "resnet99"], None),
        ("profile: unknown operator", ["profile", "resnet20", "--op", "mul"], None),
        ("profile --in-chans 0", ["profile", "resnet20", "--in-chans", "0"], None),
        ("profile --input-size 0", ["profile", "resnet20", "--input-size", "0"], None),
        ("profile --input-size -5", ["profile", "resnet20", "--input-size", "-5"], None),
        ("profile --num-classes 0", ["profile", "resnet20", "--num-classes", "0"], None),
        ("profile --bits 7", ["profile", "resnet20", "--hw", "eyeriss", "--bits", "7"], None),
        ("search space: no constraint", ["search", "space", "--model", "mcunet"], None),
        ("search space: unknown model", ["search", "space", "--model", "mcunet9", *SMALL], None),
        ("search space: unknown operator", ["search", "space", "--model", "mcunet", "--op", "shift,mul", *SMALL],
         None),
        ("search space --energy-uj -1", ["search", "space", "--model", "mcunet", "--energy-uj", "-1"], None),
        ("search space --widths 0", ["search", "space", "--model", "mcunet", *SMALL, "--widths", "0"], None),
        ("search space --multiples 0.5", ["search", "space", "--model", "mcunet", *SMALL, "--multiples", "0.5"],
         None),
        ("search space --samples 0", ["search", "space", "--model", "mcunet", *SMALL, "--samples", "0"], None),
        ("search space: an impossible constraint", ["search", "space", "--model", "mcunet", *SMALL[:-2],
                                                    "--energy-uj", "0.001"], None),
        ("search space: no latency table", ["search", "space", "--model", "mcunet", *SMALL, "--latency-table",
                                            "l.csv"], None),
        ("search space: latency table without its columns", ["search", "space", "--model", "mcunet", *SMALL,
                                                              "--latency-ms", "1", "--latency-table", "l.csv"],
         write("l.csv", "layer,ms\nconv,1\n")),
        ("search space: latency table lacking a layer", ["search", "space", "--model", "mcunet", *SMALL,
                                                         "--latency-ms", "1", "--latency-table", "l.csv"],
         write("l.csv", "layer,op,in_ch,out_ch,kernel,stride,groups,in_size,latency_ms\nconv,add,8,8,3,1,8,28,1\n")),
        ("search train: no such space", ["search", "train", "s.json", *TINY[:1]], None),
        ("search train: space not JSON", ["search", "train", "s.json", *TINY[:1]], write("s.json", "{")),
        ("search train: space without a base", ["search", "train", "s.json", *TINY[:1]], write("s.json", {"a": 1})),
        ("search train with op", ["search", "train", "s.json", "op=shift"], write("s.json", {"a": 1})),
        ("search train --ops shift,mul", ["search", "train", "space.json", "--ops", "shift,mul", *TINY[:1]],
         lambda t: main(["search", "space", "--model", "mcunet", *SMALL, "--out", str(t)])),
        ("search evolve: no such run", ["search", "evolve", "runs/none", "--energy-uj", "5"], None),
        ("search evolve: not a search supernet", ["search", "evolve", "runs/done", "--energy-uj", "5"], copy_run),
        ("search evolve --parent-ratio 2", ["search", "evolve", "runs/done", "--parent-ratio", "2"], copy_run),
        ("task=seg on a classification dataset", ["train", *TINY, "task=seg"], None),
        ("a segmentation dataset without task=seg", ["train", *SEG[1:]], voc()),
        ("output_stride on a classification run", ["train", *TINY, "output_stride=8"], None),
        ("voc: a folder without masks", ["train", *SEG], voc("no masks")),
        ("voc: a mask of another size than its image", ["train", *SEG], voc("wrong size")),
        ("voc: an RGB mask", ["train", *SEG], voc("rgb mask")),
        ("eval --examples on a classification run", ["eval", "runs/done/last.pt", "--examples", "x.png"], copy_run),
        ("deploy: no such checkpoint", ["deploy", "none.pt", "--out", "c"], None),
        ("deploy --out a folder in use", ["deploy", "runs/done/last.pt", "--out", "runs/aug"], copy_run),
        ("deploy --out an unwritable path", ["deploy", "runs/done/last.pt", "--out", "/proc/nope/c"], copy_run),
        ("deploy --act-bits 12", ["deploy", "runs/done/last.pt", "--out", "c", "--act-bits", "12"], copy_run),
        ("deploy --scale-terms 9", ["deploy", "runs/done/last.pt", "--out", "c", "--scale-terms", "9"], copy_run),
        ("deploy --calib-images 0", ["deploy", "runs/done/last.pt", "--out", "c", "--calib-images", "0"], copy_run),
        ("deploy --check -1", ["deploy", "runs/done/last.pt", "--out", "c", "--check", "-1"], copy_run),
        ("deploy: NaN weights", ["deploy", "nan.pt", "--out", "c"], write("nan.pt", nan)),
        ("unknown command", ["trian"], None),
        ("no command", [], None),
    ]
    return out


def run_case(argv: list[str], setup) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp, cwd = Path(d), os.getcwd()
        if setup:
            setup(tmp)
        before = {p for p in tmp.rglob("*")}
        err, escaped = io.StringIO(), None
        os.chdir(tmp)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                code = main(argv)
        except BaseException as e:  # anything main() did not turn into an exit code
            code, escaped = None, f"{type(e).__name__}: {e}"
        finally:
            os.chdir(cwd)
        left = sorted(str(p.relative_to(tmp)) for p in set(tmp.rglob("*")) - before if not p.is_dir())
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    return {"code": code, "lines": len(lines), "message": lines[-1] if lines else (escaped or ""),
            "escaped": escaped, "left": left}


def main_() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/reliability.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows, bad = [], 0
    with tempfile.TemporaryDirectory() as root:
        for what, argv, setup in cases(Path(root)):
            r = run_case(argv, setup)
            ok = r["code"] == 2 and r["lines"] == 1 and not r["escaped"] and not r["left"]
            bad += not ok
            msg = r["message"].replace("|", "/").removeprefix("shiftaddaug: error: ")
            rows.append(f"| {what} | {r['code']} | {'yes' if r['lines'] == 1 else r['lines']} | "
                        f"{', '.join(r['left']) or '-'} | {'ok' if ok else '**FAIL**'} | {msg[:110]} |")
    head = (f"# Bad inputs and what shiftaddaug answers\n\nWritten by `python benchmarks/reliability.py` on "
            f"{time.strftime('%Y-%m-%d')} ({platform.machine()}, Python {platform.python_version()}). ")
    summary = f"{len(rows)} bad inputs, {len(rows) - bad} answered as promised (one line, exit 2, nothing written), " \
              f"{bad} not."
    table = head + "\n".join([summary, "", "| input | exit | one line | files left | verdict | message (first 110 "
                                            "characters) |", "|---|---|---|---|---|---|", *rows])
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main_()
