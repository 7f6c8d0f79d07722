#!/usr/bin/env python
"""Benchmarks: unimask against Hugging Face transformers (VideoMAE, image MAE), the video data
loader against a plain decord loader, the maskers and the attention kernels.

  python tools/bench.py videomae --vs hf [--dual-mask] [--checkpointing] [--compile] [--profile]
                                 [--steps 10] [--warmup 2] [--precision auto|fp32|bf16] [--threads N]
  python tools/bench.py imagemae --vs hf [--config base|cpu] [same options]
  python tools/bench.py data --vs reference [--workers 0 1 2] [--repeats 1] [--sample] [--train-rates]
  python tools/bench.py data --modality image --vs torchvision [--root DIR] [--output uint8|float] [--draft]
  python tools/bench.py data --source shards [--modality image|video] [--workers 0 1 2] [--sample]
  python tools/bench.py masking
  python tools/bench.py attention [--precision bf16|fp32] [--threads N]
  python tools/bench.py trace [--gin gin/image_mae_cpu.gin] [--sequence]
  python tools/bench.py jepa [--jepa-gin gin/ijepa_cpu.gin] [--steps 10] [--threads N] [--smoke]

`videomae` builds the same VideoMAE (ViT-S encoder 384 x 12, decoder 192 x 4, 16 x 224^2
clips, tubelet 2 x 16 x 16, 90% tube mask, per-channel norm-pix MSE, AdamW) in unimask and in
transformers (`VideoMAEForPreTraining`, SDPA attention); `imagemae` the MAE ViT-B/16 at 224 px
(75% random mask, decoder 8 x 512, norm-pix, batch 8) or with `--config cpu` the CPU recipe's
ViT (28 px, patch 4, 6 x 192, decoder 2 x 128, batch 128) against `ViTMAEForPreTraining`, whose
`noise` argument is set so it hides the very tokens unimask hides (checked every step). Both
sides get the same inputs and the same mask and are timed as full training steps (forward,
backward, optimizer step, zero_grad) interleaved in one process. The last line is
`ratio_vs_hf=X.XX` (unimask samples/s over HF samples/s; `_dual` with VideoMAE v2 decoder
masking on the unimask side only, `_compiled` with --compile). `--checkpointing` adds a third
side, unimask with train.activation_checkpointing, and prints its step-time and memory
factors. See docs/performance.md for measured figures.

On a CPU shared with other jobs, `--threads 1` gives stable ratios: with 2 threads every
parallel region waits for the sibling thread whenever the other core is taken.
"""
from __future__ import annotations

import argparse
import os
import sys

from unimask.cli import REPO_ROOT as ROOT


def pair_options(parser, default_batch_help: str):
    parser.add_argument("--vs", choices=["hf"], default="hf")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--batch", type=int, default=None, help=default_batch_help)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile unimask's encoder and decoder")
    parser.add_argument("--checkpointing", action="store_true",
                        help="also time unimask with activation checkpointing (memory for compute)")
    parser.add_argument("--profile", action="store_true", help="print the top-10 ops of one step of each")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own; 1 gives stable ratios on a shared machine)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    video = sub.add_parser("videomae", help="unimask vs transformers VideoMAE training steps")
    pair_options(video, "clips per step (default 2)")
    video.add_argument("--dual-mask", action="store_true", help="VideoMAE v2 decoder masking (unimask side)")
    image = sub.add_parser("imagemae", help="unimask vs transformers ViTMAE training steps")
    pair_options(image, "images per step (default 8 for base, 128 for cpu)")
    image.add_argument("--config", choices=["base", "cpu"], default="base",
                       help="base: ViT-B/16 at 224 px; cpu: gin/image_mae_cpu.gin's ViT at 28 px")
    data = sub.add_parser("data", help="decoded + augmented clips/s: unimask's video loader vs a plain decord loop "
                                       "(--modality image --vs torchvision: images vs torchvision's MAE pipeline)")
    data.add_argument("--vs", choices=["reference", "torchvision"], default="reference")
    data.add_argument("--source", choices=["folder", "shards"], default="folder",
                      help="shards: the same files from the folder vs from tar shards packed from it (--vs unused)")
    data.add_argument("--modality", choices=["video", "image"], default="video")
    data.add_argument("--root", default=None, help="image: an ImageFolder tree of JPEGs instead of the built set")
    data.add_argument("--size", default="500x375", help="image: WxH of the built JPEGs")
    data.add_argument("--images", type=int, default=64, help="image: how many JPEGs to build")
    data.add_argument("--samples", type=int, default=256, help="image: samples per measurement")
    data.add_argument("--check", type=int, default=256, help="image: samples of the same-seed crop/pixel check")
    data.add_argument("--output", choices=["uint8", "float"], default="uint8", help="image: ImageDataset.output")
    data.add_argument("--draft", action="store_true", help="image: ImageDataset.draft (JPEG DCT-domain downscale)")
    data.add_argument("--rounds", type=int, default=3, help="image: interleaved timing rounds (the best counts)")
    data.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    data.add_argument("--batch", type=int, default=None, help="items per batch (default 2 clips, 32 images)")
    data.add_argument("--clips", type=int, default=16, help="items per measurement")
    data.add_argument("--repeats", type=int, default=1, help="clips per decoded video (repeated sampling)")
    data.add_argument("--num-frames", type=int, default=16)
    data.add_argument("--stride", type=int, default=4)
    data.add_argument("--img-size", type=int, default=224)
    data.add_argument("--min-scale", type=float, default=None, help="default 0.25 (video), 0.2 (image)")
    data.add_argument("--sample", action="store_true", help="the bundled 128 px sample clips instead")
    data.add_argument("--clips-dir", default=os.path.join(ROOT, "runs", "bench_clips"),
                      help="where the Kinetics-like clips are written (once)")
    data.add_argument("--backend", choices=["auto", "decord", "av"], default="auto",
                      help="unimask's decoder (av: the PyAV fallback, also timed seeking vs decoding from the start)")
    data.add_argument("--gop", type=int, default=250, help="key frame interval of the written clips")
    data.add_argument("--train-rates", action="store_true",
                      help="also time training steps of gin/video_mae_cpu.gin and gin/video_mae.gin")
    data.add_argument("--train-threads", type=int, default=None)
    masks = sub.add_parser("masking", help="each masker vs one ViT-S training step")
    masks.add_argument("--repeats", type=int, default=20)
    masks.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    masks.add_argument("--threads", type=int, default=None)
    attention = sub.add_parser("attention", help="SDPA flash vs matmul + softmax per sequence length")
    attention.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    attention.add_argument("--repeats", type=int, default=5)
    attention.add_argument("--threads", type=int, default=None)
    trace = sub.add_parser("trace", help="the project modules one training step visits, and its re-entries")
    trace.add_argument("--gin", default="gin/image_mae_cpu.gin", help="the recipe (run under gin/smoke.gin)")
    trace.add_argument("--gin_param", action="append", default=[], help="gin binding (repeatable)")
    trace.add_argument("--sequence", action="store_true", help="also print the whole module sequence")
    from benchmarks.jepa import add_options as jepa_options

    jepa_options(sub.add_parser("jepa", help="I-JEPA (or DMT-JEPA, CAPI) training steps vs MAE's, same encoder"))
    args = parser.parse_args(argv)
    if args.what == "trace":
        from benchmarks.trace import trace_step

        trace_step(args)
    elif args.what in ("videomae", "imagemae"):
        from benchmarks.pairs import run_pair

        run_pair(args, args.what)
    elif args.what == "jepa":
        from benchmarks.jepa import bench_jepa

        bench_jepa(args)
    elif args.what == "data" and args.source == "shards":
        from benchmarks.shard_data import bench_shards

        bench_shards(args)
    elif args.what == "data":
        from benchmarks.data import bench_data

        bench_data(args)
    else:
        from benchmarks.kernels import bench_attention, bench_masking

        {"masking": bench_masking, "attention": bench_attention}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
