"""A space of architectures around a base one, and drawing from it.

Each dimension either keeps the base architecture's value (``None``) or lists its choices: ``kernel``, ``expand``
(absolute expand ratios, Once-for-All), ``depth``, ``ops`` (per block); ``width_scale`` and ``expand_scale``
multiply the base's width multipliers and expand ratios (NetAug's augmentation factors). The fixed first block
(no expansion layer) keeps its kernel and depth. Architectures are plain dicts (``shiftaddaug.models.spec``).
"""
from __future__ import annotations

import json
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
    """An architecture of ``space`` with ``pick(choices, path)`` deciding each dimension (``path``: where in the
    architecture, e.g. ``("stages", 2, "blocks", 0, "kernel")``; a width's choices are scales of the base width).
    ``width=False``: base widths; ``base_ops``: the base's operators. A stage whose first block keeps its shortcut
    takes its input's width."""
    arch, base, spec = json.loads(json.dumps(space.base)), space.base, get_spec(space.base["model"])  # a fast deep copy

    def scale(*path):
        part = base[path[0]] if len(path) == 1 else base[path[0]][path[1]]
        return part["width"] * pick(space.width_scale, (*path, "width")) if width else part["width"]

    arch["stem"]["width"] = prev = scale("stem")
    for si, st in enumerate(arch["stages"]):
        st["width"] = prev = prev if tied(spec, si) else scale("stages", si)
        st["depth"] = pick(space.depths(si), ("stages", si, "depth"))
        for bi, b in enumerate(st["blocks"]):
            for key, choices in space.block(si, bi).items():
                if not (base_ops and key == "op"):
                    b[key] = pick(choices, ("stages", si, "blocks", bi, key))
    arch["head"]["width"] = scale("head")
    if "seg" in arch:
        arch["seg"]["width"] = scale("seg")
    return arch


def gene(space: Space, arch: dict, path: tuple):
    """The choice ``arch`` made at ``path`` (for a width: the scale of the base width nearest to it)."""
    value, base = arch, space.base
    for p in path:
        value, base = value[p], base[p]
    if path[-1] == "width":
        return min(space.width_scale, key=lambda s: abs(base * s - value))
    return value


def sample_arch(rng: random.Random, space: Space, width: bool = True) -> dict:
    """One architecture drawn uniformly, dimension by dimension (``width=False``: the base's widths)."""
    return _draw(space, lambda c, _: rng.choice(c), width)


def mutate(rng: random.Random, space: Space, arch: dict, prob: float) -> dict:
    """``arch`` with each dimension redrawn uniformly with probability ``prob`` (Once-for-All's mutation)."""
    return _draw(space, lambda c, path: rng.choice(c) if rng.random() < prob else gene(space, arch, path))


def crossover(rng: random.Random, space: Space, a: dict, b: dict) -> dict:
    """Each dimension taken from ``a`` or ``b`` with equal probability (uniform crossover)."""
    return _draw(space, lambda c, path: rng.choice((gene(space, a, path), gene(space, b, path))))


def min_arch(space: Space) -> dict:
    """The smallest architecture (operators: the base's)."""
    return _draw(space, lambda c, _: c[0] if c[0] is None else min(c), base_ops=True)


def max_arch(space: Space) -> dict:
    """The largest architecture (operators: the base's): the supernet stores its layers at these sizes."""
    return _draw(space, lambda c, _: c[0] if c[0] is None else max(c), base_ops=True)
