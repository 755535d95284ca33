"""Training, top to bottom: data -> model -> optimiser and schedule -> epochs of steps -> evaluation -> export.

``train_step`` is the one training step (direct, or NetAug's target + sampled augmented sub-model); everything that
trains or times a step calls it. Run bookkeeping (folder, resume, checkpoints, summary) lives in ``runs``.
The step and the recipe: docs/method.md, section 4.
"""
from __future__ import annotations

import math
import sys
import time

import torch
import torch.nn as nn
from torch.profiler import record_function
from tqdm import tqdm

from . import dist, runs
from .build import build_model, check_task, resolve_device, resolve_input_size
from .config import TrainConfig
from .data import build_loaders
from .errors import UserError
from .evaluate import evaluate, recalibrate_bn
from .metrics import IGNORE_INDEX

BN_CALIB_IMAGES = 2000  # NetAug recalibrates BN of each evaluated sub-network on 2,000 training images


def param_groups(model: nn.Module, weight_decay: float, lr: float, remap_lr_scale: float = 1.0) -> list[dict]:
    """No weight decay on BatchNorm and biases (NetAug), nor on kernel transformation matrices (their identity
    initialisation is the prior, not zero). Remap parameters get their own group: no decay, for the same reason, and
    a learning rate of their own."""
    decay, no_decay, remap = [], [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (remap if ".remaps." in name else no_decay if p.ndim <= 1 or ".ktm." in name else decay).append(p)
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


def augmented_steps(rate: float, rate_end: float | None, total_steps: int):
    """Whether step ``s`` (0-based, over the whole run) has ShiftAddAug's augmented pass: the share ``rate`` of the
    steps, moving linearly to ``rate_end`` at the last one, spread evenly (rate 0.25: steps 0, 4, 8, ...). A running
    sum, not a coin: every process and every resume takes the same steps."""
    end = rate if rate_end is None else rate_end

    def due(s: int) -> float:  # augmented passes due in steps [0, s): the rate's integral
        return s * (rate + (end - rate) * s / max(1, total_steps) / 2)
    return lambda s: math.ceil(due(s + 1) - 1e-9) > math.ceil(due(s) - 1e-9)


class Diverged(UserError):
    """A step's loss is not finite or exploded; raised before the optimiser step, so the weights stay good."""


def _check_loss(name: str, loss: torch.Tensor, max_loss: float | None) -> None:
    value = loss.item()
    if not math.isfinite(value):
        raise Diverged(f"the {name} loss is {value}")
    if max_loss is not None and value > max_loss:
        raise Diverged(f"the {name} loss {value:.4g} exceeds {max_loss:.4g} (divergence_factor x the first step's)")


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer, criterion, *, augmented: bool = False,
               width_aug: bool = True, alpha: float = 1.0, remap_kl: float = 0.0, grad_clip: float | None = None,
               max_loss: float | None = None, sandwich: int | None = None, net: nn.Module | None = None):
    """One optimiser step; returns the target's (the smallest network's) logits and loss.

    Direct training: forward/backward of the model. ShiftAddAug (NetAug's step): forward/backward of the target,
    then of one sampled augmented sub-model (``width_aug=False``: expand ratios only), gradients summed
    (``L = L_target + alpha * L_augmented``), one optimiser step. Search supernet (``sandwich=n``, the sandwich rule):
    the largest network computed as the supernet's ``aug_op`` says (the wide multiplicative model), the smallest and
    ``n`` random multiplication-free sub-networks, gradients summed. The supernet is left in the smallest (target)
    configuration. A loss that is not finite or above ``max_loss`` raises ``Diverged`` before the optimiser step.
    ``net``: what computes the passes, when not ``model`` itself: the model under DistributedDataParallel (the step's
    last backward pass all-reduces the summed gradients), or ``torch.compile(model)``.
    """
    net = model if net is None else net
    passes = (["largest"] if sandwich is not None else []) + ["target"] + \
        [f"sampled sub-network {i + 1}" for i in range(sandwich or 0)] + \
        (["augmented"] if augmented and sandwich is None else [])
    optimizer.zero_grad(set_to_none=True)
    for i, name in enumerate(passes):
        weight, limit = (alpha, max_loss and alpha * max_loss) if name == "augmented" else (1.0, max_loss)
        if name == "largest":
            model.set_active("max")
        elif name == "target" and augmented:
            model.set_active("min")
        elif name.startswith("sampled"):
            model.set_active("random", augment=False)
        elif name == "augmented":
            model.set_active("random", width=width_aug)
        last = i == len(passes) - 1
        with dist.accumulating(net, last):
            with record_function(f"forward: {name}"):  # ranges for torch.profiler (benchmarks/step_profile.py)
                logits = net(x)
                loss = weight * criterion(logits, y)
                if name == "target" and remap_kl:
                    loss = loss + remap_kl * model.remap_kl()
            with record_function(f"backward: {name}"):
                (dist.touch_all(net, loss) if last else loss).backward()
        _check_loss(name, loss, limit)
        if name == "target":
            out, target_loss = logits, loss
    if augmented:
        model.set_active("min")
    with record_function("optimizer"):
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return out, target_loss


def progress(iterable, **kw):
    # frequent refresh on a terminal, sparse lines in logs
    return tqdm(iterable, mininterval=0.5 if sys.stderr.isatty() else 30, dynamic_ncols=True, **kw)


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Train as ``cfg`` says; under ``torchrun``, as one of its processes (``dist``)."""
    device = resolve_device(cfg.device)
    world = dist.setup(device)
    try:
        return _train(cfg, resume, world, dist.device_of(world, device))
    finally:
        dist.teardown(world)


def _train(cfg: TrainConfig, resume: bool, world: dist.World, device: torch.device) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # the same on every process: the same initial weights and sampled sub-networks
    runs.refuse_to_clobber(cfg, resume)
    check_task(cfg)  # before the data is loaded (or built, for generated datasets)

    # data and model
    augmented = cfg.aug_op != "none"
    calib_images = cfg.bn_calibration_images or (BN_CALIB_IMAGES if augmented else 0)
    data = build_loaders(cfg.dataset, cfg.data_dir, cfg.batch_size, resolve_input_size(cfg), seed=cfg.seed,
                         train_subset=cfg.train_subset, test_subset=cfg.test_subset, workers=cfg.workers,
                         calib_images=calib_images, skip_corrupt=cfg.skip_corrupt_images, val_images=cfg.val_images,
                         shard=(world.rank, world.size))
    split, held_out = ("val", data.val) if cfg.val_images else ("test", data.test)  # the search never sees test
    model = build_model(cfg, data.num_classes, data.channels)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=fmt)

    # optimiser and per-step schedule; the learning rate scales with the processes (lr is per batch_size images)
    optimizer = torch.optim.SGD(param_groups(model, cfg.weight_decay, cfg.lr * world.size, cfg.remap_lr_scale),
                                momentum=cfg.momentum, nesterov=cfg.nesterov)
    steps_per_epoch = len(data.train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, ignore_index=IGNORE_INDEX)  # seg: void
    run = runs.start(cfg, data.num_classes, data.channels, device, resume, model, optimizer, scheduler, world)
    ddp = dist.wrap(world, model) if world.distributed else None
    aug_rate = cfg.aug_rate or (model.default_aug_rate() if augmented and not cfg.search_space else 1.0)
    augment_now = augmented_steps(aug_rate, cfg.aug_rate_end, cfg.epochs * steps_per_epoch)

    with run:  # the run folder stays locked until the run ends, however it ends
        for epoch in range(run.start_epoch, cfg.epochs):
            model.train()
            if hasattr(data.train, "set_epoch"):
                data.train.set_epoch(epoch)
            t0, seen = time.perf_counter(), 0
            loss_sum, correct = torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device)
            scored = torch.zeros((), dtype=torch.long, device=device)  # images, or labelled pixels
            bar = progress(data.train, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not world.main)
            width_aug = epoch < cfg.width_aug_frac * cfg.epochs
            for step, (x, y) in enumerate(bar, 1):
                x, y = x.to(device, non_blocking=True).contiguous(memory_format=fmt), y.to(device, non_blocking=True)
                try:
                    aug = augmented and augment_now(epoch * steps_per_epoch + step - 1)
                    out, loss = train_step(model, x, y, optimizer, criterion, augmented=aug,
                                           width_aug=width_aug, alpha=cfg.alpha, remap_kl=cfg.remap_kl,
                                           grad_clip=cfg.grad_clip, max_loss=run.max_loss,
                                           sandwich=cfg.sandwich if cfg.search_space else None, net=ddp)
                except Diverged as e:
                    raise runs.diverged(run, model, f"epoch {epoch + 1}, step {step}", str(e)) from None
                run.note_first_loss(loss)
                scheduler.step()
                loss_sum += loss.detach() * len(y)
                labelled = y != IGNORE_INDEX
                correct += ((out.argmax(1) == y) & labelled).sum()
                scored += labelled.sum()
                seen += len(y)
                if step % 50 == 0 or step == steps_per_epoch:
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}",
                                    acc=f"{100 * correct.item() / max(1, scored.item()):.1f}", refresh=False)
            epoch_time = time.perf_counter() - t0
            run.train_time_s += epoch_time
            loss_total, correct_total, scored_total, seen = dist.all_sum(world, loss_sum.item(), correct.item(),
                                                                         scored.item(), seen)

            if data.calib is not None:  # BN statistics of the target configuration (the augmented passes shifted them)
                recalibrate_bn(model, data.calib, calib_images // world.size, cfg.channels_last)
            dist.average_bn_statistics(world, model)  # each process saw its own batches
            if hasattr(model, "rng"):  # the supernet's sampler: every process must have trained the same sub-networks
                dist.check_same(world, repr(model.rng.getstate()), "sub-networks")
            ev = evaluate(model, held_out, channels_last=cfg.channels_last, world=world)
            if not math.isfinite(ev["loss"]):  # weights and BN statistics: end_epoch checks them before writing
                raise runs.diverged(run, model, f"epoch {epoch + 1}, evaluation", f"the {split} loss is {ev['loss']}")
            row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_total / seen,
                   "train_acc": 100 * correct_total / max(1, scored_total), f"{split}_loss": ev["loss"],
                   f"{split}_acc": ev["acc"], **({f"{split}_miou": ev["miou"]} if "miou" in ev else {}),
                   "epoch_time_s": epoch_time, "images_per_s": seen / epoch_time}
            miou = f" mIoU {ev['miou']:.2f}" if "miou" in ev else ""
            if world.main:
                print(f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}  "
                      f"{split} loss {ev['loss']:.4f} acc {ev['acc']:.2f}{miou}  {row['images_per_s']:.0f} img/s",
                      flush=True)
            runs.end_epoch(run, row, model, optimizer, scheduler)

        # the deliverable: the trained model, or the plain target of the supernet (nothing of the augmentation left);
        # a search supernet is the deliverable itself ('search evolve' picks its sub-network)
        if cfg.search_space:
            deployed = model.export()
        elif augmented:
            deployed = runs.export_target(model, cfg, data.num_classes, data.channels, cfg.run_dir / "exported.pt",
                                          write=world.main)
        else:
            deployed = model
        return runs.finish(run, deployed)
