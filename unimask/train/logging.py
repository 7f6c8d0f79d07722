"""Run-directory logging: metrics.jsonl, TensorBoard (when installed), run.json, and the
experiment trackers `train.loggers` names (unimask/train/trackers.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from typing import Optional

from unimask.train.trackers import check_loggers, open_trackers


class MetricsLog:
    """Appends one JSON object per row; mirrors scalars and figures to TensorBoard and to the
    trackers in loggers (train.loggers: 'tensorboard', 'wandb', 'mlflow'), which also get the gin
    config; rank 0 only (enabled=False elsewhere).

    resumed_at: the step a resumed run continues from. Rows past it (steps the killed run did
    after its last checkpoint, which the resumed run does again) and a line torn by the kill are
    dropped first, so the file reads as one run."""

    def __init__(self, workdir: str, enabled: bool = True, resumed_at: Optional[int] = None,
                 loggers=("tensorboard",), config: str = ""):
        self.path, self.workdir = os.path.join(workdir, "metrics.jsonl"), workdir
        self.enabled = enabled
        self.tb, self.trackers = None, []
        if enabled and resumed_at is not None and os.path.exists(self.path):
            self.truncate_after(resumed_at)
        if enabled:
            self.trackers = open_trackers(check_loggers(loggers), workdir, config, resumed_at or 0)
        if enabled and "tensorboard" in loggers:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(workdir, "tb"))
            except Exception:  # tensorboard is optional
                self.tb = None

    def truncate_after(self, step: int):
        rows = []
        with open(self.path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # torn by a kill mid-write
                    continue
                if row.get("step", 0) <= step:
                    rows.append(line if line.endswith("\n") else line + "\n")
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.writelines(rows)
        except OSError:  # a full disk: leave no half-written copy behind
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        os.replace(tmp, self.path)

    def write(self, row: dict):
        if not self.enabled:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:  # one write() of the whole line: a kill leaves the line out, not half of it
            os.write(fd, (json.dumps(row) + "\n").encode())
        finally:
            os.close(fd)
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["step"])
            self.tb.flush()
        for tracker in self.trackers:
            tracker.metrics(row)

    def image(self, tag: str, png_path: str, step: int):
        """An evaluation figure: its step written on it (a PNG copied out of the run still says
        when it was drawn), then mirrored to TensorBoard."""
        if not self.enabled:
            return
        import numpy as np

        picture = stamp_step(png_path, step)
        if self.tb is not None:
            self.tb.add_image(tag, np.asarray(picture), step, dataformats="HWC")
        for tracker in self.trackers:
            tracker.figure(tag, png_path, step)

    def close(self, finished: bool = True, complete: bool = True):
        """finished: this process ended without an error; complete: and trained to train.steps
        (not stopped by a signal or train.stop_at), so that its checkpoint is the final one,
        which the trackers upload when trackers.log_checkpoint."""
        if self.tb is not None:
            self.tb.close()
        last = os.path.join(self.workdir, "checkpoints", "last.pt")
        for tracker in self.trackers:
            tracker.close(finished, last if complete and os.path.exists(last) else None)


def stamp_step(png_path: str, step: int):
    """Rewrite the PNG with a 'step N' strip on top (and N in its 'step' text, beside the panel
    titles the figure may carry) -> the new picture, RGB."""
    from PIL import Image, ImageDraw, PngImagePlugin

    with Image.open(png_path) as source:
        picture, text = source.convert("RGB"), dict(source.text)
    out = Image.new("RGB", (picture.width, picture.height + 14), "white")
    out.paste(picture, (0, 14))
    ImageDraw.Draw(out).text((2, 1), f"step {step}", fill="black")
    info = PngImagePlugin.PngInfo()
    for key, value in {**text, "step": str(step)}.items():
        info.add_text(key, value)
    out.save(png_path, pnginfo=info)
    return out


def read_metrics(path: str) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def package_versions() -> dict:
    names = ("torch", "torchvision", "torchaudio", "timm", "torch-geometric", "gin-config", "numpy", "decord", "av")
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except Exception:
        return ""


def write_run_info(workdir: str, **info):
    info.update(command=" ".join(sys.argv), versions=package_versions(), git_commit=git_commit())
    from unimask.train.workdir import replace_file

    replace_file(os.path.join(workdir, "run.json"), json.dumps(info, indent=2))
