"""Run bookkeeping beside the training loop: the run folder, resume, checkpoints, metrics, export of the target,
the inference cost and the summary. ``runs/<name>/`` holds ``config.json``, ``metrics.csv``, ``last.pt``,
``best.pt``, ``exported.pt`` (ShiftAddAug runs) and ``summary.json``.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from . import checkpoint
from .build import build_model, resolve_input_size
from .config import TrainConfig, make_config
from .data import dataset_info
from .errors import UserError
from .files import RunLock, write_json, write_text
from .hw import count, profile
from .models import create_model

METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "test_miou", "val_loss",
                 "val_acc", "val_miou", "epoch_time_s", "images_per_s"]
RUN_FILES = {"config.json", "metrics.csv", "summary.json", "last.pt", "best.pt", "exported.pt"}
# what --resume may change: more (or fewer) epochs, and where or how fast it runs; anything else changes the run
RESUMABLE_CHANGES = {"epochs", "threads", "workers", "device", "data_dir", "overwrite", "extra", "out_dir", "name"}


@dataclass
class Run:
    """What a run has done so far: restored on resume, saved with every epoch. Holds the run folder's lock until the
    run ends (``with run:``)."""
    cfg: TrainConfig
    num_classes: int
    in_chans: int
    lock: RunLock
    start_epoch: int = 0
    best_acc: float = 0.0
    history: list = field(default_factory=list)
    train_time_s: float = 0.0
    devices: list = field(default_factory=list)  # where its epochs ran (their times differ)
    first_loss: float | None = None  # the first step's target loss: divergence is measured against it
    main: bool = True  # the process that writes the run folder (rank 0 of a distributed run)

    @property
    def max_loss(self) -> float | None:
        factor = self.cfg.divergence_factor
        return factor * self.first_loss if factor and self.first_loss is not None else None

    def note_first_loss(self, loss: torch.Tensor) -> None:
        if self.first_loss is None:
            self.first_loss = loss.item()

    @property
    def metric(self) -> str:
        """What each epoch is judged by: top-1 (segmentation: mean IoU), on the held-out validation images when there
        are any."""
        return ("val" if self.cfg.val_images else "test") + ("_miou" if self.cfg.task == "seg" else "_acc")

    @property
    def kind(self) -> str:
        return "model" if self.cfg.aug_op == "none" else "supernet"

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.release()


def start(cfg: TrainConfig, num_classes: int, in_chans: int, device: torch.device, resume: bool, model: nn.Module,
          optimizer, scheduler, world=None) -> Run:
    """Lock the run folder, then start a new run (an emptied folder and its config.json) or, with ``resume``, load
    the state of ``last.pt`` into the model, optimiser, scheduler and RNG. Of a distributed run (``world``), rank 0
    locks and writes the folder; every process resumes from it."""
    from . import dist

    world = world or dist.World()
    lock = None
    if world.main:
        try:
            lock = RunLock(cfg.run_dir).acquire()
        except OSError as e:
            raise UserError(f"cannot create the run folder {cfg.run_dir} ({e.strerror}); choose another out_dir") \
                from None
    run = Run(cfg, num_classes, in_chans, lock, main=world.main)
    try:
        if world.main:
            for tmp in cfg.run_dir.glob(".*.tmp"):  # left by a process killed mid-write; ours now that we hold the lock
                tmp.unlink()
        if resume:
            _restore(run, model, optimizer, scheduler)
        elif world.main:
            _empty(cfg.run_dir)
            write_json(cfg.run_dir / "config.json", cfg.to_dict())
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    name = str(device) if world.size == 1 else f"{world.size}x{device.type}"
    if name not in run.devices:
        run.devices.append(name)
    return run


def _restore(run: Run, model: nn.Module, optimizer, scheduler) -> None:
    cfg, last = run.cfg, run.cfg.run_dir / "last.pt"
    ckpt = checkpoint.load(last, required=("optimizer", "scheduler", "epoch", "rng"))
    now = cfg.to_dict()
    changed = sorted(k for k in set(ckpt["config"]) | set(now)
                     if k not in RESUMABLE_CHANGES and ckpt["config"].get(k) != now.get(k))
    if changed:
        diff = ", ".join(f"{k}={now.get(k)!r} (the run has {ckpt['config'].get(k)!r})" for k in changed)
        raise UserError(f"--resume keeps the run's config but got {diff}; drop these overrides, or start a new run "
                        "with another name= or overwrite=true")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:  # the model this config builds is not the one that run trained
        raise UserError(f"{last} was trained with another model config ({cfg.run_dir / 'config.json'}); "
                        "resume with that config, or pass overwrite=true to restart") from None
    bases = [g["initial_lr"] for g in optimizer.param_groups]  # this launch's (it scales with the processes)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scheduler.base_lrs = bases  # a run resumed on another number of processes keeps lr per process-batch
    for g, base, factor in zip(optimizer.param_groups, bases, scheduler.lr_lambdas):
        g["initial_lr"], g["lr"] = base, base * factor(scheduler.last_epoch)
    run.start_epoch, run.best_acc = ckpt["epoch"] + 1, ckpt["best_acc"]
    run.history, run.train_time_s, run.devices = ckpt["history"], ckpt["train_time_s"], ckpt["devices"]
    run.first_loss = ckpt.get("first_loss")
    torch.set_rng_state(ckpt["rng"])


def _empty(run_dir: Path) -> None:
    """A new run starts from an empty folder: an earlier run's files go (overwrite=true), anything else stays and
    stops the run, so that no user file is deleted."""
    found = [p for p in run_dir.iterdir() if p.name != ".lock" and p.name != "train.log"]
    if foreign := sorted(p.name for p in found if p.name not in RUN_FILES and not p.name.endswith(".tmp")):
        raise UserError(f"{run_dir} holds files that are not a run's ({', '.join(foreign[:3])}); pick another name= "
                        "or out_dir=")
    for p in found:
        p.unlink()


def refuse_to_clobber(cfg: TrainConfig, resume: bool) -> None:
    """Before any work: a finished or cut-short run is continued only with --resume, restarted with overwrite."""
    if (cfg.run_dir / "last.pt").exists() and not (resume or cfg.overwrite):
        raise UserError(f"{cfg.run_dir} already holds a run; pass --resume to continue it or overwrite=true to restart")
    if resume and not (cfg.run_dir / "last.pt").exists():
        raise UserError(f"--resume: {cfg.run_dir} holds no run to continue (no last.pt); drop --resume to start it")


def end_epoch(run: Run, row: dict, model: nn.Module, optimizer, scheduler) -> None:
    """Log one epoch's metrics and write ``best.pt`` (when its accuracy is the best so far; always after the first
    epoch) before ``last.pt``, so that ``best.pt`` is never older than the best accuracy ``last.pt`` records."""
    if layer := first_nonfinite(model):  # never write a checkpoint with non-finite values
        raise diverged(run, model, f"epoch {row['epoch']}", f"{layer} is not finite")
    run.history.append(row)
    acc = row[run.metric]
    is_best = len(run.history) == 1 or acc > run.best_acc
    run.best_acc = acc if len(run.history) == 1 else max(run.best_acc, acc)
    if not run.main:
        return
    table = io.StringIO()
    w = csv.DictWriter(table, [f for f in METRIC_FIELDS if any(f in r for r in run.history)])
    w.writeheader()
    w.writerows(run.history)
    write_text(run.cfg.run_dir / "metrics.csv", table.getvalue())
    model_state = {"model": model.state_dict(), "config": run.cfg.to_dict(), "num_classes": run.num_classes,
                   "in_chans": run.in_chans, "epoch": row["epoch"] - 1, "best_acc": run.best_acc}
    if is_best:
        checkpoint.save(model_state, run.cfg.run_dir / "best.pt", run.kind)
    checkpoint.save({**model_state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "history": run.history, "train_time_s": run.train_time_s, "devices": run.devices,
                     "first_loss": run.first_loss, "rng": torch.get_rng_state()}, run.cfg.run_dir / "last.pt", run.kind)


def first_nonfinite(model: nn.Module) -> str | None:
    """The first parameter, gradient or buffer (BatchNorm statistics) of ``model`` holding NaN or Inf, by name."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not torch.isfinite(t).all():
            return name
    for name, p in model.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"{name} (its gradient)"
    return None


def diverged(run: Run, model: nn.Module, where: str, what: str) -> UserError:
    """The one-line error of a diverged run: where, what, the first affected layer and the checkpoint that is kept."""
    layer = first_nonfinite(model)
    kept = (f"{run.cfg.run_dir / 'last.pt'} (epoch {run.history[-1]['epoch']}) is kept" if run.history
            else "no checkpoint was written")
    return UserError(f"training diverged in {where}: {what}; first non-finite tensor: {layer or 'none yet'}; {kept}; "
                     f"lower lr (now {run.cfg.lr}), set grad_clip, or raise divergence_factor")


def export_target(supernet: nn.Module, cfg: TrainConfig, num_classes: int, in_chans: int, path: Path,
                  write: bool = True) -> nn.Module:
    """Write the plain target of a ShiftAddAug supernet (nothing of the augmentation left) and return it."""
    supernet.set_active("min")
    exported = supernet.export().eval()
    if write:
        checkpoint.save({"model": exported.state_dict(), "build": exported.build_args, "config": cfg.to_dict(),
                          "num_classes": num_classes, "in_chans": in_chans}, path, "exported")
    return exported


def inference_cost(model: nn.Module, input_size: int, in_chans: int) -> dict:
    """What one image costs the deployed model: parameters, MACs per operator, peak activation memory, and energy
    and latency on the Eyeriss-like model (32 bit)."""
    counts = count(model, input_size, in_chans)
    cost = profile(model, input_size, bits=32, hw="eyeriss", in_chans=in_chans).total
    return {"params": counts.params, "macs": counts.macs, "peak_activation_bytes": counts.peak_activation_bytes,
            "energy_uj": cost["energy_pj"] / 1e6, "latency_ms": cost["latency_ms"],
            "hw": {"model": "eyeriss", "bits": 32, **{k: cost[k] for k in ("energy_by_class", "mult", "add",
                                                                            "shift")}}}


def finish(run: Run, deployed: nn.Module) -> dict:
    """Write and return ``summary.json``: accuracy, training time and the deployed model's inference cost."""
    cfg, size = run.cfg, resolve_input_size(run.cfg)
    h = run.history
    summary = {"name": cfg.name, "model": cfg.model, "op": "per block" if cfg.arch else cfg.op, "dataset": cfg.dataset,
               "input_size": size, "epochs": cfg.epochs, "seed": cfg.seed,
               "final_acc": h[-1][run.metric] if h else None, "best_acc": run.best_acc,
               "eval_split": run.metric.split("_")[0], "metric": run.metric.split("_")[1],
               "train_time_s": run.train_time_s,
               "images_per_s": sum(r["images_per_s"] for r in h) / max(1, len(h)),
               **inference_cost(deployed, size, run.in_chans),
               "threads": torch.get_num_threads(), "device": "+".join(run.devices), "config": cfg.to_dict()}
    what = "smallest sub-network" if cfg.search_space else "trained model" if cfg.aug_op == "none" else \
        "exported model"
    if run.main:
        print(f"inference cost of the {what} (Eyeriss-like, 32 bit, "
              f"one image): {summary['energy_uj']:.1f} uJ, {summary['latency_ms']:.3f} ms")
        write_json(cfg.run_dir / "summary.json", summary)
    return summary


def load_model(path: str | Path, overrides: dict | None = None) -> tuple[dict, TrainConfig, nn.Module]:
    """A checkpoint, its config and its model with the weights loaded; a one-line error when they do not fit."""
    ckpt = checkpoint.load(path)
    known = set(TrainConfig.model_fields)
    if unknown := sorted(set(ckpt["config"]) - known):
        raise UserError(f"checkpoint {path} has config keys this version does not know ({', '.join(unknown)}); "
                        "retrain it") from None
    cfg = make_config({**ckpt["config"], **(overrides or {})})
    if ckpt["kind"] == "exported":
        model = create_model(**ckpt["build"])
    else:
        if (ckpt["kind"] == "supernet") != (cfg.aug_op != "none"):
            raise UserError(f"checkpoint {path} is a {ckpt['kind']} checkpoint but its config has aug_op={cfg.aug_op}")
        model = build_model(cfg, ckpt["num_classes"], ckpt["in_chans"])
    bad = next((k for k, v in ckpt["model"].items()
                if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad:
        raise UserError(f"checkpoint {path} holds NaN or Inf values ({bad}): it is not a usable model")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:  # name the first tensor that differs, and how
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise UserError(f"checkpoint {path} does not fit model {cfg.model} op={cfg.op}: {first}") from None
    return ckpt, cfg, model


def run_cost(summary: dict, bits: int = 32, hw: str = "eyeriss") -> dict:
    """Eyeriss-like cost (``profile(...).total``) of a finished run's deployed model, rebuilt from its config
    (an exported ShiftAddAug target is the plain model of the same structure)."""
    cfg = make_config(summary["config"])
    info = dataset_info(cfg.dataset)
    model = build_model(cfg, info.num_classes, info.channels, augmented=False)
    return profile(model, resolve_input_size(cfg), bits=bits, hw=hw, in_chans=info.channels).total
