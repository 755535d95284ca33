"""Model zoo: one ``create_model(name, ...)`` registry builds every model, for any operator."""
from __future__ import annotations

import functools
from typing import Callable

import torch.nn as nn

from . import mobilenet
from .resnet import CifarResNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    **{name: functools.partial(mobilenet.build, name) for name in mobilenet.SPECS},
    "resnet20": functools.partial(CifarResNet, 20),
}
DEFAULT_RES = {**{n: s.res for n, s in mobilenet.SPECS.items()}, "resnet20": 32}


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 1000, op="mult", in_chans: int = 3, input_size: int = 224,
                 **kw) -> nn.Module:
    """Build a zoo model. ``op``: ``"mult"``, ``"shift"``, ``"add"``, or a list with one per convertible layer.

    The stem and classifier stay multiplicative unless ``mf_stem_head=True``. ``input_size`` only changes strides
    (inputs of 64 px or less keep full resolution in the stem and first stage).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name](num_classes=num_classes, op=op, in_chans=in_chans, input_size=input_size, **kw)


__all__ = ["create_model", "list_models", "DEFAULT_RES"]
