"""A space of architectures around a base one, and drawing from it.

Each dimension either keeps the base architecture's value (``None``) or lists its choices: ``kernel``, ``expand``
(absolute expand ratios, Once-for-All), ``depth``, ``ops`` (per block); ``width_scale`` and ``expand_scale``
multiply the base's width multipliers and expand ratios (NetAug's augmentation factors). The fixed first block
(no expansion layer) keeps its kernel and depth. Architectures are plain dicts (``shiftaddaug.models.spec``).
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass

from ..models import get_spec
from ..models.spec import tied


@dataclass(frozen=True)
class Space:
    base: dict
    width_scale: tuple = (1.0,)
    expand_scale: tuple = (1.0,)
    expand: tuple | None = None
    kernel: tuple | None = None
    depth: tuple | None = None
    ops: tuple | None = None

    def block(self, si: int, bi: int) -> dict:
        """Choices of one block: ``kernel``, ``expand``, ``op``."""
        b = self.base["stages"][si]["blocks"][bi]
        if b["expand"] is None:  # the fixed first block
            return {"kernel": (b["kernel"],), "expand": (None,), "op": tuple(self.ops or (b["op"],))}
        expand = self.expand or tuple(b["expand"] * s for s in self.expand_scale)
        return {"kernel": tuple(self.kernel or (b["kernel"],)), "expand": tuple(expand),
                "op": tuple(self.ops or (b["op"],))}

    def depths(self, si: int) -> tuple:
        st = self.base["stages"][si]
        n = len(st["blocks"])
        if self.depth is None or st["blocks"][0]["expand"] is None:
            return (st["depth"],)
        return tuple(d for d in self.depth if 1 <= d <= n) or (n,)


def _draw(space: Space, pick, width: bool = True, base_ops: bool = False) -> dict:
    """An architecture of ``space`` with ``pick(choices)`` deciding each dimension (``width=False``: base widths;
    ``base_ops``: the base's operators). A stage whose first block keeps its shortcut takes its input's width."""
    arch, base, spec = copy.deepcopy(space.base), space.base, get_spec(space.base["model"])
    scale = (lambda w: w * pick(space.width_scale)) if width else (lambda w: w)
    arch["stem"]["width"] = prev = scale(base["stem"]["width"])
    for si, st in enumerate(arch["stages"]):
        st["width"] = prev = prev if tied(spec, si) else scale(base["stages"][si]["width"])
        st["depth"] = pick(space.depths(si))
        for bi, b in enumerate(st["blocks"]):
            for key, choices in space.block(si, bi).items():
                if not (base_ops and key == "op"):
                    b[key] = pick(choices)
    arch["head"]["width"] = scale(base["head"]["width"])
    return arch


def sample_arch(rng: random.Random, space: Space, width: bool = True) -> dict:
    """One architecture drawn uniformly, dimension by dimension (``width=False``: the base's widths)."""
    return _draw(space, rng.choice, width)


def min_arch(space: Space) -> dict:
    """The smallest architecture (operators: the base's)."""
    return _draw(space, lambda c: c[0] if c[0] is None else min(c), base_ops=True)


def max_arch(space: Space) -> dict:
    """The largest architecture (operators: the base's): the supernet stores its layers at these sizes."""
    return _draw(space, lambda c: c[0] if c[0] is None else max(c), base_ops=True)
