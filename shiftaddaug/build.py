"""From a config to what a run computes on: the device, the input size and the model (plain or supernet)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .augment import ElasticNet, build_augmented, min_arch
from .config import TrainConfig
from .data import DATASETS, dataset_info
from .errors import UserError
from .models import DEFAULT_RES, create_model
from .models.spec import load_arch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but PyTorch sees no GPU here; use device=cpu (or auto)")
    return torch.device(name)


def resolve_input_size(cfg: TrainConfig) -> int:
    """The architecture's resolution, else ``input_size``, the dataset's native size or the model's default."""
    if cfg.arch or cfg.search_space:
        try:
            return (load_arch(cfg.arch) if cfg.arch else search_supernet_space(cfg).base)["resolution"]
        except ValueError as e:
            raise UserError(str(e)) from None
    if cfg.model not in DEFAULT_RES:
        raise UserError(f"unknown model {cfg.model!r}; available: {', '.join(sorted(DEFAULT_RES))}")
    return cfg.input_size or dataset_info(cfg.dataset).native_size or DEFAULT_RES[cfg.model]


def search_supernet_space(cfg: TrainConfig):
    """The search space of a ``search_space`` config, with its candidate operators replaced by ``search_ops``."""
    from .nas.space import load_space, with_ops

    space = load_space(cfg.search_space)
    return with_ops(space, cfg.search_ops) if cfg.search_ops else space


def check_task(cfg: TrainConfig) -> None:
    """A segmentation run needs a segmentation dataset, and a classification run a classification one."""
    kind = dataset_info(cfg.dataset).task
    if kind != cfg.task:
        other = [n for n, d in DATASETS.items() if d.task == cfg.task]
        raise UserError(f"dataset {cfg.dataset} is for task={kind}, not task={cfg.task}; set task={kind} or choose "
                        f"a dataset for {cfg.task} ({', '.join(other)})")
    if cfg.task == "seg" and cfg.search_space:
        raise UserError("the architecture search covers classification; train segmentation with model= or arch=")


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int, augmented: bool | None = None) -> nn.Module:
    """The plain model for direct training, the augmented supernet around it, or the elastic supernet of a search
    space (``augmented=False``: the plain model of such a config, i.e. its exported target or smallest network)."""
    check_task(cfg)
    if cfg.search_space:
        try:
            space = search_supernet_space(cfg)
            if augmented is False:
                return create_model("custom", num_classes, in_chans=in_chans, dropout=cfg.dropout,
                                    op_options=cfg.op_options(), arch=min_arch(space))
            return ElasticNet(space, num_classes, in_chans, cfg.dropout, cfg.op_options(), cfg.aug_op, cfg.remap,
                              cfg.kernel_transform, cfg.seed)
        except ValueError as e:
            raise UserError(str(e)) from None
    source = dict(arch=cfg.arch) if cfg.arch else dict(op=cfg.op, input_size=resolve_input_size(cfg),
                                                         mf_stem_head=cfg.mf_stem_head)
    if cfg.output_stride is not None:  # with arch=, or for classification, create_model says why not
        source["output_stride"] = cfg.output_stride
    kw = dict(in_chans=in_chans, dropout=cfg.dropout, op_options=cfg.op_options(), task=cfg.task,
              head=cfg.seg_head, **source)
    try:
        if not (cfg.aug_op != "none" if augmented is None else augmented):
            return create_model(cfg.model, num_classes, **kw)
        return build_augmented(cfg.model, num_classes, aug_op=cfg.aug_op, remap=cfg.remap,
                               width_factors=cfg.width_factors, expand_factors=cfg.expand_factors,
                               aug_scale=cfg.aug_scale, seed=cfg.seed,
                               **kw)
    except ValueError as e:
        raise UserError(str(e)) from None
