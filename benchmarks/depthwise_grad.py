"""Depthwise convolution weight gradient on the CPU: oneDNN (PyTorch's default) against the per-tap reduction of
``shiftaddaug.ops.depthwise`` on layers whose kernel overhangs the input (the last stages of tiny models at 28-64 px,
widest in the augmented model), and on layers where it fits (where PyTorch's stays in use).

    python benchmarks/depthwise_grad.py                 # batch 128, 2 threads
Prints a table (ms per weight gradient, median of repeats) and writes benchmarks/out/depthwise_grad.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from shiftaddaug.ops.depthwise import depthwise_weight_grad

# (channels, input size, kernel, stride): 1042/1394/2453 channels: MobileNetV2-Tiny's widest augmented layers, 28 px
SHAPES = [(1042, 2, 3, 1), (1042, 1, 3, 1), (2453, 1, 3, 1), (1394, 2, 3, 2), (353, 4, 5, 1), (353, 3, 7, 1),
          (1042, 4, 7, 1), (353, 3, 3, 1), (353, 7, 3, 1)]


def _ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measure(batch, c, hw, k, s, repeats):
    x = torch.randn(batch, c, hw, hw).contiguous(memory_format=torch.channels_last)
    w, p = torch.randn(c, 1, k, k), k // 2
    gy = torch.randn_like(F.conv2d(x, w, padding=p, stride=s, groups=c))
    onednn = partial(torch.ops.aten.convolution_backward, gy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], c,
                     [False, True, False])
    taps = partial(depthwise_weight_grad, x, gy, (k, k), (s, s), (p, p), (1, 1))
    torch.testing.assert_close(taps(), onednn()[1], rtol=1e-4, atol=1e-3)  # the same gradient, or no timing
    return dict(channels=c, input=hw, kernel=k, stride=s, overhangs=hw < k, onednn_ms=_ms(onednn, repeats),
                taps_ms=_ms(taps, repeats))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/depthwise_grad.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    print(f"batch {args.batch}, {args.threads} threads, channels_last input; ms per weight gradient (median)")
    print(f"{'channels':>8} {'input':>5} {'kernel':>6} {'stride':>6} {'overhangs':>9} {'oneDNN':>8} {'per tap':>8}")
    for c, hw, k, s in SHAPES:
        row = measure(args.batch, c, hw, k, s, args.repeats)
        rows.append(row)
        print(f"{c:>8} {hw:>5} {k:>6} {s:>6} {str(row['overhangs']):>9} {row['onednn_ms']:>8.1f} "
              f"{row['taps_ms']:>8.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(batch=args.batch, threads=args.threads, torch=torch.__version__, rows=rows),
                                   indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
