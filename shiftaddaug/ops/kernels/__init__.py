"""Compute backends of the adder operator, one contract: ``l1_forward``, ``l1_grad_x`` and, where a backend has
them, direct depthwise kernels ``dw_forward`` / ``dw_backward`` (``None`` otherwise).

- ``reference``: pure PyTorch, the oracle and the fallback;
- ``cpu``: C++ with OpenMP threads and vectorised inner loops, built on first use by ``torch.utils.cpp_extension``
  (cached under ``~/.cache/torch_extensions``; about a minute the first time);
- ``triton``: Triton kernels, chosen for CUDA tensors.

``SHIFTADDAUG_KERNELS=reference`` forces the reference everywhere. A backend that fails to build or import warns once
and the reference takes over.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from types import ModuleType

import torch

from . import reference

_loaded: dict[str, ModuleType | None] = {}


def _cpu_flags() -> str:
    try:
        return next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        return ""


def _build_cpu() -> ModuleType:
    # importing cpp_extension logs "No CUDA runtime is found" on CPU machines: irrelevant to a CPU-only build
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils.cpp_extension import load

    src = Path(__file__).with_name("adder_cpu.cpp")
    # -march=native code must not be reused on another CPU: the cache name carries the CPU's feature flags
    tag = hashlib.sha1(_cpu_flags().encode()).hexdigest()[:8]
    flags = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-ffast-math"]
    return load(name=f"shiftaddaug_adder_cpu_{tag}", sources=[str(src)], verbose=False, extra_cflags=flags,
                extra_ldflags=["-fopenmp"])


def _build_triton() -> ModuleType:
    from . import triton_adder
    return triton_adder


_BUILDERS = {"cpu": _build_cpu, "triton": _build_triton}


def load(name: str) -> ModuleType | None:
    """The backend module ``name`` (``"reference"``, ``"cpu"``, ``"triton"``), or ``None`` if it cannot be had."""
    if name == "reference":
        return reference
    if name not in _loaded:
        try:
            _loaded[name] = _BUILDERS[name]()
        except Exception as e:  # a missing compiler, ninja or triton: keep training, slower
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            warnings.warn(f"shiftaddaug: the {name} adder kernel is unavailable ({msg}); "
                          "using the PyTorch reference, which is slower", RuntimeWarning, stacklevel=3)
            _loaded[name] = None
    return _loaded[name]


def for_tensor(x) -> ModuleType:
    """The fastest available backend for ``x`` (the compiled kernels take float32; other dtypes use the reference)."""
    choice = os.environ.get("SHIFTADDAUG_KERNELS", "auto")
    if choice not in ("auto", "reference"):
        raise ValueError(f"SHIFTADDAUG_KERNELS={choice!r}: use 'auto' or 'reference'")
    if choice == "reference":
        return reference
    name = {"cpu": "cpu", "cuda": "triton"}.get(x.device.type) if x.dtype == torch.float32 else None
    return (load(name) if name else None) or reference
