"""Layer kernels: forward+backward time and peak memory of nn.Conv2d, ShiftConv2d, the reference AdderConv2d, an
AdderNet-style unfold-and-broadcast adder, and the compiled adder kernel; then end-to-end training images/s.

    python benchmarks/kernels.py                     # batch 128, 2 threads, MobileNet-style shapes
    python benchmarks/kernels.py --quick             # batch 32, fewer repeats (a smoke run)
Each (shape, implementation) runs in a fresh process, so its peak-RSS growth is its own. Results go to
benchmarks/out/kernels.json and kernels.md.
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
import torch.nn as nn
import torch.nn.functional as F

# (name, cin, cout, size, kernel, stride, groups): pointwise 16..96 channels at 8..32 px, 3x3 depthwise
SHAPES = [
    ("pw 16->48 @32", 16, 48, 32, 1, 1, 1),
    ("pw 48->16 @32", 48, 16, 32, 1, 1, 1),
    ("pw 32->96 @16", 32, 96, 16, 1, 1, 1),
    ("pw 96->32 @16", 96, 32, 16, 1, 1, 1),
    ("pw 96->96 @8", 96, 96, 8, 1, 1, 1),
    ("dw3x3 48 @32", 48, 48, 32, 3, 1, 48),
    ("dw3x3 96 @16", 96, 96, 16, 3, 1, 96),
    ("dw3x3 96 @16 s2", 96, 96, 16, 3, 2, 96),
]
IMPLS = ["conv", "shift", "adder-reference", "adder-unfold", "adder-kernel"]


class UnfoldAdder(nn.Module):
    """AdderNet's official formulation: unfold, then broadcast ``W[:, :, None] - X[None]`` over every position."""

    def __init__(self, cin, cout, k, stride, groups):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin // groups, k, k))
        self.k, self.stride, self.groups = k, stride, groups

    def forward(self, x):
        n, _, h, w = x.shape
        cols = F.unfold(x, self.k, padding=self.k // 2, stride=self.stride)  # [N, C*k*k, L]
        g, o = self.groups, self.weight.shape[0]
        cols = cols.view(n, g, -1, cols.shape[-1]).permute(1, 2, 0, 3).flatten(2)  # [G, K, N*L]
        wg = self.weight.view(g, o // g, -1)  # [G, O/G, K]
        y = -(wg[..., None] - cols[:, None]).abs().sum(2)  # [G, O/G, N*L]: the O x K x N*L temporary
        oh = (h + 2 * (self.k // 2) - self.k) // self.stride + 1
        return y.view(o, n, oh, -1).permute(1, 0, 2, 3)


def build(impl, cin, cout, k, stride, groups):
    from shiftaddaug.ops import AdderConv2d, ShiftConv2d

    if impl == "adder-unfold":
        return UnfoldAdder(cin, cout, k, stride, groups)
    cls = {"conv": nn.Conv2d, "shift": ShiftConv2d}.get(impl, AdderConv2d)
    return cls(cin, cout, k, stride, k // 2, groups=groups, bias=False)


def child(args) -> None:
    """One measurement in this process: peak RSS growth of the first step, then the median step time."""
    import resource
    import statistics

    torch.set_num_threads(args.threads)
    if args.impl == "adder-reference":
        os.environ["SHIFTADDAUG_KERNELS"] = "reference"
    _, cin, cout, size, k, stride, groups = next(s for s in SHAPES if s[0] == args.shape)
    layer = build(args.impl, cin, cout, k, stride, groups)
    x = torch.randn(args.batch, cin, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    layer.to(memory_format=torch.channels_last)
    if args.impl == "adder-kernel":  # build/load the extension outside the measurement
        from shiftaddaug.ops import kernels
        kernels.for_tensor(x)
    with torch.no_grad():  # a dense channels-last output gradient, as BatchNorm's backward hands a real layer
        gy = torch.randn_like(layer(x)).contiguous(memory_format=torch.channels_last)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        layer(x).backward(gy)
        times.append(time.perf_counter() - t0)
        if i == 0:
            peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        x.grad = None
        layer.weight.grad = None
    unfolded_mb = args.batch * cin * k * k * ((size + stride - 1) // stride) ** 2 * 4 / 2**20
    print(json.dumps({"ms": 1000 * statistics.median(times[1:]), "peak_mb": peak_mb, "unfolded_mb": unfolded_mb}))


def end_to_end(args) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from throughput import direct_step, measure

    from shiftaddaug.models import create_model

    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(10, (args.batch,))
    out = {}
    for op in ("mult", "shift", "add"):
        m = create_model("mobilenetv2_tiny", 10, op=op, in_chans=1, input_size=28).to(memory_format=torch.channels_last)
        out[op] = measure(m, direct_step, x, y, args.e2e_steps)
        print(f"  mobilenetv2_tiny {op:5s} {out[op]:7.1f} img/s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--e2e-steps", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--shape", help=argparse.SUPPRESS)
    ap.add_argument("--impl", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.batch, args.repeats, args.e2e_steps = 32, 2, 3
    if args.impl:
        return child(args)

    res = {}
    print(f"batch {args.batch}, {args.threads} threads, channels_last, forward+backward, median of {args.repeats}")
    print(f"{'shape':18s} {'unfolded':>8s}" + "".join(f"{i:>17s}" for i in IMPLS) + "  kernel/conv  unfold/kernel")
    for shape in SHAPES:
        row = {}
        for impl in IMPLS:
            cmd = [sys.executable, __file__, "--shape", shape[0], "--impl", impl, "--batch", str(args.batch),
                   "--threads", str(args.threads), "--repeats", str(1 if impl == "adder-unfold" else args.repeats)]
            p = subprocess.run(cmd, capture_output=True, text=True)
            ok = p.returncode == 0
            row[impl] = json.loads(p.stdout.strip().splitlines()[-1]) if ok else {"error": p.stderr[-300:]}
        res[shape[0]] = row

        def cell(r):
            return f"{r['ms']:8.1f}ms {r['peak_mb']:5.0f}MB" if "ms" in r else f"{'failed':>16s}"

        ratio = row["adder-kernel"].get("ms", float("nan")) / row["conv"].get("ms", float("nan"))
        speedup = row["adder-unfold"].get("ms", float("nan")) / row["adder-kernel"].get("ms", float("nan"))
        unf = row["conv"].get("unfolded_mb", float("nan"))
        print(f"{shape[0]:18s} {unf:6.0f}MB" + "".join(f"{cell(row[i]):>17s}" for i in IMPLS)
              + f"  {ratio:10.2f}x {speedup:12.1f}x", flush=True)
    print("end-to-end training, mobilenetv2_tiny @28px:")
    e2e = end_to_end(args)
    record = {"batch": args.batch, "threads": args.threads, "layers": res, "end_to_end_img_s": e2e,
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d")}
    out = Path("benchmarks/out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.json").write_text(json.dumps(record, indent=2))
    print(f"add / mult training throughput: {e2e['add'] / e2e['mult']:.2f}x; wrote {out / 'kernels.json'}")


if __name__ == "__main__":
    main()
