"""Figures people would rather look at than read: accuracy against inference energy, energy by operator type."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CLASS_COLORS = {"mult": "tab:red", "shift": "tab:green", "add": "tab:blue", "vector": "tab:gray"}
CLASS_LABELS = {"mult": "multiply layers", "shift": "shift layers", "add": "adder layers",
                "vector": "BN, activations, pools, residuals"}


def method_of(summary: dict) -> str:
    c = summary["config"]
    return f"{c['op']} " + ("direct" if c["aug_op"] == "none" else f"ShiftAddAug ({c['aug_op']}/{c['remap']})")


def _short(name: str, n: int = 34) -> str:
    return name if len(name) <= n else "…" + name[1 - n:]  # run names differ at the end (remap, epochs, seed)


def _stacked_bars(ax, labels: list[str], by_class: list[dict]) -> None:
    left = [0.0] * len(labels)
    for cls, color in CLASS_COLORS.items():
        widths = [d.get(cls, 0.0) / 1e6 for d in by_class]
        ax.barh(labels, widths, left=left, color=color, label=CLASS_LABELS[cls])
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()


def accuracy_vs_energy(runs: list[tuple[str, dict, dict]], path: Path, bits: int, hw: str) -> None:
    """``runs``: (name, summary, cost total). Left: top-1 against energy, one line per method (as the paper's
    figure); right: each run's energy split by operator type."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 0.35 * len(runs) + 4.5), width_ratios=(3, 2),
                                 layout="constrained")
    methods: dict[str, list] = {}
    for name, s, t in runs:
        methods.setdefault(method_of(s), []).append((t["energy_pj"] / 1e6, s["final_acc"], name))
    for method, pts in methods.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
        for e, a, name in pts:
            ax.annotate(_short(name), (e, a), fontsize=6, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set(xlabel=f"inference energy per image (uJ, {hw}, {bits} bit)", ylabel="test top-1 (%)",
           title="accuracy vs energy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _stacked_bars(bx, [_short(name) for name, _, _ in runs], [t["energy_by_class"] for _, _, t in runs])
    bx.tick_params(axis="y", labelsize=7)
    bx.set(xlabel="energy per image (uJ)", title="energy by operator type")
    bx.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def zoo_energy(costs: dict[str, dict[str, dict]], path: Path, title: str) -> None:
    """``costs[model][op]`` = cost total: one panel per model, one stacked bar per operator variant."""
    n = len(costs)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 2.4 * rows + 0.8), squeeze=False, layout="constrained")
    for ax, (model, by_op) in zip(axes.flat, costs.items()):
        base = by_op["mult"]["energy_pj"]
        _stacked_bars(ax, [f"{op} ({t['energy_pj'] / base:.0%})" for op, t in by_op.items()],
                      [t["energy_by_class"] for t in by_op.values()])
        ax.set(title=model, xlabel="energy per image (uJ)")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def macs_cdf(stats, chosen, path: Path, budget: str) -> None:
    """Stage 1: the MACs distribution of each space's satisfying sub-networks, one panel per augmentation multiple
    (TinyNAS's figure); the chosen space in black."""
    multiples = sorted({s.multiple for s in stats})
    fig, axes = plt.subplots(1, len(multiples), figsize=(4.2 * len(multiples), 3.8), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, m in zip(axes[0], multiples):
        for s in (s for s in stats if s.multiple == m and s.macs):
            ys = [(i + 1) / len(s.macs) for i in range(len(s.macs))]
            best = s is chosen
            ax.step([v / 1e6 for v in s.macs], ys, where="post", color="black" if best else None,
                    lw=2.2 if best else 1.0, label=f"w{s.width:g} r{s.resolution} ({s.fraction:.0%})")
        ax.set(title=f"augmentation multiple {m:g}", xlabel="MACs of satisfying sub-networks (M)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("cumulative fraction")
    fig.suptitle(f"stage 1: sub-networks meeting {budget} (black: chosen space)")
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def pareto(points, front, path: Path, energy_limit: float | None = None) -> None:
    """Stage 2: validation accuracy against energy of every evaluated architecture, the Pareto front joined."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    ax.scatter([p["energy_uj"] for p in points], [p["val_acc"] for p in points], s=10, alpha=0.4,
               label="evaluated sub-networks")
    ax.plot([p["energy_uj"] for p in front], [p["val_acc"] for p in front], "o-", color="tab:red", label="Pareto front")
    if energy_limit:
        ax.axvline(energy_limit, color="gray", ls="--", label="energy budget")
    ax.set(xlabel="inference energy per image (uJ)", ylabel="validation top-1 (%)",
           title="evolutionary search: accuracy vs energy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def seg_examples(images, masks, preds, class_names, path: Path, ignore_index: int = 255) -> None:
    """Image, ground truth and prediction side by side, one row per scene, one colour per class."""
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colors = plt.get_cmap("tab20").colors[: len(class_names)]
    cmap = ListedColormap(colors)
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n + 0.8), squeeze=False)
    for i in range(n):
        shown = np.ma.masked_equal(masks[i], ignore_index)
        for ax, img, title in ((axes[i, 0], images[i], "image"), (axes[i, 1], shown, "ground truth"),
                               (axes[i, 2], preds[i], "prediction")):
            if title == "image":
                ax.imshow(img, cmap="gray")
            else:
                ax.imshow(img, cmap=cmap, vmin=0, vmax=len(class_names) - 1, interpolation="nearest")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title)
    fig.legend(handles=[Patch(color=c, label=name) for c, name in zip(colors, class_names)], loc="lower center",
               ncol=4, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.8 / (2.2 * n + 0.8), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
