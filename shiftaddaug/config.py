"""Training configuration: one dataclass with the NetAug recipe as defaults, loaded from YAML + key=value."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UserError


@dataclass
class TrainConfig:
    name: str = ""  # run name; default <model>_<op>_<dataset>
    out_dir: str = "runs"
    overwrite: bool = False  # start afresh even if runs/<name> already holds a checkpoint
    # model
    model: str = "mobilenetv2_tiny"
    op: str | list = "mult"  # mult | shift | add | one name per convertible layer
    mf_stem_head: bool = False
    # ShiftAddAug (aug_op=none: direct training of the plain model)
    aug_op: str = "none"  # none | mf | hybrid | mult
    remap: str = "auto"  # auto (bins for shift layers, none for adders: BENCHMARKS §5m) | none | laplace | bins | fc
    remap_lr_scale: float = 1.0  # lr of remap parameters relative to lr (their gradients are per-weight means)
    remap_kl: float = 0.0  # weight of ShiftAddNAS's KL term on adder layers (ShiftAddNAS uses 10 with bins)
    width_factors: list | None = None  # default per model (METHOD.md §2)
    expand_factors: list | None = None
    alpha: float = 1.0  # L = L_target + alpha * L_augmented
    width_aug_frac: float = 0.5  # width-augmented epochs: those with index < frac * epochs
    # data
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    input_size: int | None = None  # default: the dataset's native size, or the model's paper resolution
    train_subset: int | None = None
    test_subset: int | None = None
    workers: int = 2
    # recipe (NetAug: SGD Nesterov, cosine with linear warm-up, label smoothing, no decay on BN and bias)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_clip: float | None = None
    bn_calibration_images: int = 0  # >0: recompute BN statistics on this many training images before each eval
    # run
    device: str = "auto"  # auto (the GPU if there is one) | cpu | cuda | cuda:N
    seed: int = 0
    channels_last: bool = True  # measured 1.2-1.4x faster training on CPU for every operator
    threads: int | None = None
    extra: dict = field(default_factory=dict)  # free-form notes copied into summary.json

    def __post_init__(self):
        from .data import dataset_info
        from .models import list_models
        from .ops import OPS

        if self.model not in list_models():
            raise UserError(f"unknown model {self.model!r}; available: {', '.join(list_models())}")
        ops = [self.op] if isinstance(self.op, str) else list(self.op)
        if bad := [o for o in ops if o not in OPS]:
            raise UserError(f"unknown op {bad[0]!r}; choose one of {', '.join(OPS)} (or a per-layer list)")
        dataset_info(self.dataset)
        from .augment import AUG_OPS
        from .ops.remap import REMAP_CHOICES

        if self.aug_op not in AUG_OPS:
            raise UserError(f"unknown aug_op {self.aug_op!r}; choose one of {', '.join(AUG_OPS)}")
        if self.remap not in REMAP_CHOICES:
            raise UserError(f"unknown remap {self.remap!r}; choose one of {', '.join(REMAP_CHOICES)}")
        if self.remap_kl and self.aug_op == "none":
            raise UserError("remap_kl needs an augmented run (aug_op=mf|hybrid|mult): direct training has no remap")
        for key in ("epochs", "batch_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise UserError(f"{key} must be a positive integer, got {getattr(self, key)!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise UserError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not self.lr > 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if not self.name:
            op = self.op if isinstance(self.op, str) else "mixed"
            self.name = f"{self.model}_{op}_{self.dataset}" + (f"_aug-{self.aug_op}-{self.remap}"
                                                               if self.aug_op != "none" else "")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise UserError(f"override {p!r} is not key=value (example: epochs=5 op=shift)")
        k, v = p.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v.strip() else None
    return out


def load_config(path: str | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then overrides. Unknown keys are an error, never ignored."""
    values: dict = {}
    if path:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise UserError(f"config file {path} not found") from None
        except yaml.YAMLError as e:
            raise UserError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(values, dict):
            raise UserError(f"config file {path} must hold a mapping of key: value")
    values.update(overrides if isinstance(overrides, dict) else parse_overrides(overrides or []))
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown := sorted(set(values) - known):
        raise UserError(f"unknown config key {unknown[0]!r}; valid keys: {', '.join(sorted(known))}")
    return TrainConfig(**values)
