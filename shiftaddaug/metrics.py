"""Segmentation metrics from one confusion matrix: mean IoU, per-class IoU, pixel accuracy."""
from __future__ import annotations

import math

import torch

IGNORE_INDEX = 255  # VOC's and Cityscapes' label for pixels that count nowhere (borders, void)


class ConfusionMatrix:
    """Counts (true class, predicted class) over every pixel not labelled ``ignore_index``."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred``: class indices or logits ``[B, C, H, W]``; ``target``: class indices ``[B, H, W]``."""
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction of shape {tuple(pred.shape)} against a mask of shape {tuple(target.shape)}")
        keep = target != self.ignore_index
        t, p = target[keep].long().cpu(), pred[keep].long().cpu()
        if len(t) and (t.min() < 0 or t.max() >= self.num_classes):
            raise ValueError(f"mask holds class {int(t[(t < 0) | (t >= self.num_classes)][0])}, outside "
                             f"[0, {self.num_classes}) and not the ignore index {self.ignore_index}")
        self.counts += torch.bincount(t * self.num_classes + p, minlength=self.num_classes ** 2).view_as(self.counts)

    def iou(self) -> list[float]:
        """IoU per class; NaN for a class absent from both the masks and the predictions (it counts nowhere)."""
        tp = self.counts.diag().double()
        union = self.counts.sum(0).double() + self.counts.sum(1).double() - tp
        return [float(a / u) if u else math.nan for a, u in zip(tp, union)]

    def miou(self) -> float:
        present = [v for v in self.iou() if not math.isnan(v)]
        return sum(present) / len(present) if present else math.nan

    def pixel_acc(self) -> float:
        total = int(self.counts.sum())
        return float(self.counts.diag().sum()) / total if total else math.nan
