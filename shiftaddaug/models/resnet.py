"""CIFAR ResNet-20 (He et al. 2016), the model DeepShift and AdderNet report on, as a spec table."""
from __future__ import annotations

from .spec import NetSpec, StageSpec


def _stage(out: int, n: int, stride: int) -> StageSpec:
    return StageSpec(out, [1.0] * n, [3] * n, stride, "relu", block="basic", first_shortcut=True)


SPECS = {"resnet20": NetSpec(16, [_stage(16, 3, 1), _stage(32, 3, 2), _stage(64, 3, 2)], stem_act="relu",
                             stem_stride=1, res=32, small_input=0)}
