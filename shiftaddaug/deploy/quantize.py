"""Fixed-point formats for every tensor, and each node's integer form: the bundle.

A tensor holds signed ``act_bits`` integers ``q`` with a power-of-two scale: ``value = q * 2**-frac``, ``frac`` chosen
on calibration images: of the format that holds the largest magnitude seen and the two finer ones (which clip the
rarest values), the one with the least squared error (``calibration="max"``: the first). Per layer:

- shift: each weight is ``sign * 2**p`` (``p`` in -15..0); the accumulator keeps ``R`` more fractional bits than the
  input, so a term is ``x << (p + R)`` (or ``x >> -(p + R)`` for the smallest weights), added or subtracted by its
  sign. ``R`` is the largest (at most 15) for which the worst-case sum still fits 31 bits.
- add: weights are integers on a grid ``R`` bits finer than the input's, ``round(w * 2**(frac_in + R))``
  (``R = ADD_WEIGHT_GUARD`` at 8 bits, 0 at 16); the accumulator is ``-sum |(x << R) - w|``. The mean shift the
  weights' rounding leaves in each accumulator, measured on the calibration images, is taken back in the BatchNorm
  fold's constant (bias correction).
- mult (the stem and classifier by default): weights are ``weight_bits``-bit integers with a power-of-two scale
  per output channel; these layers multiply, and the report lists how many times.

A tensor whose every reader can take it gets a format per channel instead (the largest magnitude of each channel
fits), at no cost per MAC: a shift conv folds each input channel's power of two into its weights' shift amounts, a
depthwise adder puts each channel's accumulator on that channel's grid (the per-channel requantisation absorbs it),
residual adds and pools align each channel with its own shift. Pointwise adders, multiplicative layers, h-swish,
gates, resizes and the output keep one format per tensor.

With ``pixels`` (the dataset's normalisation), the input is the image's own 8-bit pixels less 128, exact: the
stem, which multiplies anyway, takes the normalisation into its weights and bias, and pads with the pixel that
normalises to 0 (rounded to an integer: the one inexact step, at the border).

BatchNorm (or a conv bias) folds into a per-channel ``a * acc + c = a * (acc + m) + c'``: ``m``, on the
accumulator's grid, takes most of ``c`` exactly (it centres the accumulator, whose mean BatchNorm removes), and
``c'`` the rest. The scale ``a * 2**(frac_out - frac_acc)`` becomes a sum of ``terms`` signed powers of two (1: one
shift, 2: two shifts and an add, ...; the scale error of each is in docs/method.md, section 9), so requantisation
is ``sum_i +-round_shift(acc + m, e_i) + c'_q`` with ``c'_q = round(c' * 2**frac_out)``; ReLU and ReLU6 are
clamps, and every output saturates to ``act_bits``.

h-swish ``x * relu6(x + 3) / 6`` and the gate ``x * relu6(z + 3) / 6`` (squeeze-excite, LR-ASPP) multiply (twice
per element: by the clamped term, and by ``1/6`` as the 16-bit fixed-point ``HSIG_MULT``); a bilinear resize
multiplies six times per output element by its ``RESIZE_FRAC``-bit weights; the report lists them all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from ..ops.shift import shift_range
from .graph import Node, run_float, trace

MAX_SHIFT_GUARD = 15  # fractional bits a shift layer's accumulator may add: DeepShift's smallest weight is 2**-15
ADD_WEIGHT_GUARD = 4  # at 8 bits, adder weights sit this many bits finer than their input (one shift per MAC)


HSIG_MULT, HSIG_FRAC = round(2**16 / 6), 16  # the hard sigmoid's 1/6 as a fixed-point multiplier
REQ_GUARD = 8  # a requantisation sums its power-of-two terms this many bits finer than the output, then rounds once
RESIZE_FRAC = 8  # bilinear weights in 1/256: exact for every power-of-two upsampling up to 128x
MAX_SCALE_TERMS = 8
MAX_FRAC = 24  # a tensor that stays (near) zero on the calibration images gets no finer format than this
PIXEL_OFFSET = 128  # an 8-bit pixel minus this fits a signed 8-bit activation


def frac_bits(max_abs: float, bits: int) -> int:
    """Fractional bits of the finest power-of-two format whose ``bits``-bit range holds ``max_abs`` (a tensor
    that is all zero on calibration: the format of magnitude 1)."""
    top = 2 ** (bits - 1) - 1
    return min(MAX_FRAC, math.floor(math.log2(top / (max_abs if max_abs > 0 else 1.0))))


def pow2_terms(a: np.ndarray, terms: int) -> tuple[np.ndarray, np.ndarray]:
    """``a`` (per channel) as ``sum_i sign_i * 2**exp_i`` with ``terms`` terms, greedily: (exps, signs), each
    ``[terms, C]``; a zero term has sign 0."""
    exps, signs, rest = [], [], a.astype(np.float64)
    for _ in range(terms):
        mag = np.abs(rest)
        e = np.where(mag > 0, np.round(np.log2(np.where(mag > 0, mag, 1.0))), 0).astype(np.int64)
        s = np.sign(rest).astype(np.int64)
        exps.append(e)
        signs.append(s)
        rest = rest - s * np.exp2(e)
    return np.stack(exps), np.stack(signs)


def bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, ...]:
    """Per output index of a bilinear resize (``align_corners=False``, as ``F.interpolate``): the two source indices
    and their weights in ``RESIZE_FRAC`` bits, ``(i0, i1, w0, w1)`` with ``w0 + w1 = 2**RESIZE_FRAC``."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.round((src - i0) * 2**RESIZE_FRAC).astype(np.int64)
    return i0, np.minimum(i0 + 1, n_in - 1), 2**RESIZE_FRAC - w1, w1


@dataclass
class QNode:
    """A node's integer form (plain data: ints and numpy integer arrays)."""
    kind: str
    name: str
    inputs: tuple[int, ...]
    output: int
    frac_out: int | tuple[int, ...]  # a tuple: one format per channel
    op: str | None = None
    geometry: dict = field(default_factory=dict)  # conv: kernel, stride, padding, dilation, groups, linear
    weight: np.ndarray | None = None  # mult/add: integers; shift: shift amounts p + R
    sign: np.ndarray | None = None  # shift: -1, 0, +1
    frac_acc: int | tuple[int, ...] = 0
    guard: int = 0  # shift and add: R, the accumulator's (add: and the weights') fractional bits beyond the input's
    offset: np.ndarray | None = None  # int64 [C_out], on the accumulator's grid, added before the scale
    scale_exp: np.ndarray | None = None  # [terms, C_out]
    scale_sign: np.ndarray | None = None
    bias: np.ndarray | None = None  # int64 [C_out], at frac_out
    clamp: tuple = (0, 0)  # output range at frac_out (activation and saturation); hi per channel with frac_out
    # add: each input's shift to frac_out; pool: (shift to frac_out, pixels); hswish, gate: (shift to frac_out,
    # 3 and 6 on the grid of the hard sigmoid's input); resize: (shift to frac_out,)
    align: tuple = ()  # an entry per channel (a tuple) where formats are per channel
    shape: tuple[int, int, int] = (0, 0, 0)  # the output's (C, H, W)


@dataclass
class Bundle:
    act_bits: int
    frac_in: int
    nodes: list[QNode]
    num_classes: int
    shape_in: tuple[int, int, int]  # (C, H, W)
    pixels: tuple | None = None  # (mean, std) per channel: the input is 8-bit pixels - PIXEL_OFFSET, not frac_in

    @property
    def shape_out(self) -> tuple[int, int, int]:
        """(classes, 1, 1) for a classifier, (classes, H, W) for a segmentation network."""
        return self.nodes[-1].shape


def _plain(v):
    """An int, or a tuple of ints for a value per channel (JSON-ready)."""
    return int(v) if np.ndim(v) == 0 else tuple(int(e) for e in np.asarray(v).reshape(-1))


def _clamp(act: str | None, frac, bits: int) -> tuple:
    """(lo, hi) of an output at ``frac`` (one per tensor, or per channel: then hi per channel)."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if act == "relu":
        lo = 0
    elif act == "relu6":
        lo, hi = 0, np.minimum(hi, np.round(6 * 2.0 ** np.asarray(frac, dtype=np.float64)))
    return lo, _plain(hi)


def _geometry(layer: nn.Module) -> dict:
    if isinstance(layer, nn.Linear):
        return {"linear": True, "kernel": 1, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    return {"linear": False, "kernel": layer.kernel_size[0], "stride": layer.stride[0], "padding": layer.padding[0],
            "dilation": layer.dilation[0], "groups": layer.groups}


def _input_channel(layer: nn.Module, groups: int) -> np.ndarray:
    """The input channel each weight reads, shaped like the weight's first two axes ``[O, C_in / groups]``."""
    cout, cin_g = layer.weight.shape[:2]
    return (np.arange(cout) // (cout // groups))[:, None] * cin_g + np.arange(cin_g)[None, :]


def _on_grid(t: torch.Tensor, frac, bits: int) -> torch.Tensor:
    """``t`` rounded onto the ``bits``-bit format ``frac`` (0-d, or one per channel: axis 1) and saturated, as a
    float."""
    s = torch.tensor(2.0 ** np.asarray(frac, dtype=np.float64), dtype=t.dtype)
    s = s.view(1, -1, *[1] * (t.dim() - 2)) if s.dim() else s
    return (t * s).round().clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) / s


def _rounding_bias(layer: nn.Module, x: torch.Tensor, w_grid: np.ndarray, frac_w, frac_x, bits: int) -> np.ndarray:
    """Per output channel, the mean shift of an adder's accumulator from its weights' rounding onto the input's
    grid (``w_grid`` at ``frac_w``, per output channel for a depthwise adder), on the calibration input ``x`` put on
    its grid (``frac_x``): ``-sum |x - w|`` is nearly linear in ``w`` where ``x`` rarely crosses it, so most of the
    error is this mean."""
    x = x.double()
    xq = _on_grid(x.flatten(1) if isinstance(layer, nn.Linear) else x, frac_x, bits)
    fw = torch.tensor(np.asarray(frac_w, dtype=np.float64))
    wq = torch.from_numpy(w_grid).double() / 2.0 ** (fw.view(-1, *[1] * (layer.weight.dim() - 1)) if fw.dim() else fw)
    exact = {k: v.detach().double() for k, v in layer.named_parameters()}
    with torch.no_grad():
        err = torch.func.functional_call(layer, {**exact, "weight": wq}, (xq,)) - \
            torch.func.functional_call(layer, exact, (xq,))
    return err.mean([d for d in range(err.dim()) if d != 1]).numpy()


def _conv(node: Node, x_calib: torch.Tensor, frac_in, frac_out, bits: int, weight_bits: int, terms: int,
          pixels=None) -> QNode:
    layer, op = node.layer, node.op
    g = _geometry(layer)
    w_float = layer.weight.detach().double()
    c_fold = 0.0
    if pixels is not None:  # x = q * s + o per input channel, q = pixel - PIXEL_OFFSET: fold s and o into the layer
        mean, std = (torch.tensor(v, dtype=torch.float64) for v in pixels)
        s, o = 1 / (255 * std), (PIXEL_OFFSET / 255 - mean) / std
        c_fold = (w_float * o.view(1, -1, 1, 1)).sum((1, 2, 3)).numpy()
        w_float = w_float * s.view(1, -1, 1, 1)
        g["pad_value"] = _plain(np.round((-o / s).numpy()))  # the pixel that normalises to 0, less the offset
    per_channel = np.ndim(frac_in) > 0
    if per_channel and not _absorbs_channel_formats(layer, op):
        raise ValueError(f"deploy: {node.name} ({op}) cannot read a format per channel")
    fin = np.asarray(frac_in, dtype=np.int64)
    r = 0
    if op == "shift":
        exp, sign = layer.shift_params()
        fan_in = exp[0].numel()
        r = min(MAX_SHIFT_GUARD, 31 - (bits - 1) - math.ceil(math.log2(fan_in)) - 1)
        # the accumulator sits r bits below the coarsest input channel; a finer channel shifts d bits less
        d = (fin - fin.min())[_input_channel(layer, g["groups"])][..., None, None] if per_channel else 0
        weight, wsign, frac_acc = (exp + r).numpy() - d, sign.numpy().astype(np.int8), int(fin.min()) + r
        shift_range(layer.weight_bits)
    elif op == "add":
        f = fin[_input_channel(layer, g["groups"])[:, 0]] if per_channel else fin  # depthwise: its channel's grid
        r = ADD_WEIGHT_GUARD if bits == 8 else 0  # the weights' grid r bits finer than the input's: |(x << r) - w|
        fw = f + r
        w = layer.weight.detach().double().numpy() * 2.0 ** (fw.reshape(-1, 1, 1, 1) if per_channel else fw)
        weight, wsign, frac_acc = np.clip(np.round(w), -(2**30), 2**30).astype(np.int64), None, fw
        bias_shift = _rounding_bias(layer, x_calib, weight, fw, fin, bits)
    elif op == "mult":  # a weight format per output channel: each folds into its channel's requantisation scale
        fw = np.array([frac_bits(m, weight_bits) for m in w_float.abs().flatten(1).amax(1).tolist()], dtype=np.int64)
        w = w_float * torch.from_numpy(2.0**fw).view(-1, *[1] * (w_float.dim() - 1))
        weight, wsign, frac_acc = w.round().long().numpy(), None, int(frac_in) + fw
    else:
        raise ValueError(f"deploy: {node.name} runs operator {op!r}, which has no integer form here")
    # BatchNorm or bias: y = a * acc_value + c, per output channel
    cout = weight.shape[0]
    a, c = np.ones(cout), np.zeros(cout) + c_fold
    if op == "add":  # the accumulator reads bias_shift more than with exact weights: taken back in c below
        c = c - bias_shift
    if getattr(layer, "bias", None) is not None:
        c = c + layer.bias.detach().double().numpy()
    if node.bn is not None:
        bn = node.bn
        inv = (bn.weight.detach().double() / (bn.running_var.double() + bn.eps).sqrt()).numpy()
        c = inv * (c - bn.running_mean.double().numpy()) + bn.bias.detach().double().numpy()
        a = a * inv
    # most of c moves onto the accumulator's grid, exactly, as an offset added before the scale: BatchNorm's mean
    # cancels there, not after an inexact scale (an adder's -sum |x - w| is far from zero, its spread small)
    facc, fout = np.asarray(frac_acc, dtype=np.float64), np.asarray(frac_out, dtype=np.float64)
    offset = np.clip(np.round(np.divide(c, a, out=np.zeros(cout), where=a != 0) * 2.0**facc),
                     -(2**31 - 1), 2**31 - 1)
    c = c - a * offset * 2.0**-facc
    exps, signs = pow2_terms(a * 2.0 ** (fout - facc), terms)
    # saturated to 32 bits: a larger bias only pushes the output into its clamp
    bias = np.clip(np.round(c * 2.0**fout), -(2**31 - 1), 2**31 - 1).astype(np.int64)
    return QNode("conv", node.name, node.inputs, node.output, _plain(frac_out), op, g, weight, wsign,
                 _plain(frac_acc), r, offset.astype(np.int64), exps, signs, bias, _clamp(node.act, frac_out, bits))


def _absorbs_channel_formats(layer: nn.Module, op: str) -> bool:
    """Whether a conv takes an input format per channel at no cost per MAC: a shift conv, a depthwise adder."""
    return not isinstance(layer, nn.Linear) and (op == "shift" or (op == "add" and layer.weight.shape[1] == 1))


def _reads_per_channel(node: Node, t: int, tensors: list[torch.Tensor]) -> bool:
    """Whether ``node`` can read tensor ``t`` in a format per channel at no cost per MAC."""
    if node.kind == "pool":
        return True
    if node.kind == "add":  # not the broadcast sum of a per-channel value (its kernel aligns one shift per input)
        return all(tensors[i].shape == tensors[t].shape for i in node.inputs)
    return node.kind == "conv" and _absorbs_channel_formats(node.layer, node.op)


def least_error(t: torch.Tensor, frac: np.ndarray, bits: int) -> np.ndarray:
    """Of the format that holds ``t``'s largest value (``frac``: 0-d, or one per channel of ``t``) and the two finer
    ones, which clip its rarest largest values, the one with the least squared rounding and clipping error on ``t``."""
    dims = ((0, 2, 3) if t.dim() == 4 else (0,)) if frac.ndim else tuple(range(t.dim()))
    errs = [(_on_grid(t, frac + k, bits) - t).pow(2).mean(dims) for k in range(3)]
    return np.minimum(frac + torch.stack(errs).argmin(0).numpy(), MAX_FRAC)


def _formats(nodes: list[Node], tensors: list[torch.Tensor], bits: int, per_channel: bool,
             calibration: str) -> list:
    """Each tensor's fractional bits: an int, or an int64 array per channel where the producer and every reader
    allow it (``per_channel``) and the channels differ; ``calibration``: "max" (the largest value fits) or "mse"
    (``least_error``)."""
    def choose(t: torch.Tensor, frac):
        frac = np.asarray(frac, dtype=np.int64)
        return least_error(t, frac, bits) if calibration == "mse" else frac

    fracs: list = [int(choose(t, frac_bits(t.abs().max().item(), bits))) for t in tensors]
    if not per_channel:
        return fracs
    readers: dict[int, list[Node]] = {}
    for n in nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n)
    for n in nodes[:-1]:  # the output keeps one format: whoever reads the logits reads one scale
        t = n.output
        if tensors[t].dim() != 4 or n.kind not in ("conv", "add") or not readers.get(t) or \
                not all(_reads_per_channel(r, t, tensors) for r in readers[t]) or \
                (n.kind == "add" and not _reads_per_channel(n, n.inputs[0], tensors)):
            continue
        f = choose(tensors[t], [frac_bits(m, bits) for m in tensors[t].abs().amax((0, 2, 3)).tolist()])
        if f.min() != f.max():
            fracs[t] = f
    return fracs


@torch.no_grad()
def quantize(model: nn.Module, calib: torch.Tensor, act_bits: int = 8, weight_bits: int = 8,
             scale_terms: int = 4, per_channel: bool = True, pixels: tuple | None = None,
             calibration: str = "mse") -> Bundle:
    """The integer bundle of a plain model (classification, or segmentation with its head), formats calibrated on
    the images ``calib`` (normalised, as the model sees them). ``weight_bits``: the multiplicative layers' weights;
    ``scale_terms``: powers of two per requantisation scale; ``per_channel``: formats per channel where the
    readers allow them; ``pixels``: the data's normalisation ``(mean, std)`` per channel, for an input of exact
    8-bit pixels where a multiplicative stem alone reads it (module docstring); ``calibration``: each format from
    the largest value seen ("max") or the least squared error ("mse", which may clip rare outliers)."""
    if not 2 <= weight_bits <= 16:
        raise ValueError(f"weight_bits must be 2-16, got {weight_bits}")
    if act_bits not in (8, 16):
        raise ValueError(f"act_bits must be 8 or 16, got {act_bits}")
    if calibration not in ("mse", "max"):
        raise ValueError(f"calibration must be mse or max, got {calibration!r}")
    if not 1 <= scale_terms <= MAX_SCALE_TERMS:
        raise ValueError(f"scale_terms must be 1-{MAX_SCALE_TERMS}, got {scale_terms}")
    model = model.eval()
    nodes = trace(model)
    tensors = run_float(nodes, calib)
    fracs = _formats(nodes, tensors, act_bits, per_channel, calibration)
    readers = [n for n in nodes if 0 in n.inputs]
    if pixels is not None and not (len(readers) == 1 and readers[0].kind == "conv" and readers[0].op == "mult"
                                   and readers[0].layer.groups == 1 and isinstance(readers[0].layer, nn.Conv2d)):
        pixels = None  # only a multiplicative stem can take the normalisation
    if pixels is not None:
        pixels = tuple(tuple(float(v) for v in p) for p in pixels)
        fracs[0] = 0
    out = []
    for node in nodes:
        fo = fracs[node.output]
        if node.kind == "conv":
            out.append(_conv(node, tensors[node.inputs[0]], fracs[node.inputs[0]], fo, act_bits, weight_bits,
                             scale_terms, pixels if node.inputs[0] == 0 else None))
        elif node.kind == "add":
            out.append(QNode("add", node.name, node.inputs, node.output, _plain(fo),
                             clamp=_clamp(node.act, fo, act_bits), align=tuple(_plain(fo - fracs[i])
                                                                               for i in node.inputs)))
        elif node.kind in ("hswish", "gate"):  # x * clamp(z + 3, 0, 6) * HSIG_MULT, z = x for h-swish
            fx, fz = fracs[node.inputs[0]], fracs[node.inputs[-1]]
            out.append(QNode(node.kind, node.name, node.inputs, node.output, fo, clamp=_clamp(None, fo, act_bits),
                             align=(fo - fx - fz - HSIG_FRAC, round(3 * 2.0**fz), round(6 * 2.0**fz))))
        elif node.kind == "resize":  # sum of four weighted pixels, weights of RESIZE_FRAC bits on each axis
            out.append(QNode("resize", node.name, node.inputs, node.output, fo, clamp=_clamp(None, fo, act_bits),
                             align=(fo - fracs[node.inputs[0]] - 2 * RESIZE_FRAC,)))
        else:  # pool: the sum of the pixels, then / pixels (a shift when a power of two)
            h, w = tensors[node.inputs[0]].shape[-2:]
            out.append(QNode("pool", node.name, node.inputs, node.output, fo, clamp=_clamp(None, fo, act_bits),
                             align=(_plain(fo - fracs[node.inputs[0]]), h * w)))
    for q in out:
        t = tensors[q.output]
        q.shape = (t.shape[1], *(t.shape[2:] if t.dim() == 4 else (1, 1)))
    return Bundle(act_bits, fracs[0], out, out[-1].shape[0], tuple(calib.shape[1:]), pixels)
