"""The reference engine: a bundle run in NumPy integers, every arithmetic operation counted per node.

Tensors are ``Audited`` arrays: each NumPy ufunc applied to one is counted by kind (add, sub, shift, abs, compare,
max/min, mult) and element, and the matrix products, which are no ufuncs, are refused outright outside a
multiplicative layer. A test runs whole models through it and requires zero multiplies in every shift and adder node.
Arithmetic is exact in int64 (the C code's int32 accumulators are sized in ``quantize``).
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import numpy as np

from .quantize import HSIG_MULT, PIXEL_OFFSET, REQ_GUARD, Bundle, QNode, bilinear_taps

KINDS = {"add": "add", "subtract": "sub", "negative": "sub", "left_shift": "shift", "right_shift": "shift",
         "absolute": "abs", "greater": "compare", "greater_equal": "compare", "less": "compare",
         "less_equal": "compare", "equal": "compare", "not_equal": "compare", "maximum": "max", "minimum": "min",
         "multiply": "mult", "matmul": "mult", "bitwise_and": "logic", "bitwise_or": "logic"}
_REFUSED = {np.dot, np.einsum, np.tensordot, np.inner, np.outer, np.vdot, np.kron, np.prod, np.cumprod, np.convolve}


class Audited(np.ndarray):
    """An integer array whose arithmetic is counted into ``Audited.counter`` (per kind, elements)."""

    counter: Counter = Counter()
    allow_mult = False

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        kind = KINDS.get(ufunc.__name__)
        if kind is None:
            raise TypeError(f"the reference engine does not use {ufunc.__name__}")
        if kind == "mult" and not Audited.allow_mult:
            raise AssertionError(f"{ufunc.__name__} in a multiplication-free layer")
        args = [np.asarray(x) if isinstance(x, Audited) else x for x in inputs]
        result = getattr(ufunc, method)(*args, **kwargs)
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        n = max(a.size for a in arrays) if method == "reduce" else np.size(result)
        if ufunc is np.matmul:  # a product per term, and the sum of the terms
            k = arrays[0].shape[-1]
            n, Audited.counter["add"] = n * k, Audited.counter["add"] + n * (k - 1)
        Audited.counter[kind] += int(n)
        return result.view(Audited) if isinstance(result, np.ndarray) else result

    def __array_function__(self, func, types, args, kwargs):
        if func in _REFUSED and not Audited.allow_mult:
            raise AssertionError(f"np.{func.__name__} in a multiplication-free layer")
        return super().__array_function__(func, types, args, kwargs)


@contextmanager
def multiplying(allowed: bool = True):
    """Within: multiplies are allowed (a multiplicative node), and counted."""
    Audited.allow_mult = allowed
    try:
        yield
    finally:
        Audited.allow_mult = False


def audited(x: np.ndarray) -> Audited:
    return np.asarray(x, dtype=np.int64).view(Audited)


def per_channel(v):
    """A bundle value as an operand: an int as it is, a value per channel shaped ``[1, C, 1, 1]``."""
    return np.asarray(v, dtype=np.int64).reshape(1, -1, 1, 1) if np.ndim(v) else v


def clamp(y: Audited, lohi: tuple) -> Audited:
    return np.minimum(np.maximum(y, per_channel(lohi[0])), per_channel(lohi[1]))


def round_shift(x, e: int | np.ndarray):
    """``x * 2**e`` rounded half up: a left shift for ``e >= 0``, else ``(x + 2**(-e-1)) >> -e``."""
    e = np.asarray(e, dtype=np.int64)  # constants of the bundle: computed here, not counted
    left, right = np.maximum(e, 0), np.maximum(-e, 0)
    half = (np.ones_like(right) << right) >> 1
    y = x if not right.any() else (x + half) >> right
    return y if not left.any() else y << left


def round_even(x, e: int | np.ndarray):
    """``x * 2**e`` rounded half to even: each output's one rounding. Half up would bias it: a sum of two tensors one
    bit finer than the output is a tie half the time, and would gain a quarter of a step on average at every
    residual add. The parity bit is ``(x >> r) - ((x >> (r + 1)) << 1)``: shifts and a subtraction."""
    e = np.asarray(e, dtype=np.int64)  # constants of the bundle: computed here, not counted
    left, right = np.maximum(e, 0), np.maximum(-e, 0)
    if right.any():
        rounding = ((np.ones_like(right) << right) >> 1) - (right > 0)  # half a step less one; 0 where no shift
        parity = (x >> right) - ((x >> (right + (right > 0))) << (right > 0).astype(np.int64))
        x = (x + rounding + parity) >> right
    return x if not left.any() else x << left


def _patches(x: Audited, g: dict) -> tuple[Audited, int, int]:
    """Receptive fields ``[N, OH*OW, C*k*k]`` (channel-major, like ``weight.reshape(O, -1)``), zero-padded."""
    n, c, h, w = x.shape
    k, s, p, d = g["kernel"], g["stride"], g["padding"], g["dilation"]
    pad = np.asarray(g.get("pad_value", 0)).reshape(1, -1, 1, 1)  # an exact-pixel input pads with its zero
    xp = np.pad(np.asarray(x), ((0, 0), (0, 0), (p, p), (p, p))) if "pad_value" not in g else \
        np.pad(np.asarray(x) - pad, ((0, 0), (0, 0), (p, p), (p, p))) + pad
    oh, ow = (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1
    taps = [xp[:, :, i * d: i * d + s * (oh - 1) + 1: s, j * d: j * d + s * (ow - 1) + 1: s]
            for i in range(k) for j in range(k)]
    cols = np.stack(taps, 2).reshape(n, c * k * k, oh * ow).transpose(0, 2, 1)
    return cols.view(Audited), oh, ow


def _accumulate(q: QNode, x: Audited) -> Audited:
    """The accumulator ``[N, O, L]`` of a conv or linear node, per group."""
    g = q.geometry
    if g["linear"]:
        x = x.reshape(x.shape[0], -1, 1, 1)
    groups, o = g["groups"], q.weight.shape[0]
    cin = x.shape[1] // groups
    outs = []
    for gi in range(groups):
        cols, oh, ow = _patches(x[:, gi * cin:(gi + 1) * cin], g)
        w = q.weight[gi * (o // groups):(gi + 1) * (o // groups)].reshape(o // groups, -1)
        if q.op == "mult":
            outs.append(np.matmul(cols, audited(w).T).transpose(0, 2, 1))
            continue
        acc = []
        for oi in range(len(w)):
            if q.op == "add":
                xs = cols << q.guard if q.guard else cols  # a shift per MAC, as the C (compiled away at 0)
                acc.append(-np.abs(xs - audited(w[oi])).sum(-1))
            else:  # shift: +-(x << (p + R)), or >> for the smallest weights
                sgn = q.sign[gi * (o // groups) + oi].reshape(-1)
                terms = round_shift(cols, w[oi])
                acc.append(terms[..., sgn > 0].sum(-1) - terms[..., sgn < 0].sum(-1))
        outs.append(np.stack(acc, 1))
    return np.concatenate(outs, 1).reshape(x.shape[0], o, oh, ow).view(Audited)


def _requantise(q: QNode, acc: Audited) -> Audited:
    acc = acc + audited(q.offset).reshape(1, -1, 1, 1)
    y = audited(np.zeros(acc.shape, dtype=np.int64))
    for e, s in zip(q.scale_exp, q.scale_sign):  # the terms on a grid REQ_GUARD bits finer: one rounding, below
        t = round_shift(acc, e.reshape(1, -1, 1, 1) + REQ_GUARD)
        y = y + np.where(s.reshape(1, -1, 1, 1) > 0, t, 0).view(Audited) \
            - np.where(s.reshape(1, -1, 1, 1) < 0, t, 0).view(Audited)
    y = round_even(y + (audited(q.bias).reshape(1, -1, 1, 1) << REQ_GUARD), -REQ_GUARD)
    return clamp(y, q.clamp)


def add_aligned(a: Audited, b: Audited, ea, eb) -> Audited:
    """``a * 2**ea + b * 2**eb`` rounded once: summed exactly on the finer of the two grids, then shifted (``ea``,
    ``eb``: ints, or per channel)."""
    ea, eb = per_channel(ea), per_channel(eb)
    m = np.minimum(ea, eb)  # constants of the bundle: not counted
    return round_even(round_shift(a, ea - m) + round_shift(b, eb - m), m)


def run_node(q: QNode, xs: list[Audited]) -> Audited:
    if q.kind == "conv":
        with multiplying(q.op == "mult"):
            return _requantise(q, _accumulate(q, xs[0]))
    if q.kind == "add":
        return clamp(add_aligned(xs[0], xs[1], q.align[0], q.align[1]), q.clamp)
    if q.kind in ("hswish", "gate"):  # x * clamp(z + 3, 0, 6) / 6: multiplies, which the report lists
        e, three, six = q.align
        x, z = xs[0], xs[-1]
        with multiplying():
            y = round_even(x * np.minimum(np.maximum(z + three, 0), six) * HSIG_MULT, e)
        return np.minimum(np.maximum(y, q.clamp[0]), q.clamp[1])
    if q.kind == "resize":  # the four neighbours, weighted on each axis: six multiplies per output element
        (h, w), (oh, ow) = xs[0].shape[-2:], q.shape[1:]
        y0, y1, wy0, wy1 = (v.reshape(-1, 1) for v in bilinear_taps(h, oh))
        x0, x1, wx0, wx1 = bilinear_taps(w, ow)
        x = xs[0]
        with multiplying():
            top = x[:, :, y0, x0] * wx0 + x[:, :, y0, x1] * wx1
            bottom = x[:, :, y1, x0] * wx0 + x[:, :, y1, x1] * wx1
            y = round_even(top * wy0 + bottom * wy1, q.align[0])
        return np.minimum(np.maximum(y, q.clamp[0]), q.clamp[1])
    shift, pixels = q.align  # pool
    shift = per_channel(shift)
    s = xs[0].sum((2, 3), keepdims=True)
    k = pixels.bit_length() - 1
    if pixels == 1 << k:
        y = round_even(s, shift - k)
    else:  # 1 / pixels as a 16-bit fixed-point multiplier: the one multiply per channel of this node
        with multiplying():
            y = round_even(s * round(2**16 / pixels), shift - 16)
    return np.minimum(np.maximum(y, q.clamp[0]), q.clamp[1])


def input_integers(bundle: Bundle, images: np.ndarray) -> np.ndarray:
    """Float ``images`` (normalised, as the model sees them) on the bundle's input grid, int64: their 8-bit pixels
    less ``PIXEL_OFFSET`` where the bundle takes pixels."""
    x = np.asarray(images, dtype=np.float64)
    if bundle.pixels is not None:
        mean, std = (np.asarray(v).reshape(1, -1, 1, 1) for v in bundle.pixels)
        x = np.round((x * std + mean) * 255) - PIXEL_OFFSET
    x = np.round(x * 2.0**bundle.frac_in)
    return np.clip(x, -(2 ** (bundle.act_bits - 1)), 2 ** (bundle.act_bits - 1) - 1).astype(np.int64)


def run(bundle: Bundle, images: np.ndarray, counts: dict | None = None) -> np.ndarray:
    """Integer logits ``[N, classes]`` (a segmentation network: ``[N, classes, H, W]``) of float ``images``
    (normalised, as the model sees them); ``counts``, if given, receives each node's operation counts (per
    image)."""
    x = input_integers(bundle, images)
    tensors = {0: audited(x)}
    for q in bundle.nodes:
        Audited.counter = Counter()
        tensors[q.output] = run_node(q, [tensors[i] for i in q.inputs])
        if counts is not None:
            counts[q.name] = {k: v // len(x) for k, v in Audited.counter.items()}
    out = np.asarray(tensors[bundle.nodes[-1].output])
    return out.reshape(len(x), -1) if bundle.shape_out[1:] == (1, 1) else out
