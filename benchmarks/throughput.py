"""Steady-state training throughput (images/s) per operator, and the cost of a ShiftAddAug step.

    python benchmarks/throughput.py --model mobilenetv2_tiny --size 28 --batch 128 --steps 10
    python benchmarks/throughput.py --aug --ops shift --aug-ops mult hybrid --remaps laplace bins   # what a remap costs
    python benchmarks/throughput.py --aug --ops shift --device cuda --steps 50 --warmup 20 --profile  # where time goes
    python benchmarks/throughput.py --aug --ops shift --steps 5 --warmup 2 --compile                # torch.compile
    python benchmarks/throughput.py --aug --ops shift add --steps 40 --aug-rate 0.4 --width-factors 1 1.4 1.8
Both time the trainer's own step (shiftaddaug.train.train_step, with the default recipe's optimiser and loss): direct
steps train the plain model; "aug" steps follow a ShiftAddAug run's schedule compressed into ``--steps``: the share
``aug_rate`` of them (spread as in training) runs the target and one sampled augmented sub-model (NetAug), the others
the target alone; the first ``width_aug_frac`` of them augment widths, the rest expand ratios only. Unset options
take the training defaults (TrainConfig), so a plain ``--aug`` times the default ShiftAddAug configuration.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch._dynamo  # torch.compile's graph counters (--compile)

from shiftaddaug.augment import AUG_OPS, build_augmented
from shiftaddaug.build import resolve_device
from shiftaddaug.config import TrainConfig
from shiftaddaug.errors import UserError
from shiftaddaug.models import create_model
from shiftaddaug.ops import OPERATORS
from shiftaddaug.ops.remap import REMAP_CHOICES
from shiftaddaug.train import augmented_steps, param_groups, train_step


def aug_schedule(steps: int, rate: float, rate_end: float | None, width_frac: float) -> list[tuple[bool, bool]]:
    """(augmented, width_aug) per step: a ShiftAddAug run's schedule compressed into ``steps`` steps."""
    due = augmented_steps(rate, rate_end, steps)
    return [(due(s), s < width_frac * steps) for s in range(steps)]


def measure(model, x, y, steps: int, warmup: int = 3, profile: bool = False, schedule=None,
            compile: bool = False) -> float:
    """Images/s of the trainer's own step (``train_step``, its optimiser and loss) over ``steps`` steps after
    ``warmup`` (a GPU is synchronised at both ends, not in between). ``schedule``: (augmented, width_aug) of each
    timed step (None: direct steps); the warm-up repeats its first steps. ``compile``: the passes run through
    ``torch.compile(model)``; the warm-up then includes the compilation, and its time and graphs are printed."""
    cfg = TrainConfig()  # the default recipe's optimiser and loss
    opt = torch.optim.SGD(param_groups(model, cfg.weight_decay, cfg.lr), momentum=cfg.momentum, nesterov=cfg.nesterov)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    net = None
    if compile:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        net = torch.compile(model)

    schedule = schedule or [(False, True)] * steps

    def run(kinds):
        for augmented, width_aug in kinds:
            train_step(model, x, y, opt, criterion, augmented=augmented, width_aug=width_aug, net=net)

    t0 = time.perf_counter()
    run(([k for k in schedule if k[0]][:1] + schedule)[:warmup])  # an augmented step first: it allocates the most
    if compile:
        c = torch._dynamo.utils.counters
        breaks = ", ".join(k.splitlines()[0] for k in c["graph_break"])
        print(f"    torch.compile: warm-up {time.perf_counter() - t0:.0f} s, {c['stats']['unique_graphs']} graphs, "
              f"{sum(c['graph_break'].values())} graph breaks ({breaks})")
    with torch.profiler.profile() if profile else contextlib.nullcontext() as prof:  # CPU, and CUDA where present
        sync()
        t0 = time.perf_counter()
        run(schedule)
        sync()
        seconds = time.perf_counter() - t0
    if profile:  # the ops that take the time; on a GPU also the kernel launches per step (tiny models are launch-bound)
        events = prof.key_averages()
        print(events.table(sort_by="self_cuda_time_total" if x.is_cuda else "self_cpu_time_total", row_limit=15))
        if x.is_cuda:
            launches = sum(e.count for e in events if "LaunchKernel" in e.key)
            print(f"    {launches / steps:.0f} kernel launches per step, {seconds / steps * 1e3:.1f} ms per step")
    return len(schedule) * len(x) / seconds


def relative_size(net, x, samples: int = 50) -> float:
    """Mean MACs of a sampled augmented sub-model over the target's (conv layers, the bulk of the work)."""
    from shiftaddaug.augment import ElasticConv2d

    macs = [0]

    def hook(m, inp, out):
        macs[0] += out.numel() * (1 if m.depthwise else inp[0].shape[1]) * m.active_kernel**2

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, ElasticConv2d)]
    sizes = []
    with torch.no_grad():
        for mode in ["min"] + ["random"] * samples:
            macs[0] = 0
            net.set_active(mode)
            net(x[:1])
            sizes.append(macs[0])
    for h in hooks:
        h.remove()
    net.set_active("min")
    return sum(sizes[1:]) / samples / sizes[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenetv2_tiny")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--in-chans", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (a GPU compiles and caches kernels)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of the timed steps")
    ap.add_argument("--aug", action="store_true", help="also time ShiftAddAug steps")
    ap.add_argument("--compile", action="store_true", help="run the step's passes through torch.compile")
    ap.add_argument("--ops", nargs="+", default=list(OPERATORS), choices=list(OPERATORS))
    ap.add_argument("--aug-ops", nargs="+", default=["mult"], choices=[a for a in AUG_OPS if a != "none"])
    ap.add_argument("--remaps", nargs="+", default=["auto"], choices=REMAP_CHOICES)
    defaults = TrainConfig()
    ap.add_argument("--aug-rate", type=float, default=defaults.aug_rate, help="share of steps with an augmented pass")
    ap.add_argument("--aug-rate-end", type=float, default=defaults.aug_rate_end, help="share at the last step")
    ap.add_argument("--width-aug-frac", type=float, default=defaults.width_aug_frac)
    ap.add_argument("--width-factors", type=float, nargs="+", default=defaults.width_factors, help="default: NetAug's")
    ap.add_argument("--expand-factors", type=float, nargs="+", default=defaults.expand_factors)
    ap.add_argument("--aug-scale", type=float, default=defaults.aug_scale, help="unset factors: 1 + s x (NetAug's - 1)")
    ap.add_argument("--record", type=Path, default=None, help="also write the measurements to this JSON file")
    args = ap.parse_args()
    torch.manual_seed(0)
    try:
        dev, cl = resolve_device(args.device), torch.channels_last
    except UserError as e:
        sys.exit(f"error: {e}")
    x = torch.randn(args.batch, args.in_chans, args.size, args.size, device=dev).contiguous(memory_format=cl)
    y = torch.randint(10, (args.batch,), device=dev)
    print(f"{args.model} @ {args.size}px, batch {args.batch}, {dev}, {torch.get_num_threads()} threads, channels_last")
    record = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
              "threads": torch.get_num_threads(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": []}
    timing = dict(steps=args.steps, warmup=args.warmup, profile=args.profile, compile=args.compile)
    for op in args.ops:
        m = create_model(args.model, 10, op=op, in_chans=args.in_chans, input_size=args.size)
        ips = measure(m.to(dev, memory_format=cl), x, y, **timing)
        print(f"  direct {op:5s} {ips:8.1f} img/s", flush=True)
        record["rows"].append({"op": op, "step": "direct", "images_per_s": ips})
        for aug_op, remap in ((a, r) for a in args.aug_ops for r in args.remaps
                             if args.aug and OPERATORS[op].multiplication_free):
            net = build_augmented(args.model, 10, op=op, aug_op=aug_op, remap=remap, in_chans=args.in_chans,
                                  input_size=args.size, width_factors=args.width_factors,
                                  expand_factors=args.expand_factors, aug_scale=args.aug_scale)
            rate = args.aug_rate or net.default_aug_rate()  # unset: the operator's default, as in training
            schedule = aug_schedule(args.steps, rate, args.aug_rate_end, args.width_aug_frac)
            print(f"  ShiftAddAug schedule: {sum(a for a, _ in schedule)} of {args.steps} steps augmented "
                  f"({sum(a and w for a, w in schedule)} with widths; aug_rate {rate}), width factors "
                  f"{net.space.width_scale}, expand factors {net.space.expand_scale}")
            try:
                aug_ips = measure(net.to(dev, memory_format=cl), x, y, schedule=schedule, **timing)
            except torch._dynamo.exc.BackendCompilerFailed as e:  # sampled widths: shapes change every step
                print(f"  aug    {op:5s} torch.compile failed: {str(e).splitlines()[0][:200]}", flush=True)
                continue
            rel = relative_size(net, x)
            print(f"  aug    {op:5s} {aug_ips:8.1f} img/s (aug_op={aug_op}, remap={remap}; the schedule above): "
                  f"a step costs {ips / aug_ips:.2f}x a direct one; an augmented pass's model is {rel:.2f}x the "
                  "target's MACs", flush=True)
            record["rows"].append({"op": op, "step": "shiftaddaug", "aug_op": aug_op, "remap": remap, "aug_rate": rate,
                                   "width_factors": list(net.space.width_scale),
                                   "expand_factors": list(net.space.expand_scale), "images_per_s": aug_ips,
                                   "x_direct": ips / aug_ips, "augmented_steps": sum(a for a, _ in schedule),
                                   "steps": args.steps})
    if args.record:
        args.record.write_text(json.dumps(record, indent=2))
        print(f"wrote {args.record}")


if __name__ == "__main__":
    main()
