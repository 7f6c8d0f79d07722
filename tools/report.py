#!/usr/bin/env python
"""Numbers for the results table (docs/report.md, summarized in README): pretrain on a CPU-time budget, then probe.

python tools/report.py images [--minutes 12]       # MAE on the Fashion-MNIST sample
python tools/report.py images-full                  # all of Fashion-MNIST (make_sample_data.py fashion-full)
python tools/report.py video | points | point2vec | graphs | audio   # VideoMAE (shuffle probe), Point-MAE,
                                                              # Point2Vec-style, GraphMAE, AudioMAE
python tools/report.py sweep [--minutes 3] [--on images-full]   # linear probe vs mask ratio (MAE Fig. 5)
python tools/report.py video --probe-only [--gin_param ...]   # probe an earlier run again
python tools/report.py points3d --minutes 10 --seeds 0 1 2   # three pretraining seeds: means and spread
python tools/report.py points3d-10shot --steps 5000 --episodes 5   # few-shot: five draws of the shots
python tools/report.py points3d-unlabeled-finetune --steps 5000 --finetune-seeds 0 1 2   # 3 fine-tunes per init

Each row is one entry of gin/report_specs.json: the recipe, the data it needs and the probe. The shared pipeline (1) measures the CPU time of a
few training steps, (2) sets train.steps so the whole warmup + cosine schedule fits the budget
(`--minutes` x cores CPU-minutes: about `--minutes` of wall clock on a dedicated machine, more
on a shared one, same work either way), (3) pretrains in a child process (tools/train.py; SIGTERM at 2x the
CPU budget: the trainer checkpoints and exits), (4) probes random
init, pretrained and raw input (the probes of tools/eval.py), (5) upserts the row of docs/report.md and
writes the JSON next to the run. A modality without labels probes through its dataset's
bindings in the row's eval_params (video: VideoDataset.probe, frames in order vs shuffled).
The work is unimask/evaluation/ (report.py, runs.py, budget.py, table.py).
"""
from __future__ import annotations

import argparse
import os
import sys

from unimask.cli import REPO_ROOT as ROOT
from unimask.evaluation import report
from unimask.evaluation.protocols import OPTION_NAMES
from unimask.evaluation.runs import Workspace
from unimask.evaluation.specs import load_specs

REPORT_MD = os.path.join(ROOT, "docs", "report.md")
README = os.path.join(ROOT, "README.md")  # its copy of the table stays in step with docs/report.md
SPECS_JSON = os.path.join(ROOT, "gin", "report_specs.json")
TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
RUNS = os.path.join("runs", "report")


def parse_args(specs, argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=list(specs) + ["sweep", "all"])
    parser.add_argument("--minutes", type=float, default=None,
                        help="pretraining budget per run in minutes of all this machine's cores (CPU time = "
                             "minutes x cores): 12 per modality, 3 per sweep ratio")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9])
    parser.add_argument("--on", default="images", choices=["images", "images-full"],
                        help="data of the sweep: the 4k sample or all of Fashion-MNIST")
    parser.add_argument("--runs", default=RUNS, help="where runs and report.json go")
    parser.add_argument("--md", default=REPORT_MD, help="markdown file whose tables are updated")
    parser.add_argument("--steps", type=int, default=None,
                        help="pretrain exactly this many steps instead of a CPU budget (5%% warmup): the same "
                             "schedule, so the same figure within noise, on any CPU")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="pretraining seeds (train.seed): one run each, the row shows their means and spread")
    parser.add_argument("--episodes", type=int, default=None,
                        help="few-shot rows: average this many draws of the shots (the row's default otherwise)")
    parser.add_argument("--finetune-seeds", type=int, nargs="+", default=None,
                        help="fine-tune rows: fine-tune both inits once per seed over the one pretraining "
                             "checkpoint; the row shows the means and the seeds' spread")
    parser.add_argument("--probe-only", action="store_true",
                        help="no pretraining: probe the checkpoint of the earlier run in --runs again (a "
                             "fine-tune row reads back its finished fine-tunes and probes raw input again)")
    parser.add_argument("--gin_param", action="append", default=[],
                        help="extra binding for pretraining (kept in the checkpoint, so the probes see it too); "
                             "with --probe-only, for the probes")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    specs = load_specs(SPECS_JSON, OPTION_NAMES)
    args = parse_args(specs, argv)
    md = os.path.abspath(args.md)
    ws = Workspace(runs=os.path.abspath(args.runs), md=md, train_script=TRAIN, specs=specs, root=ROOT,
                   mirror=README if md == os.path.abspath(REPORT_MD) else None, command="python tools/report.py")
    os.chdir(ROOT)  # recipes and their data roots are relative to the repository
    if args.what == "sweep":
        report.run_sweep(ws, args.minutes or 3, args.ratios, args.gin_param, name=args.on)
    else:
        report.run_rows(ws, args.what, args.minutes or 12, args.gin_param, args.seeds, args.probe_only,
                        steps=args.steps, episodes=args.episodes, finetune_seeds=args.finetune_seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
