"""Pictures of runs: training curves (loss, lr, mask ratio against step) and the mask-ratio sweep.

matplotlib is imported when a picture is drawn (Agg: no display needed).
"""
from __future__ import annotations

import json
import math
import os
from typing import List

DEFAULT_KEYS = ("loss", "eval_loss", "lr", "mask_ratio")
SHARED_PANEL = {"eval_loss": "loss"}  # drawn on the panel of another key: the same loss, fixed batch and mask


def metrics_path(path: str) -> str:
    """A run directory's metrics.jsonl, or the file itself."""
    return os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path


def read_metrics(path: str) -> list:
    """metrics.jsonl -> rows sorted by step, the last row of a step winning (resumed runs)."""
    by_step = {}
    with open(metrics_path(path)) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                by_step[row["step"]] = {**by_step.get(row["step"], {}), **row}
    if not by_step:
        raise ValueError(f"{metrics_path(path)} has no rows")
    return [by_step[s] for s in sorted(by_step)]


def series(rows: list, key: str) -> tuple:
    """(steps, values) of the rows that logged a finite `key`."""
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: str) -> str:
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    pyplot().close(fig)
    return out


def plot_metrics(rows: list, out: str, keys=DEFAULT_KEYS, title: str = "") -> str:
    """One panel per key (eval_loss joins loss), saved as a PNG at `out`; returns its path."""
    present = [k for k in keys if series(rows, k)[0]]
    if not present:
        raise ValueError(f"none of {list(keys)} was logged")
    panels = []
    for key in present:
        panel = SHARED_PANEL.get(key, key)
        if panel not in panels:
            panels.append(panel)
    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for key in present:
        ax = axes[0][panels.index(SHARED_PANEL.get(key, key))]
        steps, values = series(rows, key)
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_title(SHARED_PANEL.get(key, key))
        ax.grid(alpha=0.3)
        if key in ("loss", "eval_loss"):
            ax.legend()
    if title:
        fig.suptitle(title)
    return save(fig, out)


def plot_sweep(ratios: List[float], accs: List[float], random_acc: float, out: str) -> str:
    """Linear-probe accuracy vs mask ratio, MAE Fig. 5 style, with the random-init level."""
    fig, ax = pyplot().subplots(figsize=(4.5, 3.4))
    ax.plot([100 * r for r in ratios], accs, marker="o", label="pretrained")
    for r, a in zip(ratios, accs):
        ax.annotate(f"{a:.1f}", (100 * r, a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.axhline(random_acc, color="gray", linestyle="--", label=f"random init ({random_acc:.1f})")
    ax.set_xlabel("masking ratio (%)")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, out)
