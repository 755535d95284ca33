"""Stage 1, search-space optimisation (TinyNAS's rule).

Over a grid of width multiplier x input resolution x augmentation multiple, draw ``samples`` sub-networks of each
space, keep those meeting the budget, and choose the space whose satisfying sub-networks have the highest mean MACs
(more computation within the same budget tends to mean more accuracy). Costs come from the analytic cost model
(``hw.arch_cost``), so the default grid of 36 spaces x 1000 sub-networks takes well under a minute.
"""
from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

from tqdm import tqdm

from ..augment.space import sample_arch
from .constraints import LIMITS, Budget, value
from .space import search_space

MULTIPLES = (2.2, 2.4, 2.8, 3.2)  # ShiftAddAug's Table 2
WIDTHS = (0.5, 0.75, 1.0)
RESOLUTION_SCALES = (0.5, 0.75, 1.0)  # of the model's resolution, rounded to a multiple of 8


class NoFeasibleNetwork(ValueError):
    """No sampled sub-network of any space meets the budget."""


@dataclass
class SpaceStats:
    width: float
    resolution: int
    multiple: float
    samples: int
    macs: list = field(default_factory=list)  # MACs of the satisfying sub-networks, sorted

    @property
    def fraction(self) -> float:
        return len(self.macs) / self.samples

    @property
    def mean_macs(self) -> float:
        return sum(self.macs) / len(self.macs) if self.macs else 0.0

    def row(self) -> dict:
        return {"width": self.width, "resolution": self.resolution, "multiple": self.multiple,
                "samples": self.samples, "satisfying": len(self.macs), "fraction": self.fraction,
                "mean_macs": self.mean_macs}


def _space_stats(model, budget, w, r, m, ops, samples, seed, mf_stem_head) -> tuple[SpaceStats, dict]:
    """One space's satisfying MACs, and its smallest cost per constraint."""
    space = search_space(model, w, r, m, ops, mf_stem_head=mf_stem_head)
    rng = random.Random(f"{seed}/{w}/{r}/{m}")  # a space draws the same networks whatever else is in the grid
    st, lowest = SpaceStats(w, r, m, samples), {}
    for _ in range(samples):
        cost = budget.cost(sample_arch(rng, space))
        if budget.ok(cost):
            st.macs.append(cost.macs)
        for n in budget.limits:
            lowest[n] = min(lowest.get(n, float("inf")), value(cost, n))
    st.macs.sort()
    return st, lowest


def optimise_space(model: str, budget: Budget, widths=None, resolutions=None, multiples=None,
                   ops=("shift", "add"), samples: int = 1000, seed: int = 0, mf_stem_head: bool = False,
                   min_fraction: float = 0.05, workers: int = 1,
                   show_progress: bool = True) -> tuple[list[SpaceStats], SpaceStats]:
    """Statistics of every space of the grid, and the chosen one among those where at least ``min_fraction`` of
    the sub-networks meet the budget (a space where almost none fits leaves stage 2 nothing to search, and the mean
    of a handful is noise). ``workers`` processes share the grid. ``NoFeasibleNetwork`` when no space qualifies (the
    message gives the smallest cost found)."""
    from ..models import get_spec

    widths, multiples = widths or WIDTHS, multiples or MULTIPLES
    res = get_spec(model).res
    resolutions = resolutions or sorted({max(8, round(res * s / 8) * 8) for s in RESOLUTION_SCALES})
    search_space(model, widths[0], resolutions[0], multiples[0], ops, mf_stem_head=mf_stem_head)  # bad input fails here
    jobs = [(model, budget, w, r, m, tuple(ops), samples, seed, mf_stem_head)
            for w in widths for r in resolutions for m in multiples]
    bar = tqdm(total=len(jobs) * samples, desc="stage 1: spaces", unit="net", disable=not show_progress,
               mininterval=0.5, dynamic_ncols=True)
    results = []
    if workers > 1:
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            for res in pool.map(_space_stats, *zip(*jobs)):
                results.append(res)
                bar.update(samples)
    else:
        for job in jobs:
            results.append(_space_stats(*job))
            bar.update(samples)
    bar.close()
    stats, lowest = [st for st, _ in results], {}
    for _, low in results:
        for n, v in low.items():
            lowest[n] = min(lowest.get(n, float("inf")), v)
    feasible = [s for s in stats if s.macs and s.fraction >= min_fraction]
    if not feasible and any(s.macs for s in stats):
        top = max(stats, key=lambda s: s.fraction)
        raise NoFeasibleNetwork(f"no space has {min_fraction:.0%} of its sub-networks within {budget.describe()}; "
                                f"the best has {top.fraction:.1%} (width {top.width:g}, resolution {top.resolution}, "
                                f"multiple {top.multiple:g}). Relax the constraint, add smaller widths or "
                                "resolutions, or lower --min-fraction")
    if not feasible:
        found = ", ".join(f"{LIMITS[n][3]} {v:.4g} {LIMITS[n][2]}".rstrip() for n, v in lowest.items())
        raise NoFeasibleNetwork(f"no sub-network of the {len(jobs)} spaces satisfies {budget.describe()} "
                                f"({samples} drawn per space); the smallest found: {found}. Relax the constraint or "
                                "add smaller widths (--widths) and resolutions (--resolutions)")
    return stats, max(feasible, key=lambda s: (s.mean_macs, -s.multiple))
