#!/usr/bin/env python
"""Train any recipe: python tools/train.py --gin gin/video_mae.gin [--gin gin/smoke.gin]
[--gin_param 'train.steps=200'] [--workdir runs/x] [--resume | --resume auto]

--resume continues from <workdir>/checkpoints/last.pt and fails when there is none; --resume
auto continues when there is one and starts fresh otherwise (torchrun --max-restarts jobs and
preemptible queues pass it on every start)."""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import parse_gin, seed_for_init  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gin", action="append", required=True, help="gin file (repeatable, later wins)")
    parser.add_argument("--gin_param", action="append", default=[], help="gin binding (repeatable)")
    parser.add_argument("--workdir", default=None, help="run directory (default runs/<first recipe>)")
    parser.add_argument("--resume", nargs="?", const="yes", default="no", choices=("yes", "auto", "no"),
                        help="continue from <workdir>/checkpoints/last.pt ('auto': only if there is one)")
    args = parser.parse_args(argv)
    parse_gin(args.gin, args.gin_param)
    from unimask.train.trainer import NonFiniteLossError, Trainer

    workdir = args.workdir or os.path.join("runs", os.path.splitext(os.path.basename(args.gin[0]))[0])
    seed_for_init()
    trainer = Trainer()
    try:
        last = trainer.fit(workdir, resume={"yes": True, "no": False, "auto": "auto"}[args.resume])
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if trainer.dist.is_main:
        print(f"done: step {trainer.step}/{trainer.steps}, loss {last.get('loss', float('nan')):.4f}, "
              f"workdir {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
