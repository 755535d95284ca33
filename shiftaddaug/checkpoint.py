"""Checkpoints: written atomically (never half a file), read with a one-line error when unusable."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import UserError


def save(obj: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: str | Path, required: tuple = ("model",)) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise UserError(f"checkpoint {path} is corrupt or not a shiftaddaug checkpoint ({type(e).__name__}); "
                        "re-create it with 'shiftaddaug train'") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in required):
        raise UserError(f"checkpoint {path} lacks {', '.join(required)}; it was not written by shiftaddaug")
    return ckpt
