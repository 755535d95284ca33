"""Evaluation and BatchNorm recalibration, shared by training, the CLI and the benchmarks."""
from __future__ import annotations

import torch
import torch.nn as nn

from .metrics import IGNORE_INDEX, ConfusionMatrix


def _inputs(model: nn.Module, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.to(next(model.parameters()).device).contiguous(memory_format=fmt)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """Class per image (or per pixel, for segmentation) of a batch, in eval mode, on the CPU."""
    return model.eval()(_inputs(model, x, channels_last)).argmax(1).cpu()


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader, num_images: int, channels_last: bool = True) -> None:
    """Recompute BatchNorm running statistics as the plain mean of per-batch statistics over the first
    ``num_images`` images of ``loader`` (NetAug)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    seen = 0
    for x, _ in loader:
        model(_inputs(model, x[: num_images - seen], channels_last))
        seen += min(len(x), num_images - seen)
        if seen >= num_images:
            break
    for m, mom in zip(bns, saved):
        m.momentum = mom


@torch.no_grad()
def evaluate(model: nn.Module, loader, criterion=None, channels_last: bool = True, world=None) -> dict:
    """Mean loss and top-1 accuracy (%) over ``loader``, in eval mode. For segmentation (masks as labels): the
    pixel accuracy as ``acc``, and ``miou`` and per-class ``iou`` (%), pixels labelled 255 ignored. ``world``
    (distributed training): ``loader`` is this process's shard, and the sums are reduced over all processes."""
    from . import dist

    world = world or dist.World()
    model.eval()
    criterion = criterion or nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    loss_sum, correct, n, cm = 0.0, 0, 0, None
    for x, y in loader:
        out = model(_inputs(model, x, channels_last))
        y = y.to(out.device)
        loss_sum += criterion(out, y).item() * len(y)
        n += len(y)
        if y.dim() == 3:
            cm = cm or ConfusionMatrix(out.shape[1])
            cm.update(out, y)
        else:
            correct += (out.argmax(1) == y).sum().item()
    if world.distributed:  # every shard holds images (there are at least as many as processes)
        loss_sum, correct, n = dist.all_sum(world, loss_sum, correct, n)
        if cm is not None:
            dist.all_sum_(world, cm.counts)
    if cm is None:
        return {"loss": loss_sum / max(n, 1), "acc": 100.0 * correct / max(n, 1)}
    return {"loss": loss_sum / max(n, 1), "acc": 100.0 * cm.pixel_acc(), "miou": 100.0 * cm.miou(),
            "iou": [100.0 * v for v in cm.iou()]}
