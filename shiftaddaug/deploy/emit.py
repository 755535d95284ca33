"""C99 for microcontrollers from a bundle: one ``.c``/``.h`` pair, weights as static const arrays, one static arena.

The kernels index by pointer increments only, every product of sizes made here by the generator, so the functions of
the multiplication-free layers (``conv_shift``, ``conv_add`` and their pointwise forms ``pw_shift``, ``pw_add``,
``requant``, ``add_tensors``, ``pool_shift``) hold no multiply: on a core without a multiplier (RV32I) nothing there
calls ``__mulsi3``. ``conv_mult``, ``pw_mult`` and ``pool_mult`` multiply, and run only where the report lists
multiplies. Outputs are bit-identical to the NumPy engine (``engine.run``): the same integer operations with the
same rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quantize import HSIG_MULT, PIXEL_OFFSET, REQ_GUARD, Bundle, QNode, bilinear_taps

_CONV = """
NOINLINE static void conv_OP(const act_t *x, act_t *y, const geo_t *q, const WT *wt, int r_bits, const req_t *r) {
    int o, oy, ox, c, t, og = 0;
    const act_t *xg = x;
    const WT *wo = wt;
    (void)r_bits;
    for (o = 0; o < q->cout; o++, wo += q->wstep) {
        int iy0 = -q->pad, row0 = -q->pad_w;
        if (og == q->cout_g) { og = 0; xg += q->in_group; }
        og++;
        for (oy = 0; oy < q->oh; oy++, iy0 += q->stride, row0 += q->s_w) {
            int ix0 = -q->pad;
            for (ox = 0; ox < q->ow; ox++, ix0 += q->stride) {
                ACC acc = 0;
                const act_t *xc = xg;
                const WT *wp = wo;
                for (c = 0; c < q->cin_g; c++, xc += q->hw) {
                    int32_t pad = q->pad_value ? q->pad_value[c] : 0; /* an exact-pixel input pads with its 0 */
                    for (t = 0; t < q->kk; t++, wp++) { /* taps from tables: no k x k products here */
                        int iy = iy0 + q->tap_dy[t], ix = ix0 + q->tap_dx[t];
                        int32_t xv = pad;
                        if (iy >= 0 && iy < q->h && ix >= 0 && ix < q->w) xv = xc[row0 + ix0 + q->tap_off[t]];
                        BODY
                    }
                }
                *y++ = requant(acc, o, r);
            }
        }
    }
}
"""

_POINTWISE = """
/* a 1x1 convolution with stride 1 and one group (or a linear layer): no padding, no tap tables */
NOINLINE static void pw_OP(const act_t *x, act_t *y, const geo_t *q, const WT *wt, int r_bits, const req_t *r) {
    int o, p, c;
    const WT *wo = wt;
    (void)r_bits;
    for (o = 0; o < q->cout; o++, wo += q->wstep) {
        for (p = 0; p < q->hw; p++) {
            ACC acc = 0;
            const act_t *xc = x + p;
            const WT *wp = wo;
            for (c = 0; c < q->cin_g; c++, xc += q->hw, wp++) {
                int32_t xv = *xc;
                BODY
            }
            *y++ = requant(acc, o, r);
        }
    }
}
"""

_BODIES = {
    # code c != 0: the weight sign(c) * 2**(1 - |c|) as a shift of r_bits + 1 - |c| on the accumulator's grid
    "shift": ("int8_t", "int32_t", """{
                                int8_t code = *wp;
                                if (code) {
                                    int amt = r_bits + 1 - (code > 0 ? code : -code);
                                    int32_t t = amt >= 0 ? (int32_t)((uint32_t)xv << amt)
                                                         : (xv + (1 << (-amt - 1))) >> (-amt);
                                    if (code > 0) acc += t; else acc -= t;
                                }
                            }"""),
    # the weights r_bits finer than the input: |(x << r_bits) - w|
    "add": ("int16_t", "int32_t", "{ int32_t d = (int32_t)((uint32_t)xv << r_bits) - *wp; acc -= d < 0 ? -d : d; }"),
    "mult": ("int16_t", "int64_t", "acc += (int64_t)xv * *wp;"),
}

_KERNELS = r"""
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline)) /* each layer kind stays one function: its code can be audited */
#else
#define NOINLINE
#endif

#define HSIG_MULT HSIG_MULT_VALUE /* 1/6 in 16-bit fixed point: the hard sigmoid's division */
#define REQ_GUARD REQ_GUARD_VALUE /* requantisation: fractional bits kept until its one rounding */

static int64_t shl64(int64_t x, int k) { return (int64_t)((uint64_t)x << k); }

/* x * 2**e, rounded half up: a left shift, or an add and an arithmetic right shift */
static int64_t round_shift(int64_t x, int e) {
    if (e >= 0) return shl64(x, e);
    return (x + ((int64_t)1 << (-e - 1))) >> (-e);
}

/* x * 2**e, rounded half to even: each output's one rounding (half up would add a quarter step at every residual
 * add, where half the sums are ties); the parity bit from shifts and a subtraction */
static int64_t round_even(int64_t x, int e) {
    int64_t parity;
    if (e >= 0) return shl64(x, e);
    parity = (x >> (-e)) - shl64(x >> (-e + 1), 1);
    return (x + ((int64_t)1 << (-e - 1)) - 1 + parity) >> (-e);
}

typedef struct {
    int terms, cout;
    const int8_t *e, *s; /* [terms][cout]: the scale as signed powers of two */
    const int32_t *offset, *bias; /* the accumulator's offset (its grid), the output's bias (its grid) */
    int32_t lo;
    const int16_t *hi; /* per channel: ReLU6's 6 on each channel's grid, or the saturation */
} req_t;

NOINLINE static act_t requant(int64_t acc, int o, const req_t *r) {
    int64_t y = 0;
    int t, at = o;
    acc += r->offset[o];
    for (t = 0; t < r->terms; t++, at += r->cout) { /* REQ_GUARD bits finer than the output: one rounding */
        if (r->s[at] > 0) y += round_shift(acc, r->e[at] + REQ_GUARD);
        else if (r->s[at] < 0) y -= round_shift(acc, r->e[at] + REQ_GUARD);
    }
    y = round_even(y + shl64(r->bias[o], REQ_GUARD), -REQ_GUARD);
    return (act_t)(y < r->lo ? r->lo : y > r->hi[o] ? r->hi[o] : y);
}

/* sizes, with every product precomputed by the generator */
typedef struct {
    int cin_g, h, w, cout, cout_g, oh, ow, kk, stride, pad;
    int hw, in_group, wstep, pad_w, s_w; /* h*w, cin_g*h*w, cin_g*k*k, pad*w, stride*w */
    const int16_t *tap_dy, *tap_dx, *tap_off; /* per tap: i*dil, j*dil, i*dil*w + j*dil */
    const int16_t *pad_value; /* per input channel, or 0: zero padding */
} geo_t;

@@add_tensors
/* per channel (each may have its own format): summed exactly on the finer grid, rounded once */
NOINLINE static void add_tensors(const act_t *a, const act_t *b, act_t *y, int c, int hw, const int8_t *ea,
                                 const int8_t *eb, int32_t lo, const int16_t *hi) {
    int i, p;
    for (i = 0; i < c; i++) {
        int m = ea[i] < eb[i] ? ea[i] : eb[i], sa = ea[i] - m, sb = eb[i] - m;
        for (p = 0; p < hw; p++) {
            int64_t v = round_even(shl64(*a++, sa) + shl64(*b++, sb), m);
            *y++ = (act_t)(v < lo ? lo : v > hi[i] ? hi[i] : v);
        }
    }
}

@@add_channels
/* a sum where a holds one value per channel (ASPP's image pooling branch), broadcast over b's pixels */
NOINLINE static void add_channels(const act_t *a, const act_t *b, act_t *y, int c, int hw, int ea, int eb, int32_t lo,
                                  int32_t hi) {
    int i, p, m = ea < eb ? ea : eb; /* as add_tensors */
    for (i = 0; i < c; i++) {
        int64_t va = shl64(a[i], ea - m);
        for (p = 0; p < hw; p++, b++) {
            int64_t v = round_even(va + shl64(*b, eb - m), m);
            *y++ = (act_t)(v < lo ? lo : v > hi ? hi : v);
        }
    }
}

@@resize
/* bilinear resize: per output row and column, two source offsets and two weights of RESIZE_FRAC bits (tables made
 * by the generator, row offsets already times the width): six multiplies per output element */
typedef struct {
    int c, in_hw, oh, ow;
    const int32_t *row0, *row1, *wy0, *wy1, *col0, *col1, *wx0, *wx1;
} resize_t;

NOINLINE static void resize(const act_t *x, act_t *y, const resize_t *q, int e, int32_t lo, int32_t hi) {
    int i, oy, ox;
    for (i = 0; i < q->c; i++, x += q->in_hw) {
        for (oy = 0; oy < q->oh; oy++) {
            const act_t *r0 = x + q->row0[oy], *r1 = x + q->row1[oy];
            for (ox = 0; ox < q->ow; ox++) {
                int64_t top = (int64_t)r0[q->col0[ox]] * q->wx0[ox] + (int64_t)r0[q->col1[ox]] * q->wx1[ox];
                int64_t bottom = (int64_t)r1[q->col0[ox]] * q->wx0[ox] + (int64_t)r1[q->col1[ox]] * q->wx1[ox];
                int64_t v = round_even(top * q->wy0[oy] + bottom * q->wy1[oy], e);
                *y++ = (act_t)(v < lo ? lo : v > hi ? hi : v);
            }
        }
    }
}

@@pool_sum
static int64_t pool_sum(const act_t *x, int hw) {
    int64_t s = 0;
    int i;
    for (i = 0; i < hw; i++) s += x[i];
    return s;
}

@@pool_shift
NOINLINE static void pool_shift(const act_t *x, act_t *y, int c, int hw, const int8_t *e, int32_t lo, int32_t hi) {
    int i;
    for (i = 0; i < c; i++, x += hw) { /* e per channel: the input may have a format per channel */
        int64_t v = round_even(pool_sum(x, hw), e[i]);
        y[i] = (act_t)(v < lo ? lo : v > hi ? hi : v);
    }
}

@@hswish
/* x * clamp(x + 3, 0, 6) / 6 (h-swish), the 1/6 a fixed-point multiplier: two multiplies per element */
NOINLINE static void hswish(const act_t *x, act_t *y, int n, int e, int32_t three, int32_t six, int32_t lo,
                            int32_t hi) {
    int i;
    for (i = 0; i < n; i++) {
        int64_t r = (int64_t)x[i] + three, v;
        r = r < 0 ? 0 : r > six ? six : r;
        v = round_even((int64_t)x[i] * r * HSIG_MULT, e);
        y[i] = (act_t)(v < lo ? lo : v > hi ? hi : v);
    }
}

@@se_gate
/* squeeze-excite: each channel of x times clamp(z + 3, 0, 6) / 6 of its excitation z: two multiplies per element */
NOINLINE static void se_gate(const act_t *x, const act_t *z, act_t *y, int c, int hw, int e, int32_t three,
                             int32_t six, int32_t lo, int32_t hi) {
    int i, p;
    for (i = 0; i < c; i++) {
        int64_t r = (int64_t)z[i] + three;
        r = r < 0 ? 0 : r > six ? six : r;
        for (p = 0; p < hw; p++, x++) {
            int64_t v = round_even((int64_t)*x * r * HSIG_MULT, e);
            *y++ = (act_t)(v < lo ? lo : v > hi ? hi : v);
        }
    }
}

@@pool_mult
/* average over pixels that are no power of two: one multiply per channel by round(2**16 / pixels) */
NOINLINE static void pool_mult(const act_t *x, act_t *y, int c, int hw, int32_t m, const int8_t *e, int32_t lo,
                               int32_t hi) {
    int i;
    for (i = 0; i < c; i++, x += hw) {
        int64_t v = round_even(pool_sum(x, hw) * m, e[i]);
        y[i] = (act_t)(v < lo ? lo : v > hi ? hi : v);
    }
}
"""


_KERNELS = _KERNELS.replace("HSIG_MULT_VALUE", str(HSIG_MULT)).replace("REQ_GUARD_VALUE", str(REQ_GUARD))
_COMMON, *_parts = _KERNELS.split("\n@@")
_SNIPPETS = {p.split("\n", 1)[0]: p.split("\n", 1)[1] for p in _parts}
_LAYERS = {"conv": _CONV, "pw": _POINTWISE}


def _weight_type(q: QNode) -> str:
    """The C type of a layer's weights: an adder's integers take 16 bits where they fit (8-bit activations), else 32."""
    return "int32_t" if q.op == "add" and np.abs(q.weight).max(initial=0) >= 2**15 else _BODIES[q.op][0]


def _kernels(used: set[str], wtypes: dict[str, str]) -> str:
    """The common helpers and the kernels ``used`` (an unused static function is a warning, and -Werror); a layer
    kernel ``conv_OP`` / ``pw_OP`` with the weight type ``wtypes[OP]``."""
    if used & {"pool_shift", "pool_mult"}:
        used = used | {"pool_sum"}
    layers = [(kind, op) for kind in _LAYERS for op in _BODIES if f"{kind}_{op}" in used]
    return _COMMON + "".join(_LAYERS[kind].replace("OP", op).replace("WT", wtypes[op]).replace("ACC", _BODIES[op][1])
                             .replace("BODY", _BODIES[op][2]) for kind, op in layers) + \
        "".join(_SNIPPETS[k] for k in _SNIPPETS if k in used)


@dataclass
class Emitted:
    header: str
    source: str
    arena_bytes: int
    weight_bytes: int
    plan: dict  # tensor -> (offset, elements)


def plan_buffers(bundle: Bundle) -> tuple[dict[int, tuple[int, int]], int]:
    """Offsets (in elements) of every tensor in one arena: first fit among the tensors alive at the same time; a
    tensor lives from its node to its last reader. Returns ({tensor: (offset, elements)}, arena elements)."""
    size = {0: int(np.prod(bundle.shape_in))}
    born, last = {0: -1}, {0: -1}
    for step, q in enumerate(bundle.nodes):
        size[q.output], born[q.output], last[q.output] = int(np.prod(q.shape)), step, step
        for i in q.inputs:
            last[i] = step
    last[bundle.nodes[-1].output] = len(bundle.nodes)
    placed: dict[int, tuple[int, int]] = {}
    for t in sorted(size, key=lambda t: born[t]):
        live = sorted((placed[u][0], placed[u][0] + size[u]) for u in placed
                      if not (last[u] < born[t] or last[t] < born[u]))
        offset = 0
        for lo, hi in live:
            if offset + size[t] <= lo:
                break
            offset = max(offset, hi)
        placed[t] = (offset, size[t])
    return placed, max(o + n for o, n in placed.values())


def _array(ctype: str, name: str, values) -> str:
    flat = np.asarray(values).reshape(-1).tolist()
    rows = [", ".join(str(int(v)) for v in flat[i:i + 24]) for i in range(0, len(flat), 24)]
    return f"static const {ctype} {name}[{len(flat)}] = {{\n    " + ",\n    ".join(rows) + "\n};\n"


def _channels(v, c: int) -> np.ndarray:
    """A bundle value (an int, or one per channel) as ``c`` values."""
    return np.broadcast_to(np.asarray(v, dtype=np.int64), (c,))


def shift_codes(q: QNode) -> np.ndarray:
    """A shift layer's weights packed one byte each: 0, or sign * (1 - p) for the weight sign * 2**p (p <= 0)."""
    return np.where(q.sign == 0, 0, q.sign * (1 + q.guard - q.weight)).astype(np.int8)


def emit_c(bundle: Bundle, prefix: str = "model") -> Emitted:
    """The C source and header of ``bundle``: ``void {prefix}_run(const act_t *in, act_t *out)``."""
    plan, arena = plan_buffers(bundle)
    act = "int8_t" if bundle.act_bits == 8 else "int16_t"
    shapes = {0: bundle.shape_in, **{q.output: q.shape for q in bundle.nodes}}
    data, calls, weight_bytes = [], [], 0
    convs = [q for q in bundle.nodes if q.kind == "conv"]
    wtypes = {op: max((_weight_type(q) for q in convs if q.op == op), key=lambda t: int(t[3:-2]), default="int32_t")
              for op in _BODIES}  # one kernel per operator: the widest type its layers need
    for n, q in enumerate(bundle.nodes):
        src, dst = q.inputs, q.output
        x = f"arena + {plan[src[0]][0]}"
        y = f"arena + {plan[dst][0]}"
        lo, hi = q.clamp
        if q.kind == "add":
            a, b = src
            if plan[a][1] == plan[b][1]:
                c = shapes[dst][0]
                data.append(_array("int8_t", f"ea{n}", _channels(q.align[0], c)) +
                            _array("int8_t", f"eb{n}", _channels(q.align[1], c)) +
                            _array("int16_t", f"h{n}", _channels(hi, c)))
                calls.append(f"add_tensors({x}, arena + {plan[b][0]}, {y}, {c}, {plan[dst][1] // c}, ea{n}, eb{n}, "
                             f"{lo}, h{n});")
            else:  # one input holds a value per channel: it goes first
                (a, ea), (b, eb) = sorted(zip(src, q.align), key=lambda t: plan[t[0]][1])
                c = shapes[dst][0]
                calls.append(f"add_channels(arena + {plan[a][0]}, arena + {plan[b][0]}, {y}, {c}, "
                             f"{plan[dst][1] // c}, {ea}, {eb}, {lo}, {hi});")
            continue
        if q.kind == "resize":
            (c, h, w), (_, oh, ow) = shapes[src[0]], q.shape
            y0, y1, wy0, wy1 = bilinear_taps(h, oh)
            x0, x1, wx0, wx1 = bilinear_taps(w, ow)
            tables = {"row0": y0 * w, "row1": y1 * w, "wy0": wy0, "wy1": wy1, "col0": x0, "col1": x1, "wx0": wx0,
                      "wx1": wx1}
            data.append("".join(_array("int32_t", f"{k}_{n}", v) for k, v in tables.items()) +
                        f"static const resize_t z{n} = {{{c}, {h * w}, {oh}, {ow}, " +
                        ", ".join(f"{k}_{n}" for k in tables) + "};\n")
            calls.append(f"resize({x}, {y}, &z{n}, {q.align[0]}, {lo}, {hi}); /* {q.name} */")
            continue
        if q.kind == "hswish":
            calls.append(f"hswish({x}, {y}, {plan[dst][1]}, {', '.join(map(str, q.align))}, {lo}, {hi});")
            continue
        if q.kind == "gate":
            c, hh, ww = shapes[dst]
            calls.append(f"se_gate({x}, arena + {plan[src[1]][0]}, {y}, {c}, {hh * ww}, "
                         f"{', '.join(map(str, q.align))}, {lo}, {hi});")
            continue
        if q.kind == "pool":
            shift, pixels = q.align
            c = shapes[dst][0]
            k = pixels.bit_length() - 1
            pow2 = pixels == 1 << k
            data.append(_array("int8_t", f"pe{n}", _channels(shift, c) - (k if pow2 else 16)))
            calls.append(f"pool_shift({x}, {y}, {c}, {pixels}, pe{n}, {lo}, {hi});" if pow2 else
                         f"pool_mult({x}, {y}, {c}, {pixels}, {round(2**16 / pixels)}, pe{n}, {lo}, {hi});")
            continue
        g = q.geometry
        cin, h, w = shapes[src[0]] if not g["linear"] else (int(np.prod(shapes[src[0]])), 1, 1)
        cout, oh, ow = q.shape
        groups, k = g["groups"], g["kernel"]
        cin_g = cin // groups
        weights, wtype = (shift_codes(q), "int8_t") if q.op == "shift" else (q.weight, wtypes[q.op])
        data.append(_array(wtype, f"w{n}", weights))
        weight_bytes += weights.size * int(wtype[3:-2]) // 8
        terms = len(q.scale_exp)
        data.append(_array("int8_t", f"e{n}", q.scale_exp) + _array("int8_t", f"s{n}", q.scale_sign) +
                    _array("int32_t", f"m{n}", q.offset) + _array("int32_t", f"b{n}", q.bias))
        data.append(_array("int16_t", f"h{n}", _channels(hi, cout)))
        weight_bytes += 2 * q.scale_exp.size + 4 * q.offset.size + 4 * q.bias.size + 2 * cout
        d = g["dilation"]
        dy, dx = np.divmod(np.arange(k * k), k)
        data.append(_array("int16_t", f"ty{n}", dy * d) + _array("int16_t", f"tx{n}", dx * d) +
                    _array("int16_t", f"to{n}", dy * d * w + dx * d))
        pad = "0"  # no pad values: zero padding
        if "pad_value" in g:
            data.append(_array("int16_t", f"pv{n}", _channels(g["pad_value"], cin)))
            pad, weight_bytes = f"pv{n}", weight_bytes + 2 * cin
        data.append(f"static const geo_t g{n} = {{{cin_g}, {h}, {w}, {cout}, {cout // groups}, {oh}, {ow}, {k * k}, "
                    f"{g['stride']}, {g['padding']}, {h * w}, {cin_g * h * w}, {cin_g * k * k}, "
                    f"{g['padding'] * w}, {g['stride'] * w}, ty{n}, tx{n}, to{n}, {pad}}};\n"
                    f"static const req_t r{n} = {{{terms}, {cout}, e{n}, s{n}, m{n}, b{n}, {lo}, h{n}}};\n")
        kind = "pw" if k == 1 and g["stride"] == 1 and g["padding"] == 0 and groups == 1 else "conv"
        calls.append(f"{kind}_{q.op}({x}, {y}, &g{n}, w{n}, {q.guard}, &r{n}); /* {q.name} */")
    kernels = _kernels({c.split("(", 1)[0] for c in calls}, wtypes)
    header = (f"/* {prefix}: generated by shiftaddaug.deploy.emit_c; integer inference, {bundle.act_bits}-bit "
              f"activations */\n#ifndef {prefix.upper()}_H\n#define {prefix.upper()}_H\n#include <stdint.h>\n"
              f"typedef {act} act_t;\n"
              f"#define {prefix.upper()}_INPUT_SIZE {int(np.prod(bundle.shape_in))}\n"
              f"#define {prefix.upper()}_INPUT_FRAC {bundle.frac_in}\n" +
              (f"/* input: the image's 8-bit pixels minus {prefix.upper()}_INPUT_OFFSET, channel by channel */\n"
               f"#define {prefix.upper()}_INPUT_OFFSET {PIXEL_OFFSET}\n" if bundle.pixels is not None else "") +
              f"#define {prefix.upper()}_OUTPUT_SIZE {int(np.prod(bundle.shape_out))}\n"
              f"#define {prefix.upper()}_OUTPUT_FRAC {bundle.nodes[-1].frac_out}\n"
              f"void {prefix}_run(const act_t *input, act_t *output);\n#endif\n")
    out = bundle.nodes[-1].output
    source = (f'#include "{prefix}.h"\n' + kernels + "\n" + "".join(data) +
              f"\nstatic act_t arena[{arena}];\n\nvoid {prefix}_run(const act_t *input, act_t *output) {{\n"
              f"    int i;\n    for (i = 0; i < {plan[0][1]}; i++) arena[{plan[0][0]} + i] = input[i];\n" +
              "".join(f"    {c}\n" for c in calls) +
              f"    for (i = 0; i < {plan[out][1]}; i++) output[i] = arena[{plan[out][0]} + i];\n}}\n")
    return Emitted(header, source, arena * bundle.act_bits // 8, weight_bytes, plan)


def inputs_header(inputs: np.ndarray) -> str:
    """``inputs.h`` for the harness built with ``-DMODEL_EMBEDDED_INPUTS``: integer images ``[N, ...]``."""
    rows = [", ".join(map(str, x.reshape(-1).tolist())) for x in np.asarray(inputs)]
    return (f"#define MODEL_IMAGES {len(rows)}\nstatic const act_t model_inputs[MODEL_IMAGES][MODEL_INPUT_SIZE] = {{\n"
            + ",\n".join(f"    {{{r}}}" for r in rows) + "\n};\n")
