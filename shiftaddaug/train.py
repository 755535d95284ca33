"""Training, top to bottom: data -> model -> optimiser and schedule -> epochs -> metrics and checkpoints."""
from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from . import checkpoint
from .augment import build_augmented
from .config import TrainConfig, load_config
from .data import TensorLoader, build_loaders, dataset_info
from .errors import UserError
from .hw import count, profile
from .models import DEFAULT_RES, create_model

METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s", "images_per_s"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but PyTorch sees no GPU here; use device=cpu (or auto)")
    return torch.device(name)


def resolve_input_size(cfg: TrainConfig) -> int:
    return cfg.input_size or dataset_info(cfg.dataset).native_size or DEFAULT_RES[cfg.model]


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int) -> nn.Module:
    """The plain model for direct training, or the augmented supernet around it."""
    kw = dict(op=cfg.op, in_chans=in_chans, input_size=resolve_input_size(cfg), mf_stem_head=cfg.mf_stem_head)
    try:
        if cfg.aug_op == "none":
            return create_model(cfg.model, num_classes, **kw)
        return build_augmented(cfg.model, num_classes, aug_op=cfg.aug_op, remap=cfg.remap,
                               width_factors=cfg.width_factors, expand_factors=cfg.expand_factors, seed=cfg.seed,
                               **kw)
    except ValueError as e:
        raise UserError(str(e)) from None


def load_model(path: str | Path, overrides: dict | None = None) -> tuple:
    """A checkpoint, its config and its model with the weights loaded; a one-line error when they do not fit."""
    ckpt = checkpoint.load(path, required=("model", "config", "num_classes", "in_chans"))
    try:
        cfg = TrainConfig(**{**ckpt["config"], **(overrides or {})})
    except TypeError as e:  # a config key this version does not know
        raise UserError(f"checkpoint {path} has a config this version cannot read ({e}); retrain it") from None
    if "build" in ckpt:  # an exported checkpoint carries the arguments of the plain target model it holds
        model = create_model(**ckpt["build"])
    else:
        model = build_model(cfg, ckpt["num_classes"], ckpt["in_chans"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint {path} does not fit model {cfg.model} op={cfg.op}: "
                        f"{str(e).splitlines()[0]}") from None
    return ckpt, cfg, model


def param_groups(model: nn.Module, weight_decay: float, lr: float, remap_lr_scale: float = 1.0) -> list[dict]:
    """No weight decay on BatchNorm and biases (NetAug). Remap parameters get their own group: no decay (their
    identity initialisation is the prior, not zero) and a learning rate of their own."""
    decay, no_decay, remap = [], [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (remap if ".remap." in name else decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": lr}]
    return groups + ([{"params": remap, "weight_decay": 0.0, "lr": lr * remap_lr_scale}] if remap else [])


def warmup_cosine(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return factor


def progress(iterable, **kw):
    # frequent refresh on a terminal, sparse lines in logs
    return tqdm(iterable, mininterval=0.5 if sys.stderr.isatty() else 30, dynamic_ncols=True, **kw)


BN_CALIB_IMAGES = 2000  # NetAug recalibrates BN of each evaluated sub-network on 2,000 training images


def calibration_loader(train_loader, cfg: TrainConfig, num_images: int, size: int):
    """A fixed subset of the training images without augmentation for BN recalibration, as NetAug uses."""
    if not (num_images and hasattr(train_loader, "images")):
        return train_loader
    info = dataset_info(cfg.dataset)
    return TensorLoader(train_loader.images[:num_images], train_loader.labels[:num_images], cfg.batch_size,
                        info.mean, info.std, input_size=size)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader, num_images: int, channels_last: bool = True) -> None:
    """Recompute BatchNorm running statistics as the plain mean of per-batch statistics (NetAug)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    device = next(model.parameters()).device
    seen = 0
    for x, _ in loader:
        model(x[: num_images - seen].to(device).contiguous(memory_format=fmt))
        seen += min(len(x), num_images - seen)
        if seen >= num_images:
            break
    for m, mom in zip(bns, saved):
        m.momentum = mom


@torch.no_grad()
def evaluate(model: nn.Module, loader, criterion=None, channels_last: bool = True) -> dict:
    model.eval()
    criterion = criterion or nn.CrossEntropyLoss()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    device = next(model.parameters()).device
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device).contiguous(memory_format=fmt), y.to(device)
        out = model(x)
        loss_sum += criterion(out, y).item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
        n += len(y)
    return {"loss": loss_sum / max(n, 1), "acc": 100.0 * correct / max(n, 1)}


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    run_dir = cfg.run_dir
    last_path = run_dir / "last.pt"
    if last_path.exists() and not (resume or cfg.overwrite):
        raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or overwrite=true to restart")

    # data and model
    size = resolve_input_size(cfg)
    train_loader, test_loader, num_classes, chans = build_loaders(
        cfg.dataset, cfg.data_dir, cfg.batch_size, size, seed=cfg.seed, train_subset=cfg.train_subset,
        test_subset=cfg.test_subset, workers=cfg.workers)
    augmented = cfg.aug_op != "none"
    calib_images = cfg.bn_calibration_images or (BN_CALIB_IMAGES if augmented else 0)
    calib_loader = calibration_loader(train_loader, cfg, calib_images, size)
    model = build_model(cfg, num_classes, chans)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=fmt)

    # optimiser and per-step schedule
    optimizer = torch.optim.SGD(param_groups(model, cfg.weight_decay, cfg.lr, cfg.remap_lr_scale),
                                momentum=cfg.momentum, nesterov=cfg.nesterov)
    steps_per_epoch = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    start_epoch, best_acc, history, train_time, devices = 0, 0.0, [], 0.0, []
    if resume:
        ckpt = checkpoint.load(last_path, required=("model", "optimizer", "scheduler", "epoch"))
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError:  # the model this config builds is not the one that run trained
            raise UserError(f"{last_path} was trained with another model config ({run_dir / 'config.json'}); "
                            "resume with that config, or pass overwrite=true to restart") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best_acc = ckpt["epoch"] + 1, ckpt["best_acc"]
        history, train_time = ckpt.get("history", []), ckpt.get("train_time_s", 0.0)
        devices = ckpt.get("devices") or [ckpt["config"].get("device", "cpu")]  # where its epochs ran (times differ)
        torch.set_rng_state(ckpt["rng"])
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    if str(device) not in devices:
        devices.append(str(device))
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        t0, seen = time.perf_counter(), 0
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device)
        bar = progress(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        width_aug = epoch < cfg.width_aug_frac * cfg.epochs
        for step, (x, y) in enumerate(bar, 1):
            x, y = x.to(device, non_blocking=True).contiguous(memory_format=fmt), y.to(device, non_blocking=True)
            if augmented:
                model.set_active("min")
            out = model(x)  # the target (the only model when training directly)
            loss = criterion(out, y)
            if cfg.remap_kl:
                loss = loss + cfg.remap_kl * model.remap_kl()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if augmented:  # NetAug: one sampled augmented sub-model, gradients summed, one optimiser step
                model.set_active("random", width=width_aug)
                (cfg.alpha * criterion(model(x), y)).backward()
                model.set_active("min")
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
            if step % 50 == 0 or step == len(train_loader):  # one host sync per 50 steps lets a GPU run ahead
                if not math.isfinite(loss_sum.item()):
                    raise UserError(f"loss became {loss_sum.item()} in epoch {epoch + 1}; lower lr (now {cfg.lr})")
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}",
                                refresh=False)
        epoch_time = time.perf_counter() - t0
        loss_sum, correct = loss_sum.item(), correct.item()
        train_time += epoch_time

        if calib_images:  # BN statistics of the target configuration (the augmented passes shifted them)
            recalibrate_bn(model, calib_loader, calib_images, cfg.channels_last)
        test = evaluate(model, test_loader, channels_last=cfg.channels_last)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_sum / seen,
               "train_acc": 100 * correct / seen, "test_loss": test["loss"], "test_acc": test["acc"],
               "epoch_time_s": epoch_time, "images_per_s": seen / epoch_time}
        history.append(row)
        print(f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}  "
              f"test loss {test['loss']:.4f} acc {test['acc']:.2f}  {row['images_per_s']:.0f} img/s", flush=True)
        with open(run_dir / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, METRIC_FIELDS)
            w.writeheader()
            w.writerows(history)
        is_best = test["acc"] > best_acc
        best_acc = max(best_acc, test["acc"])
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": epoch, "best_acc": best_acc, "history": history,
                 "train_time_s": train_time, "devices": devices, "rng": torch.get_rng_state(), "config": cfg.to_dict(),
                 "num_classes": num_classes, "in_chans": chans}
        checkpoint.save(state, last_path)
        if is_best:
            checkpoint.save({k: state[k] for k in ("model", "epoch", "best_acc", "config", "num_classes",
                                                   "in_chans")}, run_dir / "best.pt")

    if augmented:  # the deliverable: the plain target model, nothing of the augmentation left
        exported = model.export().eval()
        checkpoint.save({"model": exported.state_dict(), "build": model.build_args, "config": cfg.to_dict(),
                         "num_classes": num_classes, "in_chans": chans}, run_dir / "exported.pt")
    deployed = exported if augmented else model
    counts = count(deployed, size, chans)  # what inference costs
    cost = profile(deployed, size, bits=32, hw="eyeriss", in_chans=chans).total
    summary = {"name": cfg.name, "model": cfg.model, "op": cfg.op, "dataset": cfg.dataset, "input_size": size,
               "epochs": cfg.epochs, "seed": cfg.seed, "final_acc": history[-1]["test_acc"] if history else None,
               "best_acc": best_acc, "train_time_s": train_time,
               "images_per_s": sum(r["images_per_s"] for r in history) / max(1, len(history)),
               "params": counts.params, "macs": counts.macs, "peak_activation_bytes": counts.peak_activation_bytes,
               "energy_uj": cost["energy_pj"] / 1e6, "latency_ms": cost["latency_ms"],
               "hw": {"model": "eyeriss", "bits": 32, **{k: cost[k] for k in ("energy_by_class", "mult", "add",
                                                                              "shift")}},
               "threads": torch.get_num_threads(), "device": "+".join(devices), "config": cfg.to_dict()}
    print(f"inference cost of the {'exported' if augmented else 'trained'} model (Eyeriss-like, 32 bit, one image):"
          f" {summary['energy_uj']:.1f} uJ, {summary['latency_ms']:.3f} ms")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_cost(summary: dict, bits: int = 32, hw: str = "eyeriss") -> dict:
    """Eyeriss-like cost (``profile(...).total``) of a finished run's deployed model, rebuilt from its config
    (an exported ShiftAddAug target is the plain model of the same structure)."""
    cfg = load_config(overrides={**summary["config"], "aug_op": "none"})
    info = dataset_info(cfg.dataset)
    return profile(build_model(cfg, info.num_classes, info.channels), resolve_input_size(cfg), bits=bits, hw=hw,
                   in_chans=info.channels).total

