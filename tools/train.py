#!/usr/bin/env python
"""Train any recipe: python tools/train.py --gin gin/video_mae.gin [--gin gin/smoke.gin]
[--gin_param 'train.steps=200'] [--workdir runs/x] [--resume | --resume auto]

--resume continues from <workdir>/checkpoints/last.pt and fails when there is none; --resume
auto continues when there is one and starts fresh otherwise (torchrun --max-restarts jobs and
preemptible queues pass it on every start). A run from scratch into a workdir that holds
checkpoints is refused unless --overwrite; two runs never share a workdir (it is locked)."""
from __future__ import annotations

import argparse
import os
import signal
import sys

from unimask.cli import parse_gin, seed_for_init


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gin", action="append", required=True, help="gin file (repeatable, later wins)")
    parser.add_argument("--gin_param", action="append", default=[], help="gin binding (repeatable)")
    parser.add_argument("--workdir", default=None, help="run directory (default runs/<first recipe>)")
    parser.add_argument("--resume", nargs="?", const="yes", default="no", choices=("yes", "auto", "no"),
                        help="continue from <workdir>/checkpoints/last.pt ('auto': only if there is one)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in a workdir that holds an earlier run: its checkpoints and metrics are "
                             "deleted (without it such a run is refused)")
    args = parser.parse_args(argv)
    parse_gin(args.gin, args.gin_param)
    from unimask.safe_config import UnsafeConfigError
    from unimask.safe_load import UnsafeFileError
    from unimask.train.checkpoint import CheckpointError
    from unimask.train.durable import SaveError
    from unimask.train.trackers import TrackerError
    from unimask.train.trainer import NonFiniteLossError, Trainer
    from unimask.train.workdir import DataChangedError, WorkdirError
    from unimask.weights.load import WeightsError

    workdir = args.workdir or os.path.join("runs", os.path.splitext(os.path.basename(args.gin[0]))[0])
    seed_for_init()
    if hasattr(signal, "SIGXFSZ"):  # a file size limit fails the write (a clear SaveError), not the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        trainer = Trainer()
        last = trainer.fit(workdir, resume={"yes": True, "no": False, "auto": "auto"}[args.resume],
                           overwrite=args.overwrite)
    except (NonFiniteLossError, WorkdirError, DataChangedError, CheckpointError, SaveError, WeightsError,
            UnsafeConfigError, UnsafeFileError, TrackerError, OSError) as err:  # OSError: a full disk, a missing file
        print(f"error: {err}", file=sys.stderr)
        return 1
    if trainer.dist.is_main:
        print(f"done: step {trainer.step}/{trainer.steps}, loss {last.get('loss', float('nan')):.4f}, "
              f"workdir {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
