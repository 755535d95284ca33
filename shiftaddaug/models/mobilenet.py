"""The tiny MobileNet-family models of NetAug/ShiftAddAug, one spec table each.

Stage 0 is the depthwise-separable first block (no expansion layer); the last stage is the head block.
"""
from __future__ import annotations

from .spec import NetSpec, StageSpec


def _uniform(out, e, n, k, s, **kw) -> StageSpec:
    return StageSpec(out, [e] * n, [k] * n, s, **kw)


def _first(out, act="relu6", shortcut=False) -> StageSpec:
    return StageSpec(out, [None], [3], 1, act, first_shortcut=shortcut)


_MBV2_BODY = [_first(8), _uniform(8, 6, 2, 3, 2), _uniform(16, 6, 3, 3, 2), _uniform(24, 6, 4, 3, 2),
              _uniform(32, 6, 3, 3, 1), _uniform(56, 6, 3, 3, 2), _uniform(112, 6, 1, 3, 1)]

SPECS: dict[str, NetSpec] = {
    "mobilenetv2_tiny": NetSpec(16, _MBV2_BODY, final_expand=448, res=144),
    "mobilenetv2_w035": NetSpec(16, _MBV2_BODY, final_expand=1280, res=160),
    "proxylessnas_w035": NetSpec(16, [
        _first(8), StageSpec(16, [3, 3], [5, 3], 2), StageSpec(16, [3, 3, 3, 3], [7, 3, 5, 5], 2),
        StageSpec(32, [6, 3, 3, 3], [7, 5, 5, 5], 2), StageSpec(32, [6, 3, 3, 3], [5, 5, 5, 5], 1),
        StageSpec(64, [6, 6, 3, 3], [7, 7, 7, 7], 2), StageSpec(112, [6], [7], 1)], final_expand=1280, res=160),
    "mcunet": NetSpec(16, [
        _first(8), StageSpec(16, [3, 5, 5, 4], [7, 3, 7, 5], 2), StageSpec(24, [5, 5, 5], [5, 5, 5], 2),
        StageSpec(40, [5, 6, 4], [3, 7, 5], 2), StageSpec(48, [5, 5, 5], [5, 7, 3], 1),
        StageSpec(96, [6, 5, 4], [3, 7, 3], 2), StageSpec(160, [5], [7], 1)], res=176),
    "mobilenetv3_w035": NetSpec(8, [
        _first(8, "relu", shortcut=True),
        StageSpec(8, [64, 72], [3, 3], 2, "relu"), StageSpec(16, [72, 120, 120], [5] * 3, 2, "relu", se=True),
        StageSpec(32, [240, 200, 184, 184], [3] * 4, 2, "hswish"),
        StageSpec(40, [480, 672], [3, 3], 1, "hswish", se=True),
        StageSpec(56, [672, 960, 960], [5] * 3, 2, "hswish", se=True)],
        final_expand=336, feature_mix=1280, stem_act="hswish", absolute_mid=True, head_act="hswish", res=160),
}
