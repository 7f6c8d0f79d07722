#!/usr/bin/env python
"""Probe what an encoder learned: linear probe, kNN or short fine-tuning on labeled data.

python tools/eval.py --checkpoint runs/x/checkpoints/last.pt --protocol linear|knn|finetune
    [--random-init] [--gin f.gin] [--gin_param 'a.b=1'] [--pool mean|cls|tokens|flatten|max+mean] [--layer K] [--features raw]
python tools/eval.py --gin gin/image_mae_cpu.gin --random-init --protocol linear
torchrun --nproc_per_node 2 tools/eval.py --checkpoint runs/x/checkpoints/last.pt --protocol knn

Under torchrun each rank extracts its share of the items and the kNN probe runs sharded (the same
predictions as one process); rows past --feature-budget-mb stream to memory-mapped files in
<run>/features, and rerunning an interrupted extraction resumes it.

The model and data come from the checkpoint's own gin config (`--gin`/`--gin_param` only add
overrides): train.dataset is rebuilt with split='train' / 'test' and augment=False where the
dataset takes them. The test split is the data's own (root/train + root/test folders, ModelNet's
<class>/test, test.csv beside train.csv, x_test in an .npz) or `--test-root PATH`. Data without
one is split 80/20, deterministically: by item for per-sample labels, by labeled token for
per-token labels. The line `data: ...` says where the train and the test rows came from. `--features raw` probes the input itself (baseline). The
last line printed is always `top1_acc=XX.XX`. The work is unimask/evaluation/ (protocols.py, probe_data.py).
"""
from __future__ import annotations

import argparse
import os
import sys

from unimask.cli import add_trust_pickle, load_errors, write_json
from unimask.evaluation.protocols import DEFAULT_WDS, OPTION_NAMES, ProbeOptions
from unimask.evaluation.protocols import evaluate as run_probe

DEFAULTS = ProbeOptions()


def parse_args(argv=None):
    from unimask.probe.features import POOLS  # the probes' own list of poolings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="<run>/checkpoints/last.pt (its config rebuilds the model)")
    add_trust_pickle(parser)
    parser.add_argument("--gin", action="append", default=[], help="gin file, applied after the checkpoint's config")
    parser.add_argument("--gin_param", action="append", default=[], help="gin binding (repeatable)")
    parser.add_argument("--protocol", choices=("linear", "knn", "finetune"), default=DEFAULTS.protocol)
    parser.add_argument("--random-init", action="store_true", help="same architecture, untrained weights")
    parser.add_argument("--features", choices=("encoder", "raw"), default=DEFAULTS.features,
                        help="raw = the input tokens themselves, the no-learning baseline")
    parser.add_argument("--pool", choices=POOLS, default=None,
                        help="mean (encoder default), cls, tokens; flatten (raw default) concatenates tokens; "
                             "max+mean: max- and mean-pooled side by side (Point-BERT / Point-MAE set features)")
    parser.add_argument("--norm-stats", choices=("checkpoint", "recompute"), default=DEFAULTS.norm_stats,
                        help="BatchNorm statistics: the model's own, or recomputed on the probe's train split "
                             "(label-free; an untrained BatchNorm otherwise keeps mean 0 / variance 1)")
    parser.add_argument("--layer", type=int, default=None,
                        help="probe the output of this encoder block (0 = first, -1 = last before the final "
                             "norm) instead of the encoder's output")
    parser.add_argument("--modality", default=None,
                        help="a cross-modal model: the modality whose features are probed (the encoder sees it "
                             "alone), or 'all' (every modality encoded together; each one's mean-pooled features "
                             "side by side unless --pool says otherwise)")
    parser.add_argument("--test-root", default=None,
                        help="a separate test folder or list file (sets the dataset's test_root)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--num-workers", type=int, default=DEFAULTS.num_workers)
    parser.add_argument("--device", default=DEFAULTS.device)
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random init, splits, probe fitting")
    parser.add_argument("--epochs", type=int, default=None,
                        help="L-BFGS iterations (linear, 200) / epochs (finetune, 5)")
    parser.add_argument("--lr", type=float, default=None, help="linear: 1.0 (L-BFGS); finetune: 1e-3")
    parser.add_argument("--wd", type=float, nargs="+", default=None,
                        help=f"linear: L2 strengths, the best on a train slice is used (default {DEFAULT_WDS}); "
                             "finetune: AdamW weight decay (0.05)")
    parser.add_argument("--optimizer", choices=("lbfgs", "adamw"), default=DEFAULTS.optimizer,
                        help="linear probe solver")
    parser.add_argument("--k", type=int, default=DEFAULTS.k)
    parser.add_argument("--temperature", type=float, default=DEFAULTS.temperature)
    parser.add_argument("--vote", choices=("weighted", "majority"), default=DEFAULTS.vote)
    parser.add_argument("--feature-budget-mb", type=float, default=DEFAULTS.feature_budget_mb,
                        help="linear/knn rows held in memory; past it they stream to --feature-dir as memory-mapped "
                             "files, and a rerun resumes an interrupted extraction")
    parser.add_argument("--feature-dir", default=None,
                        help="where streamed rows go (default <run>/features beside the checkpoint)")
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    problem = options_of(args).problem()
    if problem:
        parser.error(problem)
    return args


def options_of(args) -> ProbeOptions:
    return ProbeOptions(**{name: getattr(args, name) for name in OPTION_NAMES})


def evaluate(argv=None) -> dict:
    """The probe of these command-line arguments, as a dict (and --json)."""
    args = parse_args(argv)
    result = run_probe(options_of(args))
    if is_main():
        write_json(args.json, result)  # nothing without --json
    return result


def is_main() -> bool:
    """Rank 0 under torchrun (every rank gets the same result; one writes and prints it)."""
    return int(os.environ.get("RANK", "0")) == 0


def main(argv=None) -> int:
    from unimask.probe import NoLabelsError

    try:
        result = evaluate(argv)
    except (NoLabelsError, *load_errors()) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not is_main():
        return 0
    details = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                        if k not in ("top1_acc", "checkpoint", "data"))
    print(details)
    print(f"top1_acc={result['top1_acc']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
