"""Stage 2, evolutionary search over a trained search supernet (Once-for-All's evolution, with direct evaluation).

The population starts as ``population`` random sub-networks that meet the budget (rejection sampling). Each
generation keeps the best ``parent_ratio`` as parents and adds ``mutation_ratio x population`` mutants of random
parents (each dimension redrawn with ``mutation_prob``) and crossovers of two random parents for the rest of the
population; a child that breaks the budget is drawn again. A sub-network's fitness is its accuracy on the validation
images held out of the training set, after its BatchNorm statistics are recalibrated on a fixed training subset.
Evaluations are cached by architecture; the state is saved after every generation and every few evaluations, so an
interrupted search resumes where it stopped and draws the same children.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from ..augment.space import Space, crossover, mutate, sample_arch
from ..files import write_json
from .constraints import LIMITS, Budget, value
from .space_search import NoFeasibleNetwork

MAX_TRIES = 1000  # draws per child before it is given up (and the parent kept)


@dataclass(frozen=True)
class EvolutionSettings:
    population: int = 100
    generations: int = 20
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutation_prob: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.population < 2 or self.generations < 0:
            raise ValueError("population must be at least 2 and generations at least 0")
        if not 0 < self.parent_ratio <= 1 or not 0 <= self.mutation_ratio <= 1 or not 0 <= self.mutation_prob <= 1:
            raise ValueError("parent_ratio must be in (0, 1], mutation_ratio and mutation_prob in [0, 1]")


def key_of(arch: dict) -> str:
    return json.dumps(arch, sort_keys=True)


class Evolution:
    """``fitness(arch) -> accuracy``; ``budget`` decides which architectures may enter; ``state_path`` (optional)
    makes the search resumable."""

    def __init__(self, space: Space, budget: Budget, fitness: Callable[[dict], float], settings: EvolutionSettings,
                 state_path: Path | None = None, show_progress: bool = True):
        self.space, self.budget, self.fitness, self.s = space, budget, fitness, settings
        self.state_path, self.show_progress = state_path, show_progress
        self.rng = random.Random(settings.seed)
        self.evaluated: dict[str, dict] = {}  # key -> {"arch", "val_acc", cost fields}
        self.population: list[str] = []
        self.generation = 0  # generations completed
        self._pending_rng = None  # the RNG state at the start of an unfinished generation (or initial population)

    # --- state -------------------------------------------------------------------------------------------------
    def _save(self) -> None:
        if self.state_path is not None:
            write_json(self.state_path, {"settings": asdict(self.s), "budget": self.budget.to_dict(),
                                         "generation": self.generation, "population": self.population,
                                         "rng": _jsonable(self.rng.getstate()), "evaluated": self.evaluated,
                                         "pending_rng": self._pending_rng})

    def resume(self) -> bool:
        """Load the saved state; ``False`` when there is none. A state of other settings or budget is refused."""
        if self.state_path is None or not self.state_path.exists():
            return False
        try:
            st = json.loads(self.state_path.read_text())
            saved = (st["settings"], st["budget"])
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise ValueError(f"{self.state_path} is not a search state (corrupt?); delete it to start afresh") from None
        def fixed(settings: dict) -> dict:  # more (or fewer) generations continue the same search
            return {k: v for k, v in settings.items() if k != "generations"}

        if (fixed(saved[0]), saved[1]) != (fixed(asdict(self.s)), self.budget.to_dict()):
            raise ValueError(f"{self.state_path} was written by a search with other settings or constraints; keep them "
                             "to resume (only --generations may change), or choose another --out")
        self.generation, self.population, self.evaluated = st["generation"], st["population"], st["evaluated"]
        self.rng.setstate(_tupled(st["pending_rng"] or st["rng"]))
        return True

    # --- the search --------------------------------------------------------------------------------------------
    def _evaluate(self, archs: list[dict], desc: str) -> None:
        todo = [a for a in archs if key_of(a) not in self.evaluated]
        for i, arch in enumerate(tqdm(todo, desc=desc, unit="net", disable=not self.show_progress, leave=False,
                                      dynamic_ncols=True), 1):
            cost = self.budget.cost(arch)
            self.evaluated[key_of(arch)] = {"arch": arch, "val_acc": float(self.fitness(arch)), **cost.to_dict()}
            if i % 10 == 0:
                self._save()

    def _feasible(self, draw: Callable[[], dict], fallback: dict | None = None) -> dict:
        tried = []
        for _ in range(MAX_TRIES):
            arch = draw()
            cost = self.budget.cost(arch)
            if self.budget.ok(cost):
                return arch
            tried.append(cost)
        if fallback is not None:
            return fallback
        found = ", ".join(f"{LIMITS[n][3]} {min(value(c, n) for c in tried):.4g} {LIMITS[n][2]}".rstrip()
                          for n in self.budget.limits)
        raise NoFeasibleNetwork(f"no sub-network of this supernet satisfies {self.budget.describe()} ({MAX_TRIES} "
                                f"drawn); the smallest found: {found}. Relax the constraint, or search a smaller "
                                "space (shiftaddaug search space)")

    def run(self) -> dict:
        """Evolve; returns the best evaluated architecture's record."""
        s = self.s
        if not self.population:
            self._pending_rng = _jsonable(self.rng.getstate())  # redraws the same population after an interruption
            archs = [self._feasible(lambda: sample_arch(self.rng, self.space)) for _ in range(s.population)]
            self._evaluate(archs, "initial population")
            self.population = [key_of(a) for a in archs]
            self._pending_rng = None
            self._save()
        n_parents = max(1, round(s.parent_ratio * s.population))
        n_mutants = round(s.mutation_ratio * s.population)
        while self.generation < s.generations:
            self._pending_rng = _jsonable(self.rng.getstate())
            ranked = sorted(dict.fromkeys(self.population), key=lambda k: -self.evaluated[k]["val_acc"])  # no set: its
            # order follows string hashes, which differ per process, and a resumed search must draw the same children
            parents = [self.evaluated[k]["arch"] for k in ranked[:n_parents]]
            children = []
            for _ in range(n_mutants):
                p = self.rng.choice(parents)
                children.append(self._feasible(lambda p=p: mutate(self.rng, self.space, p, s.mutation_prob), p))
            for _ in range(s.population - n_mutants):
                a, b = self.rng.choice(parents), self.rng.choice(parents)
                children.append(self._feasible(lambda a=a, b=b: crossover(self.rng, self.space, a, b), a))
            self._evaluate(children, f"generation {self.generation + 1}/{s.generations}")
            self.population = [key_of(a) for a in parents + children]
            self.generation += 1
            self._pending_rng = None
            self._save()
            best = self.best()
            if self.show_progress:
                print(f"generation {self.generation}/{s.generations}: best val top-1 {best['val_acc']:.2f} % "
                      f"({best['energy_uj']:.3f} uJ), {len(self.evaluated)} sub-networks evaluated", flush=True)
        return self.best()

    def best(self) -> dict:
        return max(self.evaluated.values(), key=lambda r: (r["val_acc"], -r["energy_uj"]))

    def front(self) -> list[dict]:
        """The Pareto front of accuracy (higher) against energy (lower), by increasing energy."""
        out, best_acc = [], float("-inf")
        for r in sorted(self.evaluated.values(), key=lambda r: (r["energy_uj"], -r["val_acc"])):
            if r["val_acc"] > best_acc:
                out.append(r)
                best_acc = r["val_acc"]
        return out


def _jsonable(state):
    return [list(x) if isinstance(x, tuple) else x for x in state]


def _tupled(state):
    return tuple(tuple(x) if isinstance(x, list) else x for x in state)
