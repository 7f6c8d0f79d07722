#!/usr/bin/env python
"""Training curves of a run as one PNG: loss (+ eval_loss), lr and mask ratio against step.

python tools/plot.py runs/x [--out runs/x/curves.png] [--keys loss eval_loss lr mask_ratio]

Reads <run>/metrics.jsonl (or a metrics.jsonl given directly). eval_loss shares the loss
panel, since both are the same loss (eval_loss on one fixed batch and mask); keys a run
never logged are left out, and a run resumed after a preemption (repeated steps) keeps
the last row of each step. The drawing is unimask/evaluation/plots.py.
"""
from __future__ import annotations

import argparse
import os
import sys

from unimask.evaluation.plots import DEFAULT_KEYS, metrics_path, plot_metrics, read_metrics


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run directory or metrics.jsonl")
    parser.add_argument("--out", default=None, help="PNG path (default <run>/curves.png)")
    parser.add_argument("--keys", nargs="+", default=list(DEFAULT_KEYS))
    args = parser.parse_args(argv)
    path = metrics_path(args.run)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(path)), "curves.png")
    plot_metrics(read_metrics(path), out, args.keys, title=os.path.basename(os.path.dirname(os.path.abspath(path))))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
