#!/usr/bin/env python
"""Training curves of a run as one PNG: loss (+ eval_loss), lr and mask ratio against step.

python tools/plot.py runs/x [--out runs/x/curves.png] [--keys loss eval_loss lr mask_ratio]

Reads <run>/metrics.jsonl (or a metrics.jsonl given directly). eval_loss shares the loss
panel, since both are the same loss (eval_loss on one fixed batch and mask); keys a run
never logged are left out, and a run resumed after a preemption (repeated steps) keeps
the last row of each step.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

DEFAULT_KEYS = ("loss", "eval_loss", "lr", "mask_ratio")
SHARED_PANEL = {"eval_loss": "loss"}  # drawn on the panel of another key


def metrics_path(path: str) -> str:
    return os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path


def read_rows(path: str) -> list:
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


def plot_metrics(rows: list, out: str, keys=DEFAULT_KEYS, title: str = "") -> str:
    """Draw one panel per key (eval_loss joins loss) and save a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [k for k in keys if series(rows, k)[0]]
    if not present:
        raise ValueError(f"none of {list(keys)} was logged")
    panels = []
    for key in present:
        panel = SHARED_PANEL.get(key, key)
        if panel not in panels:
            panels.append(panel)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
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
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run directory or metrics.jsonl")
    parser.add_argument("--out", default=None, help="PNG path (default <run>/curves.png)")
    parser.add_argument("--keys", nargs="+", default=list(DEFAULT_KEYS))
    args = parser.parse_args(argv)
    path = metrics_path(args.run)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(path)), "curves.png")
    plot_metrics(read_rows(path), out, args.keys, title=os.path.basename(os.path.dirname(os.path.abspath(path))))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
