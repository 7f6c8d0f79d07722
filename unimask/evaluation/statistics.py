"""How much a table's figure can move by chance: the test split's sampling noise, and the spread
of paired runs (pretraining seeds, few-shot episodes, fine-tune seeds) averaged into one row.

A row's probes are {'random_init': {...}, 'pretrained': {...}, 'raw': {...}}, each with its
`top1_acc` (%); runs are paired: the same seed or draw for both inits, so each run has a gain.
"""
from __future__ import annotations

import math
import statistics
from typing import List

WHICH = ("random_init", "pretrained", "raw")


def noise_cell(accuracy: float, n_test) -> str:
    """The binomial standard error of a test accuracy (%): what one test split's sampling alone
    moves it, with the test size ('?' when it is not known)."""
    if not n_test:
        return "?"
    p = accuracy / 100
    return f"±{100 * math.sqrt(p * (1 - p) / n_test):.1f} (n={n_test})"


def spread_cell(noise: str, what: str, probe_sets: List[dict]) -> str:
    """The noise cell of a row averaged over several runs: the pretrained accuracies' sd, the
    standard error of the mean paired gain and every run's accuracies."""
    pre, rnd = ([probes[which]["top1_acc"] for probes in probe_sets] for which in ("pretrained", "random_init"))
    gains = [p - r for p, r in zip(pre, rnd)]
    spread = statistics.stdev(pre) if len(pre) > 1 else float("nan")
    gain_se = statistics.stdev(gains) / math.sqrt(len(gains)) if len(gains) > 1 else float("nan")
    return (f"{noise}; {what} sd {spread:.1f}, mean gain ±{gain_se:.1f} (pretrained "
            f"{' / '.join(f'{a:.1f}' for a in pre)}, random {' / '.join(f'{a:.1f}' for a in rnd)})")


def mean_probes(probe_sets: List[dict]) -> dict:
    """Several paired runs' probes as one: each init's and the raw input's mean top-1, with the
    first run's steps and test size (the same in every run)."""
    def mean(which):
        first = probe_sets[0][which]
        return {"top1_acc": statistics.mean(probes[which]["top1_acc"] for probes in probe_sets),
                **{k: first[k] for k in ("steps", "n_test") if k in first}}
    return {which: mean(which) for which in WHICH}
