"""Run-directory logging: metrics.jsonl, TensorBoard (when installed), run.json."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata


class MetricsLog:
    """Appends one JSON object per row; mirrors scalars and images to TensorBoard."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(workdir, "tb"))
            except Exception:  # tensorboard is optional
                self.tb = None

    def write(self, row: dict):
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["step"])
            self.tb.flush()

    def image(self, tag: str, png_path: str, step: int):
        if self.tb is None:
            return
        import numpy as np
        from PIL import Image

        self.tb.add_image(tag, np.asarray(Image.open(png_path).convert("RGB")), step, dataformats="HWC")

    def close(self):
        if self.tb is not None:
            self.tb.close()


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
    with open(os.path.join(workdir, "run.json"), "w") as f:
        json.dump(info, f, indent=2)
