"""Checkpoints: versioned, of a declared kind, written atomically, read without running any code.

A checkpoint is a dict with ``format`` (``FORMAT_VERSION``), ``kind`` (one of ``KINDS``), ``model`` (a state dict),
``config`` (the run's config as plain data), ``num_classes`` and ``in_chans``; a training state adds ``optimizer``,
``scheduler``, ``epoch`` and the run's bookkeeping. Reading uses ``torch.load(weights_only=True)``: a file from
someone else can hold tensors and plain data only, never a pickled object that runs code when loaded.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch

from .errors import UserError
from .files import atomic_write

FORMAT_VERSION = 2  # 2: models are stages of blocks, supernet layers keep one remap per operator
KINDS = ("model", "supernet", "exported")  # a plain model trained directly, a ShiftAddAug supernet, its target
REQUIRED = ("format", "kind", "model", "config", "num_classes", "in_chans")


def save(obj: dict, path: str | Path, kind: str) -> None:
    """Write ``obj`` as a checkpoint of ``kind``, atomically (never half a file)."""
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT_VERSION, "kind": kind, **obj}, tmp))


def load(path: str | Path, required: tuple = ()) -> dict:
    """A checkpoint with every key of ``REQUIRED`` and ``required``, or a one-line ``UserError`` saying why not."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error below says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refuses objects other than tensors and plain data
        raise UserError(f"checkpoint {path} holds pickled code or objects, not only weights; refused (load only "
                        "checkpoints written by shiftaddaug)") from None
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise UserError(f"checkpoint {path} is corrupt or not a shiftaddaug checkpoint ({type(e).__name__}); "
                        "re-create it with 'shiftaddaug train'") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise UserError(f"checkpoint {path} has no format version: it was not written by this version of "
                        "shiftaddaug; retrain it")
    if ckpt["format"] != FORMAT_VERSION:
        raise UserError(f"checkpoint {path} has format {ckpt['format']}, this version reads {FORMAT_VERSION}; "
                        "retrain it with this version")
    if ckpt.get("kind") not in KINDS or any(k not in ckpt for k in (*REQUIRED, *required)):
        raise UserError(f"checkpoint {path} lacks {', '.join(k for k in (*REQUIRED, *required) if k not in ckpt)} "
                        f"or has an unknown kind; it was not written by shiftaddaug")
    return ckpt
