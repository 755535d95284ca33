"""Model zoo: ``create_model(name, ...)`` builds every model, or any architecture of its space, for any operator."""
from __future__ import annotations

from pathlib import Path

from ..ops import get_operator
from . import mobilenet, resnet
from .net import TinyNet
from .seg import SEG_HEADS
from .spec import ArchError, NetSpec, check_arch, default_arch, load_arch, resolve

SPECS: dict[str, NetSpec] = {**mobilenet.SPECS, **resnet.SPECS}
DEFAULT_RES = {n: s.res for n, s in SPECS.items()}
TASKS = ("cls", "seg")


def list_models() -> list[str]:
    return sorted(SPECS)


def get_spec(name: str) -> NetSpec:
    if name not in SPECS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return SPECS[name]


def model_arch(name: str, op: str | None = None, input_size: int | None = None, mf_stem_head: bool = False,
               arch: dict | str | Path | None = None, task: str | None = None,
               head: str = "lraspp", output_stride: int | None = None) -> tuple[str, dict]:
    """The family and architecture that ``create_model`` builds (a zoo model's own, or ``arch``'s; ``task``: from
    ``arch`` when omitted, else ``"cls"``)."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if arch is None:
        if name == "custom":
            raise ValueError("model 'custom' needs arch=PATH (an architecture JSON file)")
        get_operator(op or "mult")  # names the operator itself, not a field of the architecture built from it
        if task == "seg" and head not in SEG_HEADS:
            raise ValueError(f"unknown segmentation head {head!r}; choose one of {', '.join(SEG_HEADS)}")
        if output_stride is not None and task != "seg":
            raise ValueError("output_stride is a segmentation setting: pass task='seg' with it")
        return name, default_arch(name, get_spec(name), op or "mult", mf_stem_head, input_size,
                                  head if task == "seg" else None, output_stride)
    if op is not None or input_size is not None or mf_stem_head or output_stride is not None:
        raise ValueError("an architecture sets operators, resolution and output stride itself: pass arch or "
                         "op/input_size/mf_stem_head/output_stride, not both")
    if not isinstance(arch, dict):
        arch = load_arch(arch)
    family = arch.get("model")
    if name not in ("custom", family):
        raise ArchError(f"arch: model={family!r} does not match model {name!r} (use model 'custom' to take the "
                        "architecture's)")
    check_arch(arch, get_spec(family))
    if task is not None and ("seg" in arch) != (task == "seg"):
        raise ArchError(f"arch: {'a segmentation' if 'seg' in arch else 'a classification'} architecture, but "
                        f"task={task!r}")
    return family, arch


def create_model(name: str, num_classes: int = 1000, op: str | None = None, in_chans: int = 3,
                 input_size: int | None = None, mf_stem_head: bool = False, dropout: float = 0.0,
                 op_options: dict | None = None, arch: dict | str | Path | None = None, task: str | None = None,
                 head: str = "lraspp", output_stride: int | None = None) -> TinyNet:
    """Build a zoo model (``op``: ``"mult"``, ``"shift"``, ``"add"``; the stem and classifier stay multiplicative
    unless ``mf_stem_head=True``; inputs of 64 px or less keep full resolution in the stem and first stage), or
    any architecture of a model's space: ``arch`` is a dict or a JSON file (``name="custom"`` takes its family).
    ``op_options``: layer options (``weight_bits``, ``mode``, ``eta``). ``task="seg"``: a segmentation network with
    the segmentation ``head`` (``"lraspp"``, ``"aspp"``; per-pixel logits at the input's size), ``output_stride``
    8, 16 or 32 through dilation (None: the backbone's own). The model keeps ``arch`` and ``build_args``.
    """
    family, arch = model_arch(name, op, input_size, mf_stem_head, arch, task, head, output_stride)
    model = TinyNet(resolve(arch, SPECS[family]), num_classes, in_chans, dropout, op_options)
    model.arch = arch
    model.build_args = dict(name=family, num_classes=num_classes, in_chans=in_chans, dropout=dropout,
                            op_options=op_options, arch=arch)
    return model


__all__ = ["create_model", "list_models", "get_spec", "model_arch", "DEFAULT_RES", "SPECS", "TinyNet", "ArchError"]
