"""Hardware constraints a user can state, and the cost model that checks them.

A ``Budget`` bounds any of energy (uJ), latency (ms), parameters, flash (KiB), peak activation memory (SRAM, KiB,
int8) and MACs (millions) of one image, costed by the Eyeriss-like model (``eyeriss`` or the ``shiftaddnas``
preset, at 32/16/8 bit), or, for latency, by the user's own table of measured layer latencies (``LatencyTable``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..hw.arch_cost import Cost, LatencyTable, arch_cost
from ..hw.eyeriss import ACCELERATORS

# limit name -> (Cost field, unit divisor, unit, label)
LIMITS = {"energy_uj": ("energy_uj", 1.0, "uJ", "energy"), "latency_ms": ("latency_ms", 1.0, "ms", "latency"),
          "params": ("params", 1.0, "", "parameters"), "flash_kb": ("flash_bytes", 1024.0, "KiB", "flash"),
          "sram_kb": ("sram_bytes", 1024.0, "KiB", "peak SRAM"), "macs_m": ("macs", 1e6, "M", "MACs")}


def value(cost: Cost, name: str) -> float:
    """``cost`` in the unit of limit ``name``."""
    attr, div, _, _ = LIMITS[name]
    return getattr(cost, attr) / div


@dataclass
class Budget:
    """Limits (``LIMITS`` names -> upper bounds) and how to cost an architecture for them."""
    limits: dict = field(default_factory=dict)
    num_classes: int = 1000
    in_chans: int = 3
    bits: int = 32
    hw: str = "eyeriss"
    table: LatencyTable | None = None
    op_options: dict | None = None

    def __post_init__(self):
        for name, v in self.limits.items():
            if name not in LIMITS:
                raise ValueError(f"unknown constraint {name!r}; choose from {', '.join(LIMITS)}")
            if not v > 0:
                raise ValueError(f"constraint {name}={v} must be positive")
        if self.hw not in ACCELERATORS:
            raise ValueError(f"unknown hardware {self.hw!r}; choose one of {', '.join(ACCELERATORS)}")
        if self.bits not in (32, 16, 8):
            raise ValueError(f"bits must be 32, 16 or 8, got {self.bits}")

    def cost(self, arch: dict) -> Cost:
        return arch_cost(arch, self.num_classes, self.in_chans, self.bits, self.hw, self.op_options, self.table)

    def ok(self, cost: Cost) -> bool:
        return all(value(cost, n) <= v for n, v in self.limits.items())

    def describe(self) -> str:
        if not self.limits:
            return "no constraint"
        return ", ".join(f"{LIMITS[n][3]} <= {v:g} {LIMITS[n][2]}".rstrip() for n, v in self.limits.items())

    def closest(self, costs) -> str:
        """The smallest cost found per limit, to say how far an impossible constraint is."""
        return ", ".join(f"{LIMITS[n][3]} {min(value(c, n) for c in costs):.4g} {LIMITS[n][2]}".rstrip()
                         for n in self.limits)

    def to_dict(self) -> dict:
        return {"limits": dict(self.limits), "num_classes": self.num_classes, "in_chans": self.in_chans,
                "bits": self.bits, "hw": self.hw, "latency_table": self.table.path if self.table else None}
