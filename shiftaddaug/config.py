"""Training configuration: one typed model with the NetAug recipe as defaults, loaded from YAML + key=value.

Every key is type- and range-checked when the config loads (pydantic, strict types: ``epochs=true`` is no
integer); a bad value stops with one line naming the key, the value and what is expected. Names of models,
datasets and operators are checked by their registries when the run builds them, before anything is written.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UserError

Pos = Annotated[int, Field(ge=1)]
NonNeg = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, protected_namespaces=())

    name: str = ""  # run name; empty: derived from model, op, dataset and augmentation (run_name below)
    out_dir: str = "runs"
    overwrite: bool = False  # start afresh even if runs/<name> already holds a checkpoint
    # model
    task: Literal["cls", "seg"] = "cls"  # seg: semantic segmentation (a segmentation dataset, a head on the stages)
    seg_head: Literal["lraspp", "aspp"] = "lraspp"  # LR-ASPP (MobileNetV3) or DeepLabV3's ASPP, depthwise-separable
    output_stride: Literal[8, 16, 32] | None = None  # seg: strides beyond it become dilation; None: the backbone's
    model: str = "mobilenetv2_tiny"  # a zoo model, or "custom" with arch
    arch: str | None = None  # an architecture JSON file (its blocks' kernels, expand ratios, operators, resolution)
    op: str = "mult"  # mult | shift | add (an operator of the registry), every block's
    mf_stem_head: bool = False
    weight_bits: Annotated[int, Field(ge=2, le=16)] | None = None  # shift layers; None: the operator's default
    shift_mode: Literal["q", "ps"] = "q"  # DeepShift-Q (float master weight) or -PS (learned shift and sign)
    eta: NonNeg | None = None  # adder layers' adaptive gradient scaling; None: the operator's default; 0: off
    dropout: Fraction = 0.0  # before the classifier
    # ShiftAddAug (aug_op=none: direct training of the plain model)
    aug_op: Literal["none", "mf", "hybrid", "mult"] = "none"
    remap: Literal["auto", "none", "laplace", "bins", "fc"] = "auto"  # auto: each operator's default remap
    remap_lr_scale: NonNeg = 1.0  # lr of remap parameters relative to lr (their gradients are per-weight means)
    remap_kl: NonNeg = 0.0  # weight of ShiftAddNAS's KL term on adder layers (ShiftAddNAS uses 10 with bins)
    width_factors: list[Annotated[float, Field(ge=1)]] | None = None  # default: the model's, scaled by aug_scale
    expand_factors: list[Annotated[float, Field(ge=1)]] | None = None
    aug_scale: Annotated[float, Field(gt=0, le=1)] = 0.25  # unset factors: 1 + aug_scale x (NetAug's - 1)
    alpha: NonNeg = 1.0  # L = L_target + alpha * L_augmented
    width_aug_frac: Annotated[float, Field(ge=0, le=1)] = 0.5  # width-augmented epochs: index < frac * epochs
    aug_rate: Annotated[float, Field(gt=0, le=1)] | None = None  # share of steps augmented (0.25: every 4th);
    # None: the operator's default_aug_rate
    aug_rate_end: Annotated[float, Field(ge=0, le=1)] | None = None  # share at the last step (linear); None: aug_rate
    # two-stage search, stage 2 ('shiftaddaug search train'): the elastic supernet of a stage-1 space
    search_space: str | None = None  # space.json written by 'shiftaddaug search space'
    search_ops: list[str] | None = None  # the blocks' candidate operators; default: the space's
    sandwich: Annotated[int, Field(ge=0)] = 2  # random sub-networks per step, besides the largest and the smallest
    kernel_transform: bool = False  # smaller kernels through Once-for-All's learned transformation matrices
    # data
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    input_size: Annotated[int, Field(ge=8)] | None = None  # default: the dataset's native size or the model's
    train_subset: Pos | None = None
    test_subset: Pos | None = None
    val_images: Annotated[int, Field(ge=0)] = 0  # training images held out and evaluated each epoch instead of test
    workers: Annotated[int, Field(ge=0)] = 2
    skip_corrupt_images: bool = False  # image folders: skip an unreadable image with a warning instead of stopping
    # recipe (NetAug: SGD Nesterov, cosine with linear warm-up, label smoothing, no decay on BN and bias)
    epochs: Pos = 10
    batch_size: Pos = 128
    lr: Annotated[float, Field(gt=0)] = 0.05
    momentum: Fraction = 0.9
    nesterov: bool = True
    weight_decay: NonNeg = 4e-5
    warmup_epochs: NonNeg = 1.0
    label_smoothing: Fraction = 0.1
    grad_clip: Annotated[float, Field(gt=0)] | None = None
    bn_calibration_images: Annotated[int, Field(ge=0)] = 0  # >0: recompute BN statistics before each eval
    divergence_factor: NonNeg = 10.0  # a step loss above this multiple of the first step's is divergence; 0: off
    # run
    device: str = "auto"  # auto (the GPU if there is one) | cpu | cuda | cuda:N
    seed: Annotated[int, Field(ge=0)] = 0
    channels_last: bool = True  # measured 1.2-1.4x faster training on CPU for every operator
    threads: Pos | None = None
    extra: dict = Field(default_factory=dict)  # free-form notes copied into summary.json

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if "/" in v or "\\" in v or v in (".", ".."):
            raise ValueError("name must be a plain folder name inside out_dir (no '/', no '..')")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda|cuda:\d+", v):
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.remap_kl and self.aug_op == "none":
            raise ValueError("remap_kl needs an augmented run (aug_op=mf|hybrid|mult): direct training has no remap")
        if self.shift_mode == "ps" and self.aug_op != "none":
            raise ValueError("shift_mode=ps learns shifts and signs, not a float weight the supernet can share; "
                             "use shift_mode=q with aug_op")
        scheduled = [k for k in ("aug_rate", "aug_rate_end", "aug_scale")
                     if getattr(self, k) != type(self).model_fields[k].default]
        if scheduled and (self.aug_op == "none" or self.search_space is not None):
            raise ValueError(f"{', '.join(scheduled)} set ShiftAddAug's augmented passes: give "
                             "aug_op=mult|hybrid|mf (a search supernet trains all its sub-networks every step)")
        search_only = [k for k in ("search_ops", "sandwich", "kernel_transform")
                       if getattr(self, k) != type(self).model_fields[k].default]
        if self.search_space is None and search_only:
            raise ValueError(f"{', '.join(search_only)} belong to supernet training for the search; give search_space")
        if self.arch is not None or self.search_space is not None:
            given = [k for k, v in (("op", self.op != "mult"), ("mf_stem_head", self.mf_stem_head),
                                    ("input_size", self.input_size is not None),
                                    ("arch", self.arch is not None and self.search_space is not None)) if v]
            if given:
                src = "search_space" if self.search_space else "arch"
                raise ValueError(f"{src} sets the operators and the resolution; drop {', '.join(given)}")
            if "model" not in self.model_fields_set:
                self.model = "custom"
        if self.search_space is not None:
            if "aug_op" not in self.model_fields_set:
                self.aug_op = "hybrid"  # the wide multiplicative model augments the MF sub-networks
            if self.aug_op == "none":
                raise ValueError("search_space trains the supernet with its largest network augmenting the others: "
                                 "aug_op must be hybrid (default), mult or mf")
        if not self.name:  # the one place a run's name is derived
            if self.search_space:
                space = Path(self.search_space)
                model = f"search_{space.parent.name if space.name == 'space.json' else space.stem}"
            else:
                model = f"{Path(self.arch).stem}" if self.arch else f"{self.model}_{self.op}"
            aug = f"_aug-{self.aug_op}-{self.remap}" if self.aug_op != "none" else ""
            self.name = f"{model}_{self.dataset}{aug}"
        return self

    def to_dict(self) -> dict:
        return self.model_dump()

    def op_options(self) -> dict:
        """Layer options for the operators; keys left unset take each operator's own default."""
        opts = {"mode": self.shift_mode}
        if self.weight_bits is not None:
            opts["weight_bits"] = self.weight_bits
        if self.eta is not None:
            opts["eta"] = self.eta or None  # 0 switches adaptive gradient scaling off
        return opts

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's numbers: ``1e-3`` is a float (YAML 1.1, PyYAML's default, reads it as a string)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise UserError(f"override {p!r} is not key=value (example: epochs=5 op=shift)")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = yaml.load(v, Loader=_Loader) if v.strip() else None
        except yaml.YAMLError as e:
            raise UserError(f"override {p!r}: the value is not valid YAML ({str(e).splitlines()[0]}); quote it, "
                            "e.g. name='my run'") from None
    return out


def make_config(values: dict) -> TrainConfig:
    """A checked config from plain values; the first problem becomes a one-line ``UserError``."""
    try:
        return TrainConfig(**values)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise UserError(f"unknown config key {key!r}; valid keys: "
                            f"{', '.join(sorted(TrainConfig.model_fields))}") from None
        msg = err["msg"].removeprefix("Value error, ")
        if not key:  # a check across keys
            raise UserError(msg) from None
        raise UserError(f"config key {key}={err.get('input')!r}: {msg[0].lower()}{msg[1:]}") from None


def load_config(path: str | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Defaults, then the YAML file, then overrides. Unknown keys are an error, never ignored."""
    values: dict = {}
    if path:
        try:
            values = yaml.load(Path(path).read_text(), Loader=_Loader) or {}
        except FileNotFoundError:
            raise UserError(f"config file {path} not found") from None
        except (IsADirectoryError, UnicodeDecodeError):
            raise UserError(f"config file {path} is a folder or not text; give a YAML file") from None
        except yaml.YAMLError as e:
            raise UserError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(values, dict):
            raise UserError(f"config file {path} must hold a mapping of key: value")
    values.update(overrides if isinstance(overrides, dict) else parse_overrides(overrides or []))
    return make_config(values)
