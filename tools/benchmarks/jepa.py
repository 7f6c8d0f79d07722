"""tools/bench.py jepa: what latent prediction costs against MAE with the same encoder.

Training steps (forward, backward, AdamW step, zero_grad, after_step: the EMA teacher's update on
the JEPA side) of gin/ijepa_cpu.gin (or --jepa-gin: gin/dmt_jepa_cpu.gin, gin/capi_cpu.gin) and
gin/image_mae_cpu.gin, which share the encoder (ViT 6 x 192 on 28 px, patch 4: 49 tokens); I-JEPA
adds an EMA teacher pass over all 49 tokens and a 2 x 128 predictor over one sequence per target
block, MAE a 2 x 128 decoder over all tokens. Both are built from their recipes by gin, get the
same images, each its own masker, and are timed interleaved in one process (measure.py), so load
on the machine hits both alike. Prints one line per side, then `ratio_jepa_vs_mae=X.XX`: the
median JEPA step time over the median MAE step time (above 1: JEPA is slower per step).
"""
from __future__ import annotations

import os
import statistics

import torch

from benchmarks.measure import Gemm, Timed, gemm_dtype, median_ms, time_interleaved
from unimask.cli import REPO_ROOT

MAE_RECIPE = "gin/image_mae_cpu.gin"


def add_options(parser):
    parser.add_argument("--jepa-gin", default="gin/ijepa_cpu.gin",
                        help="the latent-prediction recipe (its encoder must be image_mae_cpu's)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default: the recipes' 128)")
    parser.add_argument("--smoke", action="store_true", help="both recipes under gin/smoke.gin (tiny, for tests)")
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own; 1 gives stable ratios on a shared machine)")


def build(recipe: str, smoke: bool):
    """The recipe's model (train.model, seeded as the trainer seeds it) and its batch size."""
    import gin

    from unimask.cli import parse_gin, seed_for_init

    files = [os.path.join(REPO_ROOT, recipe)] + ([os.path.join(REPO_ROOT, "gin", "smoke.gin")] if smoke else [])
    gin.clear_config()
    parse_gin(files, ["train.num_workers=0"])
    seed_for_init()
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    batch = gin.query_parameter("train.batch_size")
    gin.clear_config()
    return model, batch


def training_step(model, batch: dict, device, precision: str):
    """One full training step of `model` on `batch` -> a function returning the loss; a fresh mask
    every step (a CPU generator, as the trainer's), the model's after_step included."""
    from unimask.optim import make_optimizer
    from unimask.train.precision import autocast

    optimizer = make_optimizer(model, 1e-4, 0.05, (0.9, 0.95), device)
    seeds = iter(range(1 << 30))

    def step():
        with autocast(precision, device):
            out = model(batch, progress=0.5, generator=torch.Generator().manual_seed(next(seeds)))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.after_step(0.5)
        return out.loss
    return step


def bench_jepa(args) -> float:
    from unimask.train.precision import resolve_device, resolve_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    jepa, batch_size = build(args.jepa_gin, args.smoke)
    mae, _ = build(MAE_RECIPE, args.smoke)
    if jepa.encoder.dim != mae.encoder.dim or jepa.encoder.block_count() != mae.encoder.block_count():
        raise SystemExit(f"{args.jepa_gin} and {MAE_RECIPE} build different encoders: nothing to compare")
    batch_size = args.batch or batch_size
    adapter = mae.adapter
    images = torch.randn(batch_size, adapter.in_chans, adapter.img_size, adapter.img_size,
                         generator=torch.Generator().manual_seed(0)).to(device)
    batch = {adapter.batch_key: images}
    sides = [Timed(os.path.basename(args.jepa_gin), training_step(jepa.to(device).train(), batch, device, precision)),
             Timed(os.path.basename(MAE_RECIPE), training_step(mae.to(device).train(), batch, device, precision))]
    print(f"device {device}, precision {precision}, torch threads {torch.get_num_threads()}, batch {batch_size}"
          f"{' (under gin/smoke.gin)' if args.smoke else ''}; encoder {jepa.encoder.dim} x "
          f"{jepa.encoder.block_count()} on both sides")
    for side, model in zip(sides, (jepa, mae)):
        trained = sum(p.numel() for g in model.param_groups(0.05) for p in g["params"])
        print(f"{side.name:18s} first-step loss {float(side.step().detach()):.4f}, {trained / 1e6:.2f} M trained "
              f"parameters")
    gemm = Gemm(gemm_dtype(precision), device)
    time_interleaved(sides, args.steps, args.warmup, device, gemm)
    for side in sides:
        print(f"{side.name:18s} step median {median_ms(side.times):8.1f} ms (min {1000 * min(side.times):.1f}, max "
              f"{1000 * max(side.times):.1f}, {len(side.times)} steps; process CPU time median "
              f"{1000 * statistics.median(side.cpu_times):.1f} ms)  {batch_size / side.median:8.1f} images/s")
    print(f"practical peak: {gemm.size}^3 GEMM, median of {len(gemm.rates)} timed between the steps: "
          f"{gemm.gflops():.1f} GFLOP/s")
    ratio = sides[0].median / sides[1].median
    print(f"(from the fastest steps instead of the medians: {min(sides[0].times) / min(sides[1].times):.2f})")
    print(f"ratio_jepa_vs_mae={ratio:.2f}")
    return ratio
