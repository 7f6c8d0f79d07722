"""Small builders shared by tests: tiny models, recipe runs and tools/ scripts as modules."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import gin
import numpy as np
import torch
from PIL import Image

from modalities.image import ImageAdapter
from unimask.decoders import MAEDecoder
from unimask.encoders import ViTEncoder
from unimask.masking import ConstantRatio, RandomMasker
from unimask.models.masked import MaskedModel
from unimask.targets import PixelTarget

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "gin", "smoke.gin")


def load_tool(name):
    """tools/<name>.py as a module, imported from its path (tools/eval.py must not shadow eval)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def tiny_image_model(mode="drop", ratio=0.75, norm_pix=True, masker=None, dim=32, img_size=16, patch=4, chans=3,
                     target=None, **kw):
    adapter = ImageAdapter(img_size=img_size, patch_size=patch, in_chans=chans, dim=dim)
    decoder = MAEDecoder(in_dim=dim, dim=dim, depth=1, num_heads=2) if mode == "drop" else \
        MAEDecoder(in_dim=dim, dim=dim, depth=0, remask=False, use_pos=False)
    return MaskedModel(adapter, masker or RandomMasker(), ConstantRatio(ratio), ViTEncoder(dim=dim, depth=2, num_heads=2),
                       decoder, target=target or PixelTarget(norm_pix=norm_pix), mode=mode, **kw)


def overfit(model, batch, steps: int, lr: float, seeds=None, params=None) -> tuple:
    """AdamW steps on one batch (the learning checks) -> (the loss of every step, the last
    StepOutput). seeds: step i draws its mask with a generator seeded i % seeds (None: none)."""
    optimizer = torch.optim.AdamW(model.parameters() if params is None else params, lr=lr)
    losses = []
    for step in range(steps):
        out = model(batch, generator=torch.Generator().manual_seed(step % seeds) if seeds else None)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    return losses, out


def run_train(args):
    """tools/train.py main() in-process; returns the exit code."""
    import train

    gin.clear_config()
    return train.main(args)


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def fast_params(*extra):
    """Bindings that keep a smoke run quick and single-threaded in tests."""
    params = ["train.num_workers=0", "train.precision='fp32'", "train.progress_bar=False"]
    return sum((["--gin_param", p] for p in params + list(extra)), [])


def image_batch(batch=4, chans=3, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(batch, chans, size, size, generator=gen)}


# ---- the CLI as users run it: a subprocess, workers on, a timeout ----------------------------------
RECIPE = ["--gin", "gin/image_mae_cpu.gin", "--gin", "gin/smoke.gin"]
WORKERS = ["train.num_workers=1", "train.precision='fp32'", "train.progress_bar=False"]
TIMEOUT_S = 120  # a hang shows as a timeout; a healthy failing run exits in a few seconds


def cli(args, params=(), timeout=TIMEOUT_S, env=None, module=None):
    """Run tools/train.py (or `python -m module`) as a subprocess -> (returncode, output, seconds)."""
    binding = sum((["--gin_param", p] for p in params), [])
    cmd = [sys.executable, *(["-m", module] if module else []), *args, *binding]
    start = time.time()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))
    return result.returncode, result.stdout + result.stderr, time.time() - start


def train_cli(workdir, *params, extra=()):
    return cli(["tools/train.py", *RECIPE, "--workdir", str(workdir), *extra], WORKERS + list(params))


def write_pngs(folder, names, size=32, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(os.path.join(folder, name))
