"""Where a training step's time goes: the direct step and the ShiftAddAug step, per pass and per component.

    python benchmarks/step_profile.py                                   # shift and add, MobileNetV2-Tiny, 28 px
    python benchmarks/step_profile.py --ops shift --steps 3 --warmup 1 --record /tmp/p.json   # a smoke run

torch.profiler records the trainer's own step (``train_step``: its ranges name the passes and the optimiser), and
module hooks open a range per remap, operator convolution, BatchNorm and activation. Every op's self time goes to
one component: the innermost module range around it in the forward pass, and for the backward pass the component
of the forward op that recorded the autograd node (sequence numbers link the two). Slices, concatenations, pads
and copies form their own component wherever they run. "Python, not in an op": the profiled step's wall time
minus all ops' self time (the sampler, ``set_active``, module calls). The un-profiled step time is measured apart.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import profile, record_function

from shiftaddaug.augment import ElasticConv2d, ElasticLinear, build_augmented
from shiftaddaug.config import TrainConfig
from shiftaddaug.evaluate import recalibrate_bn
from shiftaddaug.models import create_model
from shiftaddaug.ops.remap import Remap
from shiftaddaug.train import BN_CALIB_IMAGES, param_groups, train_step

RECORD = Path(__file__).parent / "records" / "step_profile_cpu.json"
COPY_OPS = ("aten::slice", "aten::cat", "aten::constant_pad_nd", "aten::pad", "aten::copy_", "aten::narrow",
            "aten::zeros_like", "aten::zero_", "aten::clone", "aten::contiguous", "aten::index", "_LeadingChannels")
COPY_NODES = ("SliceBackward", "CatBackward", "ConstantPadNdBackward", "CopySlices", "IndexBackward",
              "CloneBackward", "_LeadingChannelsBackward", "NarrowBackward")


def module_ranges(model: torch.nn.Module) -> list:
    """Forward hooks that open a profiler range named by the component around each remap, conv, BN, activation."""
    def kind(m):
        if isinstance(m, Remap):
            return "remap"
        if isinstance(m, (ElasticConv2d, ElasticLinear, torch.nn.Conv2d, torch.nn.Linear)):
            return "operator (conv, linear)"
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            return "BatchNorm"
        if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Hardswish, torch.nn.Hardsigmoid)):
            return "activation"
        return None

    handles, open_ranges = [], []
    for m in model.modules():
        name = kind(m)
        if name is None:
            continue

        def enter(mod, inp, name=name):
            r = record_function(f"component: {name}")
            r.__enter__()
            open_ranges.append(r)

        def leave(mod, inp, out):
            open_ranges.pop().__exit__(None, None, None)
        handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
    return handles


def classify(events) -> dict:
    """Self CPU microseconds per (pass, component) over the profiled steps."""
    seq_component, out = {}, defaultdict(float)
    for e in sorted(events, key=lambda e: e.time_range.start):
        chain, p = [], e
        while p is not None:
            chain.append(p)
            p = p.cpu_parent
        names = [c.name for c in chain]
        phase = next((n for n in names if n.startswith(("forward: ", "backward: ")) or n == "optimizer"), None)
        if phase is None or e.name.startswith(("forward: ", "backward: ", "component: ")) or e.name == "optimizer":
            continue
        if phase == "optimizer":
            comp = "optimiser"
        elif phase.startswith("forward"):
            ranges = [n[len("component: "):] for n in names if n.startswith("component: ")]
            ops_ = [c for c in chain if not c.name.startswith(("component: ", "forward: "))]
            first = ops_[-1] if ops_ else e  # the outermost op under the ranges
            if any(c.name.startswith(COPY_OPS) for c in ops_[-1:]):
                comp = "slicing and copies"
            elif ranges:
                comp = ranges[0]
            elif "cross_entropy" in first.name or "log_softmax" in first.name or "nll_loss" in first.name:
                comp = "loss"
            else:
                comp = "other ops"
            if e.sequence_nr >= 0:  # the autograd node this op recorded: its backward is the same component
                seq_component[e.sequence_nr] = comp
        else:
            node = next((c for c in chain if c.name.startswith("autograd::engine::evaluate_function: ")), None)
            if node is None:
                comp = "other ops"
            elif any(k in node.name for k in COPY_NODES):
                comp = "slicing and copies"
            else:
                comp = seq_component.get(node.sequence_nr, "other ops")
        kind = phase.split(": ")[0] if phase != "optimizer" else "optimiser"
        who = phase.split(": ")[1] if ": " in phase else "step"
        out[(who, kind, comp)] += e.self_cpu_time_total
    return out


def profile_steps(model, x, y, steps: int, warmup: int, augmented: bool, width_aug: bool) -> dict:
    cfg = TrainConfig()  # the default recipe's optimiser and loss
    opt = torch.optim.SGD(param_groups(model, cfg.weight_decay, cfg.lr), momentum=cfg.momentum, nesterov=cfg.nesterov)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def step():
        train_step(model, x, y, opt, criterion, augmented=augmented, width_aug=width_aug)

    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    plain_ms = (time.perf_counter() - t) / steps * 1e3
    handles = module_ranges(model)
    with profile() as prof:
        t = time.perf_counter()
        for _ in range(steps):
            step()
        profiled_ms = (time.perf_counter() - t) / steps * 1e3
    for h in handles:
        h.remove()
    parts = {comp if kind == "optimiser" else f"{who} {kind}: {comp}": us / steps / 1e3
             for (who, kind, comp), us in classify(prof.events()).items()}
    parts["Python, not in an op"] = profiled_ms - sum(parts.values())
    return {"step_ms": plain_ms, "profiled_step_ms": profiled_ms, "parts_ms": parts}


def table(results: dict) -> str:
    """Markdown: ms per step per component, each column one step kind."""
    cols = list(results)
    rows = sorted({k for r in results.values() for k in r["parts_ms"]})
    lines = ["| component | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {r} | " + " | ".join(f"{results[c]['parts_ms'].get(r, 0):.1f}" for c in cols) + " |" for r in rows]
    lines.append("| **profiled step** | " + " | ".join(f"{results[c]['profiled_step_ms']:.1f}" for c in cols) + " |")
    lines.append("| **step, not profiled** | " + " | ".join(f"{results[c]['step_ms']:.1f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenetv2_tiny")
    ap.add_argument("--ops", nargs="+", default=["shift", "add"], choices=["shift", "add"])
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--width-factors", type=float, nargs="+", default=None, help="default: the model's (NetAug's)")
    ap.add_argument("--expand-factors", type=float, nargs="+", default=None)
    ap.add_argument("--aug-scale", type=float, default=1.0,
                    help="unset factors: 1 + s x (NetAug's - 1); 1 (this script's default): NetAug's own")
    ap.add_argument("--record", default=str(RECORD))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(args.batch, 1, args.size, args.size).contiguous(memory_format=cl)
    y = torch.randint(10, (args.batch,))
    record = {"command": "python benchmarks/step_profile.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "model": args.model, "size": args.size,
              "batch": args.batch, "steps": args.steps, "ops": {}}
    for op in args.ops:
        res = {}
        direct = create_model(args.model, 10, op=op, in_chans=1, input_size=args.size).to(memory_format=cl)
        res["direct"] = profile_steps(direct, x, y, args.steps, args.warmup, False, False)
        net = build_augmented(args.model, 10, op=op, aug_op="mult", in_chans=1, input_size=args.size,
                              width_factors=args.width_factors, expand_factors=args.expand_factors,
                              aug_scale=args.aug_scale).to(memory_format=cl)
        res["ShiftAddAug, target pass only"] = profile_steps(net, x, y, args.steps, args.warmup, False, False)
        res["ShiftAddAug, width + expand"] = profile_steps(net, x, y, args.steps, args.warmup, True, True)
        res["ShiftAddAug, expand only"] = profile_steps(net, x, y, args.steps, args.warmup, True, False)
        calib = [(torch.randn(args.batch, 1, args.size, args.size), None)
                 for _ in range(-(-BN_CALIB_IMAGES // args.batch))]
        t = time.perf_counter()
        recalibrate_bn(net, calib, BN_CALIB_IMAGES, True)
        res["bn_recalibration_ms_per_epoch"] = (time.perf_counter() - t) * 1e3
        record["ops"][op] = res
        print(f"\n## {op} (ms per step; BN recalibration {res['bn_recalibration_ms_per_epoch']:.0f} ms per epoch)")
        print(table({k: v for k, v in res.items() if isinstance(v, dict)}), flush=True)
    Path(args.record).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.record}")


if __name__ == "__main__":
    main()
