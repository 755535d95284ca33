"""The elastic supernet: every architecture of a ``Space`` inside one set of shared weights.

``ElasticNet`` is a ``TinyNet`` built at the space's largest sizes with elastic layers; it only composes them:
``set_active(arch)`` hands each stage its depth and each block its resolved configuration (``"min"``, ``"max"``,
``"random"`` are shortcuts), and ``export(arch)`` builds that architecture with ``create_model`` and fills it with
the baked weights. ShiftAddAug (``build_augmented``) is the supernet whose space widens the target's widths and
expand ratios by NetAug's factors, with the target's kernels, depths and operators fixed; the target is its
smallest architecture, and every other one is computed as ``aug_op`` says (docs/method.md, sections 2 and 5).
"""
from __future__ import annotations

import random

import torch
import torch.nn as nn

from ..models import create_model, get_spec, model_arch
from ..models.net import TinyNet
from ..models.spec import ArchError, check_arch, resolve, strides
from ..ops import get_operator, op_of
from .blocks import ElasticLayers
from .layers import AUG_OPS, ElasticConv2d, ElasticLinear
from .space import Space, max_arch, min_arch, sample_arch

WIDTH_FACTORS = {"mobilenetv2_tiny": (1.0, 1.8, 2.6), "mobilenetv2_w035": (1.0, 1.8, 2.6),
                 "proxylessnas_w035": (1.0, 1.8, 2.6), "mobilenetv3_w035": (1.0, 2.0, 3.0),
                 "mcunet": (1.0, 1.6, 2.2), "resnet20": (1.0, 1.8, 2.6)}  # NetAug's; resnet20: ours, as MBv2
EXPAND_FACTORS = {"resnet20": (1.0,)}  # a basic block's inner width already follows its stage's width
DEFAULT_EXPAND_FACTORS = (1.0, 1.6, 2.2, 2.8)
# ShiftAddAug's default factors are NetAug's shrunk towards 1: on 10k Fashion-MNIST images a quarter of their excess
# (width 1 / 1.2 / 1.4) was as accurate per epoch as all of it, at a fraction of the step's cost (BENCHMARKS §3, §10)
DEFAULT_AUG_SCALE = 0.25


def _fixed_head(arch: dict):
    """What of a segmentation head no sub-network may change: whether there is one, its kind, its output stride."""
    seg = arch.get("seg")
    return None if seg is None else (seg["head"], seg.get("output_stride"))


class ElasticNet(TinyNet):
    def __init__(self, space: Space, num_classes: int, in_chans: int = 3, dropout: float = 0.0,
                 op_options: dict | None = None, aug_op: str = "none", remap: str = "auto",
                 kernel_transform: bool = False, seed: int = 0):
        if aug_op not in AUG_OPS:
            raise ValueError(f"unknown aug_op {aug_op!r}; choose one of {', '.join(AUG_OPS)}")
        family = space.base["model"]
        spec = get_spec(family)
        check_arch(space.base, spec)
        top = max_arch(space)
        check_arch(top, spec)
        cfg = resolve(top, spec)
        super().__init__(cfg, num_classes, in_chans, dropout, op_options,
                         layers=ElasticLayers(space, op_options, aug_op, remap, kernel_transform))
        self.spec, self.space, self.aug_op, self.in_chans = spec, space, aug_op, in_chans
        self.max_arch, self.max_cfg = top, cfg
        self.build_args = dict(name=family, num_classes=num_classes, in_chans=in_chans, dropout=dropout,
                               op_options=op_options)
        self.rng = random.Random(seed)
        self.target = min_arch(space)  # ShiftAddAug's target (its base); the smallest sub-network of a search space
        self.target_cfg = self.check(self.target)  # resolved once: the training step activates it twice per step
        self.set_active("min")
        for c in self.elastic_convs():  # the target's slice: hybrid augmentation's MF block, the KL term's weights
            c.core = (c.active_in, c.active_out, c.active_kernel, c.active_op)

    def elastic_convs(self) -> list[ElasticConv2d]:
        return [m for m in self.modules() if isinstance(m, ElasticConv2d)]

    def check(self, arch: dict):
        """The resolved configuration of ``arch``; a one-line ``ArchError`` naming the field it cannot run."""
        base, spec = self.space.base, self.spec
        if isinstance(arch, dict) and arch.get("model", base["model"]) != base["model"]:
            raise ArchError(f"arch: model={arch.get('model')!r}, but this supernet is a {base['model']}")
        check_arch(arch, spec)
        if strides(spec, arch["resolution"]) != strides(spec, base["resolution"]):
            raise ArchError(f"arch: resolution={arch['resolution']} changes the model's strides; this supernet was "
                            f"built for {base['resolution']} px")
        if _fixed_head(arch) != _fixed_head(base):
            raise ArchError(f"arch: seg={arch.get('seg')!r}: this supernet's head is {base.get('seg')!r}")
        for part in ("stem", "head", "classifier") + (("seg",) if "seg" in base else ()):
            if arch[part]["op"] != base[part]["op"]:
                raise ArchError(f"arch: {part}.op={arch[part]['op']!r}: this supernet's is {base[part]['op']!r}")
        for si, st in enumerate(arch["stages"]):
            n = len(base["stages"][si]["blocks"])
            if len(st["blocks"]) != n:
                raise ArchError(f"arch: stages[{si}] lists {len(st['blocks'])} blocks; this supernet has {n}")
            for bi, b in enumerate(st["blocks"]):
                for key, choices in self.space.block(si, bi).items():
                    if key != "expand" and b[key] not in choices:
                        raise ArchError(f"arch: stages[{si}].blocks[{bi}].{key}={b[key]!r} is not in this "
                                        f"supernet's space {choices}")
        cfg, top = resolve(arch, spec), self.max_cfg
        over = [(f"stem.width={arch['stem']['width']}", cfg.stem, top.stem)]
        for si, (blocks, big) in enumerate(zip(cfg.stages, top.stages)):
            over.append((f"stages[{si}].width={arch['stages'][si]['width']}", blocks[0].out_ch, big[0].out_ch))
            over += [(f"stages[{si}].blocks[{bi}].expand={arch['stages'][si]['blocks'][bi]['expand']}", b.mid or 0,
                      t.mid or 0) for bi, (b, t) in enumerate(zip(blocks, big))]
        over.append((f"head.width={arch['head']['width']}", cfg.final_expand or 0, top.final_expand or 0))
        if cfg.seg is not None:
            over.append((f"seg.width={arch['seg']['width']}", cfg.seg.width, top.seg.width))
        for what, need, have in over:
            if need > have:
                raise ArchError(f"arch: {what} needs {need} channels; this supernet holds {have}")
        return cfg

    def default_aug_rate(self) -> float:
        """ShiftAddAug's share of augmented steps when the config leaves ``aug_rate`` unset: the smallest default of
        the target's multiplication-free operators (each operator's ``default_aug_rate``; 1 without any)."""
        ops = {o for m in self.modules() if isinstance(m, ElasticConv2d) for o in m.ops}
        return min([get_operator(o).default_aug_rate for o in ops if get_operator(o).multiplication_free] or [1.0])

    def set_active(self, arch="min", width: bool = True, augment: bool | None = None) -> None:
        """Activate an architecture (a dict), or ``"min"`` (the smallest: ShiftAddAug's target), ``"max"``,
        ``"random"`` (one drawn from the space; ``width=False``: widths stay the base's). ``augment`` (default: on
        for ``"random"`` and ``"max"`` when the supernet has an ``aug_op``) computes it as ``aug_op`` says."""
        if isinstance(arch, str):
            if arch not in ("min", "random", "max"):
                raise ValueError(f"set_active takes an architecture or 'min', 'random', 'max', not {arch!r}")
            if augment is None:
                augment = arch != "min" and self.aug_op != "none"
            if arch == "random":
                arch = sample_arch(self.rng, self.space, width)
                cfg = self.check(arch)
            else:
                arch, cfg = (self.target, self.target_cfg) if arch == "min" else (self.max_arch, self.max_cfg)
        else:
            cfg = self.check(arch)
        self.net_cfg = cfg
        self.stem.set_active(self.in_chans, cfg.stem, 3, cfg.stem_op)
        for stage, blocks in zip(self.stages, cfg.stages):
            stage.set_active(blocks)
        ch = cfg.stages[-1][-1].out_ch
        if self.final_expand is not None:
            self.final_expand.set_active(ch, cfg.final_expand, 1, cfg.head_op)
            ch = cfg.final_expand
        if self.feature_mix is not None:
            self.feature_mix.set_active(ch, cfg.feature_mix, 1, cfg.head_op)
        if self.seg_head is not None:
            self.seg_head.set_active(cfg.seg, self.num_classes)
        for c in self.elastic_convs():
            c.augmenting = bool(augment)
        self.active_arch = arch

    def get_extra_state(self):
        return {"rng": self.rng.getstate()}  # a resumed run samples the same sub-models as an unbroken one

    def set_extra_state(self, state) -> None:
        self.rng.setstate(state["rng"])

    def remap_kl(self) -> torch.Tensor:
        """ShiftAddNAS's KL regulariser summed over the target's adder layers (for the ``bins`` remap)."""
        terms = [c.remaps[c.core[3]].kl_to_laplace(c.static_weight(*c.core)) for c in self.elastic_convs()
                 if c.core[3] in c.remaps and get_operator(c.core[3]).laplace_prior]
        return torch.stack(terms).sum() if terms else torch.zeros(())

    @torch.no_grad()
    def export(self, arch: dict | None = None) -> nn.Module:
        """The plain model of ``arch`` (default: the target), built by ``create_model`` and filled with the baked
        weights: nothing of the supernet remains; it loads with ``strict=True``."""
        arch = self.target if arch is None else arch
        self.check(arch)
        static = create_model(**self.build_args, arch=arch)
        src, state = dict(self.named_modules()), {}
        for name, m in static.named_modules():
            d, p = src.get(name), (name + "." if name else "")
            if isinstance(d, ElasticConv2d):
                state[p + "weight"] = d.static_weight(m.in_channels, m.out_channels, m.kernel_size[0], op_of(m))
                if m.bias is not None:
                    state[p + "bias"] = d.bias[: m.out_channels]
            elif isinstance(d, ElasticLinear):
                state[p + "weight"] = d.weight[:, : m.in_features]
                if d.bias is not None:
                    state[p + "bias"] = d.bias
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                for k in ("weight", "bias", "running_mean", "running_var"):
                    state[p + k] = getattr(d, k)[:n]
                state[p + "num_batches_tracked"] = d.num_batches_tracked
        static.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
        return static.train(self.training)


def build_augmented(name: str, num_classes: int, op: str | None = "shift", aug_op: str = "mult",
                    remap: str = "auto", width_factors=None, expand_factors=None, aug_scale: float = DEFAULT_AUG_SCALE,
                    seed: int = 0,
                    in_chans: int = 3, input_size: int | None = None, mf_stem_head: bool = False,
                    dropout: float = 0.0, op_options: dict | None = None, arch=None, task: str | None = None,
                    head: str = "lraspp", output_stride: int | None = None) -> ElasticNet:
    """ShiftAddAug's supernet around zoo model ``name`` (or the architecture ``arch``): widths and expand ratios
    up to ``width_factors`` and ``expand_factors``; unset, the model's NetAug factors ``f`` as
    ``1 + aug_scale * (f - 1)`` (``aug_scale=1``: NetAug's own). docs/method.md explains ``aug_op`` and ``remap``
    (``"auto"``: each operator's default remap, from the operator registry). ``task="seg"``: a segmentation network
    with the segmentation ``head`` at ``output_stride``."""
    family, base = model_arch(name, None if arch is not None else op, input_size, mf_stem_head, arch, task, head,
                              output_stride)
    if not 0 < aug_scale <= 1:
        raise ValueError(f"aug_scale must be in (0, 1], got {aug_scale}")
    scaled = lambda fs: tuple(round(1 + aug_scale * (f - 1), 4) for f in fs)  # noqa: E731
    wf = tuple(width_factors or scaled(WIDTH_FACTORS.get(family, WIDTH_FACTORS["mobilenetv2_tiny"])))
    ef = tuple(expand_factors or scaled(EXPAND_FACTORS.get(family, DEFAULT_EXPAND_FACTORS)))
    if min(wf) != 1.0 or min(ef) != 1.0:
        raise ValueError("the smallest width and expand factor must be 1.0: the target is the smallest sub-model")
    return ElasticNet(Space(base, width_scale=wf, expand_scale=ef), num_classes, in_chans, dropout, op_options,
                      aug_op, remap, seed=seed)
