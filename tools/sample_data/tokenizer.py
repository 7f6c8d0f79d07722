"""The VQ tokenizer BEiT v2-style recipes read (gin/beit_v2_tiny.gin), trained here once and
shipped, so the recipe runs on a fresh clone without training one first.

It is gin/vq_tokenizer.gin trained with the project's trainer on the bundled Fashion-MNIST
sample (tools/sample_data/images.py), 1500 steps (a few CPU-minutes), then saved without the
optimizer state and in half precision (1.4 MB; TokenTarget casts it back): the model weights and
the gin config, which is all tools/eval.py / TokenTarget read.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
RECIPE = "gin/vq_tokenizer.gin"
NAME = "fashion_vq512.pt"


def build(out_dir: Path, steps: int = 1500) -> dict:
    """Train the tokenizer into a temporary run, write out_dir/fashion_vq512.pt -> a summary."""
    from unimask.train.checkpoint import load_checkpoint

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        # the training command as a user runs it; recipes name their data relative to the repository
        code = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), "--gin", RECIPE, "--workdir", workdir,
                               "--gin_param", f"train.steps={steps}",
                               "--gin_param", "train.progress_bar=False"], cwd=REPO).returncode
        if code != 0:
            raise RuntimeError(f"training {RECIPE} failed with exit code {code}")
        state = load_checkpoint(os.path.join(workdir, "checkpoints", "last.pt"))
    weights = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    path = out_dir / NAME
    torch.save({"model": weights, "config": state["config"], "step": state["step"]}, path)
    return {"path": str(path), "bytes": path.stat().st_size, "steps": state["step"]}


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "data" / "sample" / "tokenizers"))
