"""A bundle on disk: one ``.npz`` holding its integer arrays and, as JSON, its plain fields; nothing is pickled."""
from __future__ import annotations

import json
import zipfile
from dataclasses import fields
from pathlib import Path

import numpy as np

from .quantize import Bundle, QNode

FORMAT = 1
ARRAYS = ("weight", "sign", "offset", "scale_exp", "scale_sign", "bias")
TUPLES = ("inputs", "clamp", "align", "shape")


def save_bundle(bundle: Bundle, path: str | Path) -> None:
    """Write ``bundle`` to ``path`` (a ``.npz`` file)."""
    if Path(path).suffix != ".npz":
        raise ValueError(f"a bundle file ends in .npz, got {path}")
    nodes, arrays = [], {}
    for i, q in enumerate(bundle.nodes):
        nodes.append({f.name: getattr(q, f.name) for f in fields(QNode) if f.name not in ARRAYS})
        arrays.update({f"{i}.{a}": getattr(q, a) for a in ARRAYS if getattr(q, a) is not None})
    meta = {"format": FORMAT, "act_bits": bundle.act_bits, "frac_in": bundle.frac_in,
            "num_classes": bundle.num_classes, "shape_in": bundle.shape_in, "pixels": bundle.pixels, "nodes": nodes}
    np.savez(path, meta=np.array(json.dumps(meta, default=int)), **arrays)


def load_bundle(path: str | Path) -> Bundle:
    """The bundle ``save_bundle`` wrote; anything else raises ValueError in one line."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')}, this version reads {FORMAT}")
            nodes = []
            for i, d in enumerate(meta["nodes"]):
                d.update({k: tuple(d[k]) for k in TUPLES})
                d.update({a: z[f"{i}.{a}"] for a in ARRAYS if f"{i}.{a}" in z.files})
                nodes.append(QNode(**d))
        pixels = meta.get("pixels")
        return Bundle(meta["act_bits"], meta["frac_in"], nodes, meta["num_classes"], tuple(meta["shape_in"]),
                      None if pixels is None else tuple(tuple(p) for p in pixels))
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is no readable shiftaddaug bundle: {e}") from None
