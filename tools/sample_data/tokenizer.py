"""The VQ tokenizers the code-predicting recipes read, trained here once and shipped, so those
recipes run on a fresh clone without training one first: fashion_vq512.pt (norm-pix patches,
BEiT v2-style targets: gin/beit_v2_tiny.gin) and fashion_vq512_pixels.pt (raw pixels, so codes
decode back to a picture: masked generation, gin/maskgit_cpu.gin).

Each is its recipe trained with the project's trainer on the bundled Fashion-MNIST
sample (tools/sample_data/images.py), 1500 steps (500 for the pixel one, which starts from the
other; a few CPU-minutes), then saved without the
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
# name -> (recipe, steps, extra bindings). The pixel tokenizer starts from the norm-pix one (same
# encoder and codebook; its decoder learns to give the patches' mean and spread back), so it
# needs a third of the steps: built after it, in this order.
TOKENIZERS = {"fashion_vq512.pt": ("gin/vq_tokenizer.gin", 1500, ()),
              "fashion_vq512_pixels.pt": ("gin/vq_tokenizer_pixels.gin", 500,
                                          ("train.init_from='data/sample/tokenizers/fashion_vq512.pt'",))}


def build(out_dir: Path, names=tuple(TOKENIZERS), steps=None) -> list:
    """Train each tokenizer into a temporary run, write out_dir/<name> -> a summary per file."""
    out = []
    for name in names:
        recipe, default_steps, params = TOKENIZERS[name]
        out.append(build_one(out_dir, name, recipe, steps or default_steps, params))
    return out


def build_one(out_dir: Path, name: str, recipe: str, steps: int, params=()) -> dict:
    from unimask.train.checkpoint import load_checkpoint

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        # the training command as a user runs it; recipes name their data relative to the repository
        code = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), "--gin", recipe, "--workdir", workdir,
                               "--gin_param", f"train.steps={steps}",
                               "--gin_param", "train.progress_bar=False",
                               *[arg for param in params for arg in ("--gin_param", param)]], cwd=REPO).returncode
        if code != 0:
            raise RuntimeError(f"training {recipe} failed with exit code {code}")
        state = load_checkpoint(os.path.join(workdir, "checkpoints", "last.pt"))
    weights = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    path = out_dir / name
    torch.save({"model": weights, "config": state["config"], "step": state["step"]}, path)
    return {"path": str(path), "bytes": path.stat().st_size, "steps": state["step"]}


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "data" / "sample" / "tokenizers"
    print(build(out, names=tuple(sys.argv[2:]) or tuple(TOKENIZERS)))
