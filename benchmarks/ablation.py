"""ShiftAddAug ablation: which augmentation and which remap make a multiplication-free target better?

    python benchmarks/ablation.py --ops shift --seeds 0 1 --epochs 10              # full Fashion-MNIST
    python benchmarks/ablation.py --ops shift --seeds 0 1 --epochs 4 --train-subset 10000
Rows, same recipe and epochs for each (docs/method.md): direct; mf augmentation; mult augmentation with remap none,
laplace, bins, fc; hybrid with the best of those remaps (the default remap while none has runs; --hybrid-remap names
one whose runs finished elsewhere); the multiplicative model trained directly; and direct MF training given the
wall-clock time of ShiftAddAug with the operator's default remap (``remap=auto``: bins for shift, none for add; more
epochs; needs direct and that row in --rows, timed on the same device, or else the first other remap row timed
there, as the remaps cost the same per step; the epoch count comes from the mean times of the given --seeds, so
resume with the same --seeds). --aug-set gives the augmented rows other settings (a lever such as a decaying
``aug_rate``), named in their labels; merged with --records, they sit beside the default's rows.
With --jobs N, N runs train at once, each in its own process logging to <run>/train.log (rows that depend on others,
hybrid and matched, start once those finished); on one GPU that shares it, so training times include contention.
Finished runs are reused and runs cut short continue from their last epoch checkpoint (a resumed run equals an
unbroken one; its training time adds up).
Energy and latency are the exported model's (Eyeriss-like, 32 bit, one image). The table goes to
<out>/ablation.md, the records to <out>/ablation.json, curves and bars to <out>/ablation.png.
--records rebuilds the table and plot from saved records instead of run folders, e.g. the full-data runs on the
results page (BENCHMARKS.md), whose folders are gone:

    python benchmarks/ablation.py --records benchmarks/records/ablation_60k_e5.json --out benchmarks/out/ablation_60k
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import multiprocessing
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tqdm import tqdm  # noqa: E402

from shiftaddaug.config import TrainConfig, load_config  # noqa: E402
from shiftaddaug.ops import get_operator  # noqa: E402
from shiftaddaug.train import train  # noqa: E402

REMAP_ROWS = ("laplace", "bins", "fc")


def run(args, key: str, row: str, mf_op: str, seed: int, epochs: int, **over) -> dict | None:
    """Train one row (``key`` in ROWS, labelled ``row``) of operator ``mf_op``'s table, or reuse its finished run, and
    return its record; None for a run not finished with ``--report``, or queued in ``args.pending`` with --jobs > 1."""
    over = {"op": mf_op, **over}  # the multiplicative reference row overrides op (and is shared by both tables)
    name = f"{args.model}_{over['op']}_{key}_e{epochs}_n{args.train_subset or 'all'}_s{seed}"  # a shell-safe name
    run_dir = args.out / "runs" / name
    if (run_dir / "config.json").exists():  # names do not carry every setting (hybrid's remap): never reuse or
        stored = json.loads((run_dir / "config.json").read_text())  # resume a run under another row's settings
        other = {k: stored[k] for k, v in over.items() if k in stored and stored[k] != v}
        if other:
            raise SystemExit(f"{run_dir} trained with {other}, not { {k: over[k] for k in other} }; "
                             "give these settings another --out")
    if not (run_dir / "summary.json").exists():
        if args.report:
            return None
        resume = (run_dir / "last.pt").exists()  # a run cut short (e.g. at the end of a session) goes on
        cfg = load_config(overrides={"model": args.model, "dataset": args.dataset, "epochs": epochs,
                                     "seed": seed, "lr": args.lr, "train_subset": args.train_subset,
                                     "out_dir": str(args.out / "runs"), "name": name, "overwrite": not resume,
                                     "threads": args.threads, "device": args.device, **over})
        if args.jobs > 1:  # queued once (the multiplicative row is shared by both tables)
            if all(c.name != cfg.name for c, _ in args.pending):
                args.pending.append((cfg, resume))
            return None
        print(f"== {name}" + (" (resuming its last epoch checkpoint)" if resume else ""), flush=True)
        train(cfg, resume=resume)
    s = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    curve, epoch_times = [float(r["test_acc"]) for r in rows], [float(r["epoch_time_s"]) for r in rows]
    return {"key": key, "row": row, "op": mf_op, "seed": seed, "epochs": epochs, "final_acc": s["final_acc"],
            "train_time_s": s["train_time_s"], "device": s.get("device") or s["config"].get("device", "cpu"),
            "params": s["params"], "macs": s["macs"], "curve": curve, "epoch_times": epoch_times,
            "energy_uj": s["energy_uj"], "latency_ms": s["latency_ms"]}


def mean_std(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


ROWS = ("direct", "mult-model", "mf", "none", "laplace", "bins", "fc", "hybrid", "matched")


def ablate(args, op: str) -> list[dict]:
    recs, waiting = [], set()  # waiting: rows with runs queued for --jobs, which hybrid and matched depend on

    def rows(key, row, epochs=args.epochs, **over):
        if key not in args.rows:
            return []
        queued = len(args.pending)
        got = [r for s in args.seeds if (r := run(args, key, row, op, s, epochs, **over)) is not None]
        if len(args.pending) > queued:
            waiting.add(key)
        recs.extend(got)
        return got

    rows("direct", "direct")
    rows("mult-model", "mult model", op="mult")
    aug = args.aug_set  # the augmented rows' extra settings, named in their labels
    tag = f" ({', '.join(f'{k}={v}' for k, v in aug.items())})" if aug else ""
    rows("mf", "mf aug" + tag, aug_op="mf", remap="laplace", **aug)
    timed = {}
    for remap in ("none", *REMAP_ROWS):
        label = "mult aug, remap none" if remap == "none" else f"ShiftAddAug, remap {remap}"
        timed[remap] = rows(remap, label + tag, aug_op="mult", remap=remap, **aug)
    if waiting & {"none", *REMAP_ROWS}:
        return recs
    best = args.hybrid_remap or hybrid_remap(timed, op)
    rows("hybrid", f"hybrid aug, remap {best}" + tag, aug_op="hybrid", remap=best, **aug)
    direct = [r for r in recs if r["row"] == "direct"]
    ref = matched_reference(timed, direct, op)
    if ref and "direct" not in waiting:  # direct training given the wall-clock of ShiftAddAug
        seconds = [statistics.mean(r["train_time_s"] for r in rs) for rs in (timed[ref], direct)]
        matched = args.matched_epochs or max(args.epochs, round(args.epochs * seconds[0] / seconds[1]))
        if rows("matched", f"direct, {matched} epochs (time-matched)", epochs=matched):
            default = get_operator(op).default_remap
            why = "" if ref == default else (f" (the default, {default}, has no runs timed on direct's device; "
                                             "remaps cost the same per step)")
            args.notes.append(f"{op}: the time-matched control has the wall-clock of `mult` augmentation with remap "
                              f"{ref}{why}")
    return recs


def hybrid_remap(timed: dict, op: str) -> str:
    """The remap `hybrid` runs with: the best `mult`-augmented one (mean accuracy over its seeds, `none` included),
    the operator's default remap while none has finished runs."""
    accs = {r: mean_std([x["final_acc"] for x in got])[0] for r, got in timed.items() if got}
    return max(accs, key=accs.get) if accs else get_operator(op).default_remap


def matched_reference(timed: dict, direct: list, op: str) -> str | None:
    """The remap row whose wall-clock the matched control gets: the default remap's, else the first other one timed
    on the device direct ran on (times on different devices do not compare)."""
    where = {r["device"] for r in direct}
    order = [get_operator(op).default_remap, *(r for r in (*REMAP_ROWS, "none") if r != get_operator(op).default_remap)]
    same = [r for r in order if timed.get(r) and {x["device"] for x in timed[r]} == where]
    return same[0] if direct and same else None


def _train_logged(cfg: TrainConfig, resume: bool) -> dict:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.run_dir / "train.log", "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        return train(cfg, resume=resume)


def train_parallel(queued: list, jobs: int) -> None:
    """Train the queued runs, ``jobs`` at a time, each in a fresh process (spawned: CUDA does not survive a fork)."""
    failed = []
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        futures = {pool.submit(_train_logged, cfg, resume): cfg for cfg, resume in queued}
        for f in tqdm(as_completed(futures), total=len(futures), desc=f"{len(futures)} runs, {jobs} at a time"):
            cfg = futures[f]
            try:
                tqdm.write(f"done {cfg.name}: {f.result()['final_acc']:.2f} %")
            except Exception as e:  # the others go on; the log says what happened
                failed.append(f"{cfg.name} ({type(e).__name__}: {e}; see {cfg.run_dir / 'train.log'})")
    if failed:
        raise SystemExit("failed runs: " + "; ".join(failed))


def table(recs: list[dict], op: str) -> list[str]:
    mine = [r for r in recs if r["op"] == op]
    base = mean_std([r["final_acc"] for r in mine if r["row"] == "direct"] or [float("nan")])[0]
    lines = [f"| {op}: row | seeds | epochs | test top-1 (%) | vs direct (pp) | train time (s) | params | MACs "
             f"(mult / shift / add) | energy (uJ) | latency (ms) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in dict.fromkeys(r["row"] for r in mine):
        rs = [r for r in mine if r["row"] == row]
        m, s = mean_std([r["final_acc"] for r in rs])
        t = statistics.mean(r["train_time_s"] for r in rs)
        where = "+".join(sorted({"GPU" if d.startswith("cuda") else "CPU" for r in rs for d in r["device"].split("+")}))
        macs = " / ".join(f"{rs[0]['macs'].get(k, 0) / 1e6:.2f}M" for k in ("mult", "shift", "add"))
        diff = "n/a (no direct row)" if math.isnan(base) else f"{m - base:+.2f}"
        lines.append(f"| {row} | {len(rs)} | {rs[0]['epochs']} | {m:.2f} ± {s:.2f} | {diff} | {t:.0f} {where} "
                     f"| {rs[0]['params']:,} | {macs} | {rs[0]['energy_uj']:.1f} | {rs[0]['latency_ms']:.3f} |")
    return lines


RECORD_KEYS = ("key", "row", "op", "seed", "epochs", "final_acc", "train_time_s", "device", "params", "macs", "curve",
               "energy_uj", "latency_ms")


def load_records(paths: list[Path], ops: list[str], seeds: list[int], rows: list[str]) -> list[dict]:
    """The records saved in ablation.json files (``curve_epochs`` optional: the epochs of a curve with gaps), those of
    ``ops``, ``seeds`` and ``rows`` kept; a missing, corrupt or incomplete file stops with a one-line error."""
    recs = []
    for path in paths:
        try:
            got = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"cannot read records from {path} ({e}); give an ablation.json this script "
                             "wrote") from None
        bad = [i for i, r in enumerate(got) if not isinstance(r, dict) or set(RECORD_KEYS) - set(r)] \
            if isinstance(got, list) else ["the file"]
        if bad:
            raise SystemExit(f"{path}: record {bad[0]} lacks fields of {', '.join(RECORD_KEYS)}; "
                             "give an ablation.json this script wrote")
        recs += [r for r in got if r["op"] in ops and r["seed"] in seeds and r["key"] in rows]
    return recs


def plot(recs: list[dict], ops: list[str], path: Path) -> None:
    """Per operator: learning curves against epochs, against training time where the records have epoch times,
    and the final accuracies."""
    timed = all("epoch_times" in r for r in recs)
    fig, axes = plt.subplots(len(ops), 2 + timed, figsize=(6.5 * (2 + timed), 4.5 * len(ops)), squeeze=False)
    for (ax_c, *ax_t, ax_b), op in zip(axes, ops):
        mine = [r for r in recs if r["op"] == op]
        names = list(dict.fromkeys(r["row"] for r in mine))
        for row in names:
            rs = [r for r in mine if r["row"] == row]
            n = min(len(r["curve"]) for r in rs)
            x = rs[0].get("curve_epochs") or range(1, n + 1)  # saved records may hold every few epochs only
            y = [statistics.mean(r["curve"][i] for r in rs) for i in range(n)]
            ax_c.plot(x[:n], y, marker=".", label=row)
            if ax_t:  # time up to each epoch in the row's fastest run: the least disturbed by other work on the host
                fastest = min(rs, key=lambda r: r["train_time_s"])["epoch_times"]
                ax_t[0].plot([sum(fastest[:i + 1]) / 60 for i in range(n)], y, marker=".", label=row)
        ax_c.set(xlabel="epoch", ylabel="test top-1 (%), mean of seeds", title=f"{op}: learning curves")
        for ax in (ax_c, *ax_t):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        if ax_t:
            lo = min(min(r["curve"]) for r in mine)
            ax_t[0].set(xlabel="training time (min), the row's fastest run", ylabel="test top-1 (%), mean of seeds",
                        title=f"{op}: against wall-clock", ylim=(max(lo, 70), None))
            ax_c.set_ylim(max(lo, 70), None)
        stats = [mean_std([r["final_acc"] for r in mine if r["row"] == row]) for row in names]
        ax_b.barh(names, [m for m, _ in stats], xerr=[s for _, s in stats], color="tab:blue")
        lo = min(m for m, _ in stats)
        ax_b.set_xlim(lo - 3, max(m for m, _ in stats) + 1.5)
        ax_b.invert_yaxis()
        ax_b.set(xlabel="final test top-1 (%)", title=f"{op}: final accuracy (error bar: std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenetv2_tiny")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--ops", nargs="+", default=["shift", "add"], choices=["shift", "add"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-subset", type=int, default=None, help="default: the full training set")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once (each its own process)")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="default: every row")
    ap.add_argument("--hybrid-remap", choices=("none", *REMAP_ROWS), default=None,
                    help="the remap of the hybrid row (default: the best mult-augmented row of these runs), for a "
                         "hybrid run whose remap rows finished elsewhere")
    ap.add_argument("--matched-epochs", type=int, default=None,
                    help="epochs of the time-matched row, where the measured times are not to be trusted (other work "
                         "shared the host); default: from the mean training times")
    ap.add_argument("--aug-set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="config settings of the augmented rows only, e.g. aug_rate=1 aug_rate_end=0 (give them their "
                         "own --out: run names do not carry them)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/ablation"))
    ap.add_argument("--report", action="store_true",
                    help="train nothing: the table and plot of the runs already finished (the seeds column counts)")
    ap.add_argument("--records", type=Path, nargs="+", default=None,
                    help="train nothing: the table and plot of the records in these ablation.json files (of --ops, "
                         "--seeds and --rows)")
    args = ap.parse_args()
    bad = [kv for kv in args.aug_set if "=" not in kv]
    if bad:
        ap.error(f"--aug-set takes KEY=VALUE, got {bad[0]!r}")
    args.aug_set = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.aug_set)}
    if len(args.seeds) < 2:
        print("note: one seed gives no spread; the issue asks for at least two")
    if args.records:
        recs = load_records(args.records, args.ops, args.seeds, args.rows)
        if not recs:
            raise SystemExit(f"no records of ops {args.ops}, seeds {args.seeds} and these rows in "
                             f"{', '.join(map(str, args.records))}")
        notes = []  # the notes say how this session's rows were chosen; saved records carry none
        head = f"records from {', '.join(map(str, args.records))}, seeds {args.seeds}"
    else:
        while True:  # with --jobs, each pass queues what can start; hybrid and matched wait for the rows they follow
            args.pending, args.notes = [], []
            recs = [r for op in args.ops for r in ablate(args, op)]
            if not args.pending:
                break
            train_parallel(args.pending, args.jobs)
        notes = args.notes
        if not recs:
            raise SystemExit(f"no finished runs of these rows under {args.out / 'runs'}; run without --report first")
        head = (f"{args.model} on {args.dataset} ({args.train_subset or 'all'} training images), {args.epochs} "
                f"epochs, seeds {args.seeds}, {platform.machine()}, {time.strftime('%Y-%m-%d')}"
                + (f", {args.jobs} runs at a time" if args.jobs > 1 else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    text = "\n".join([head, ""] + [line for op in args.ops for line in table(recs, op) + [""]] + notes)
    print("\n" + text)
    (args.out / "ablation.md").write_text(text)
    (args.out / "ablation.json").write_text(json.dumps(recs, indent=2))
    plot(recs, [op for op in args.ops if any(r["op"] == op for r in recs)], args.out / "ablation.png")
    print(f"wrote {args.out / 'ablation.md'}, ablation.json and ablation.png")


if __name__ == "__main__":
    main()
