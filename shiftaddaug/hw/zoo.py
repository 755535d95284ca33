"""Cost of every zoo model in each operator variant (for ``shiftaddaug plot --zoo`` and the benchmarks)."""
from __future__ import annotations

from ..models import DEFAULT_RES, create_model, list_models
from ..ops import OPERATORS
from .profile import profile


def zoo_costs(input_size: int | None = None, bits: int = 32, hw: str = "eyeriss", num_classes: int = 100,
              models: list[str] | None = None) -> dict[str, dict[str, dict]]:
    """``{model: {op: profile(...).total}}``, each model at ``input_size`` or its paper resolution."""
    out: dict[str, dict[str, dict]] = {}
    for name in models or list_models():
        size = input_size or DEFAULT_RES[name]
        out[name] = {op: profile(create_model(name, num_classes, op=op, input_size=size), size, bits=bits,
                                 hw=hw).total for op in OPERATORS}
    return out
