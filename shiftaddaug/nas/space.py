"""Search spaces of the two-stage search, and their JSON form.

A search space is a zoo family at a width multiplier and input resolution whose blocks take Once-for-All's elastic
kernel, expand ratio and depth and an operator per block, and whose widths go up to an *augmentation multiple*:
each width point draws a factor from ``(1, (1 + m) / 2, m)`` (NetAug's three-point factors; m = 2.2 gives MCUNet's
``(1, 1.6, 2.2)``). Its largest network is the wide multiplicative model that augments the multiplication-free
sub-networks while the supernet trains. Stages the family lists with one block (the fixed first block, the head
block) keep depth 1; the others hold ``max(depth)`` blocks.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..augment.space import Space
from ..models import get_spec
from ..models.spec import ArchError, check_arch, default_arch
from ..ops import get_operator

KERNELS, EXPANDS, DEPTHS = (3, 5, 7), (3, 4, 6), (2, 3, 4)


def width_factors(multiple: float) -> tuple:
    if multiple < 1:
        raise ValueError(f"an augmentation multiple must be at least 1, got {multiple}")
    return (1.0,) if multiple == 1 else (1.0, round((1 + multiple) / 2, 6), float(multiple))


def search_space(model: str, width: float = 1.0, resolution: int | None = None, multiple: float = 1.0,
                 ops=("shift", "add"), kernel=KERNELS, expand=EXPANDS, depth=DEPTHS,
                 mf_stem_head: bool = False) -> Space:
    """The space of ``model`` at width multiplier ``width`` and ``resolution`` (default: the model's), widths up to
    ``multiple`` times that. ``ops``: the blocks' candidate operators (the first is the smallest network's)."""
    spec = get_spec(model)
    ops = tuple(ops)
    for op in ops:
        get_operator(op)
    if not ops:
        raise ValueError("a search space needs at least one operator")
    if width <= 0:
        raise ValueError(f"width multiplier must be positive, got {width}")
    base = default_arch(model, spec, ops[0], mf_stem_head, resolution)
    for part in (base["stem"], base["head"], *base["stages"]):
        part["width"] = width
    n = max(depth)
    for st in base["stages"]:
        if len(st["blocks"]) > 1:
            st["blocks"] += [dict(st["blocks"][-1]) for _ in range(n - len(st["blocks"]))]
            st["blocks"] = st["blocks"][:n] if n >= min(depth) else st["blocks"]
            st["depth"] = len(st["blocks"])
    basic = any(s.block == "basic" for s in spec.stages)  # a basic block's inner width follows its output's
    check_arch(base, spec)
    return Space(base, width_scale=width_factors(multiple), kernel=tuple(kernel),
                 expand=None if basic else tuple(expand), depth=tuple(depth), ops=ops)


def space_to_dict(space: Space) -> dict:
    return {"base": space.base, **{k: list(v) if v is not None else None for k, v in vars(space).items()
                                   if k != "base"}}


def space_from_dict(d: dict, where: str = "space") -> Space:
    """A ``Space`` from its JSON form; a one-line ``ValueError`` naming the field that is wrong."""
    if not isinstance(d, dict) or not isinstance(d.get("base"), dict):
        raise ValueError(f"{where}: needs a \"base\" architecture (write it with 'shiftaddaug search space')")
    base = d["base"]
    try:
        check_arch(base, get_spec(base.get("model")))
    except ArchError as e:
        raise ValueError(f"{where}: base {e}") from None
    kw = {}
    for key in ("width_scale", "expand_scale", "expand", "kernel", "depth", "ops"):
        v = d.get(key)
        if v is None and key not in ("width_scale", "expand_scale"):
            kw[key] = None
            continue
        if v is None:
            continue
        if not isinstance(v, list) or not v:
            raise ValueError(f"{where}: {key}={v!r} must be a non-empty list")
        kw[key] = tuple(v)
    for op in kw.get("ops") or ():
        try:
            get_operator(op)
        except ValueError as e:
            raise ValueError(f"{where}: ops: {e}") from None
    return Space(base, **kw)


def load_space(path: str | Path) -> Space:
    try:
        d = json.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read search space {path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"search space {path} is not valid JSON ({e})") from None
    return space_from_dict(d.get("space", d) if isinstance(d, dict) else d, str(path))


def with_ops(space: Space, ops) -> Space:
    """``space`` with the blocks' candidate operators ``ops`` (the first: the smallest network's)."""
    ops = tuple(ops)
    for op in ops:
        get_operator(op)
    base = json.loads(json.dumps(space.base))
    for st in base["stages"]:
        for b in st["blocks"]:
            b["op"] = ops[0]
    return Space(**{**vars(space), "base": base, "ops": ops})
