#!/usr/bin/env python
"""Benchmarks: unimask vs Hugging Face VideoMAE, data loading, maskers.

  python tools/bench.py videomae --vs hf [--dual-mask] [--steps 10] [--warmup 2]
                                 [--precision auto|fp32|bf16] [--compile] [--profile] [--threads N]
  python tools/bench.py data [--workers N]
  python tools/bench.py masking
  python tools/bench.py attention [--precision bf16|fp32] [--threads N]

`videomae` builds the same VideoMAE (ViT-S encoder 384 x 12, decoder 192 x 4, 16 x 224^2
clips, tubelet 2 x 16 x 16, 90% tube mask, per-channel norm-pix MSE, AdamW) in unimask and in
transformers (`VideoMAEForPreTraining`, SDPA attention), feeds both the same clips and the
same hidden-token map, and times full training steps (forward, backward, optimizer step,
zero_grad) interleaved in one process. The last line is `ratio_vs_hf=X.XX` (unimask clips/s
over HF clips/s), or `ratio_vs_hf_dual=X.XX` with `--dual-mask` (VideoMAE v2 decoder
masking on the unimask side only). See docs/performance.md for measured figures.

On a CPU shared with other jobs, `--threads 1` gives stable ratios: with 2 threads every
parallel region waits for the sibling thread whenever the other core is taken.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT  # noqa: E402,F401  (puts the repository on sys.path)

import torch  # noqa: E402

# ViT-S VideoMAE, as in the issue
CFG = dict(num_frames=16, img_size=224, patch=16, tubelet=2, enc_dim=384, enc_depth=12, enc_heads=6,
           dec_dim=192, dec_depth=4, dec_heads=3, mlp_ratio=4.0, mask_ratio=0.9, decoder_ratio=0.5,
           lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)


# ---- helpers -------------------------------------------------------------------------------
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(times):
    return 1000 * statistics.median(times)


class Gemm:
    """Practical peak: one large square matmul in the training dtype on the same device, timed
    between the training steps (same machine state) -> GFLOP/s per call."""

    def __init__(self, dtype, device):
        self.size = 8192 if device.type == "cuda" else 2048
        self.a = torch.randn(self.size, self.size, device=device, dtype=dtype)
        self.b = torch.randn(self.size, self.size, device=device, dtype=dtype)
        self.device, self.rates = device, []
        for _ in range(2):
            self.a @ self.b

    def time_once(self):
        sync(self.device)
        start = time.perf_counter()
        self.a @ self.b
        sync(self.device)
        self.rates.append(2 * self.size ** 3 / (time.perf_counter() - start) / 1e9)

    def gflops(self) -> float:
        return statistics.median(self.rates)


def count_flops(step):
    """FLOPs of one call of `step` (matmuls, convolutions, attention) by FlopCounterMode -> (flops, its result)."""
    from torch.utils import flop_counter

    aten = torch.ops.aten

    def cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    def cpu_attention_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    # the CPU flash-attention kernels have no formula in torch's registry: same count as CUDA's
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_attention_backward})
    with counter:
        result = step()
    return float(counter.get_total_flops()), result


def peak_memory(step, device):
    """Peak bytes of live tensors during one call of `step`, and how it was measured.

    CUDA: torch.cuda.max_memory_allocated. CPU: the torch profiler's memory timeline (every
    tensor allocation and free of the step, plus the tensors that existed before and were
    used in it: parameters, gradients, optimizer state, inputs), i.e. the CPU analogue of
    max_memory_allocated; allocator caches and library scratch space are not included.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, MemoryProfile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    live, peak = 0, 0
    for _, action, _, size in MemoryProfile(prof.profiler.kineto_results).timeline:
        if action in (Action.PREEXISTING, Action.CREATE):
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak, "live tensor bytes from the torch.profiler memory timeline"


def top_ops(step, title, rows=10):
    """torch.profiler table of the `rows` ops with most self CPU time in one call of `step`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(f"\n== profile: {title} (one training step, top {rows} ops by self CPU time) ==")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))


# ---- the two models ------------------------------------------------------------------------
def build_unimask(dual: bool):
    from modalities.video import VideoAdapter
    from unimask.decoders import MAEDecoder
    from unimask.encoders import ViTEncoder
    from unimask.losses import MSELoss
    from unimask.masking import ConstantRatio, RunningCellMasker, TubeMasker
    from unimask.model import MaskedModel
    from unimask.targets import PixelTarget

    c = CFG
    model = MaskedModel(
        VideoAdapter(num_frames=c["num_frames"], img_size=c["img_size"], patch_size=c["patch"],
                     tubelet_size=c["tubelet"], dim=c["enc_dim"]),
        TubeMasker(), ConstantRatio(c["mask_ratio"]),
        ViTEncoder(dim=c["enc_dim"], depth=c["enc_depth"], num_heads=c["enc_heads"], mlp_ratio=c["mlp_ratio"]),
        MAEDecoder(in_dim=c["enc_dim"], dim=c["dec_dim"], depth=c["dec_depth"], num_heads=c["dec_heads"],
                   mlp_ratio=c["mlp_ratio"]),
        target=PixelTarget(norm_pix=True, per_channel=True), loss=MSELoss(), mode="drop",
        decoder_masker=RunningCellMasker() if dual else None, decoder_ratio=c["decoder_ratio"])
    return model


def build_hf():
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    c = CFG
    config = VideoMAEConfig(image_size=c["img_size"], patch_size=c["patch"], num_channels=3, num_frames=c["num_frames"],
                            tubelet_size=c["tubelet"], hidden_size=c["enc_dim"], num_hidden_layers=c["enc_depth"],
                            num_attention_heads=c["enc_heads"], intermediate_size=int(c["enc_dim"] * c["mlp_ratio"]),
                            decoder_hidden_size=c["dec_dim"], decoder_num_hidden_layers=c["dec_depth"],
                            decoder_num_attention_heads=c["dec_heads"],
                            decoder_intermediate_size=int(c["dec_dim"] * c["mlp_ratio"]),
                            norm_pix_loss=True, use_mean_pooling=False, qkv_bias=True)
    return VideoMAEForPreTraining._from_config(config, attn_implementation="sdpa")


def hf_optimizer(model, device):
    """What transformers' Trainer builds by default: AdamW (fused on torch >= 2.8), no decay on
    biases and LayerNorm weights."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    c = CFG
    return torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]},
                              {"params": no_decay, "weight_decay": 0.0}], lr=c["lr"], betas=c["betas"], fused=True)


# ---- videomae ------------------------------------------------------------------------------
def bench_videomae(args):
    from unimask.tokens import Mask
    from unimask.train.optim import make_optimizer
    from unimask.train.precision import autocast, resolve_device, resolve_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    torch.manual_seed(0)
    c = CFG
    ours = build_unimask(args.dual_mask).to(device)
    hf = build_hf().to(device)
    ours.train(), hf.train()
    opt_ours = make_optimizer(ours, c["lr"], c["weight_decay"], c["betas"], device)
    opt_hf = hf_optimizer(hf, device)

    # one batch of clips, one 90% tube mask; both models see exactly these
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(args.batch, 3, c["num_frames"], c["img_size"], c["img_size"], generator=gen).to(device)
    batch = {"video": video}
    pixel_values = video.permute(0, 2, 1, 3, 4).contiguous()  # HF layout [B, T, C, H, W]
    tokens = ours.adapter.tokenize(batch)
    drawn = ours.masker(tokens, c["mask_ratio"], gen)
    bool_masked_pos = drawn.masked  # [B, N] True = hidden
    mask = Mask.from_hidden(bool_masked_pos, tokens.valid_mask(), drawn.ratio)
    n_tokens, n_visible = tokens.num_tokens, int((~bool_masked_pos[0]).sum())
    mask_gen = torch.Generator().manual_seed(1)

    def ours_mask():
        if not args.dual_mask:
            return mask
        return ours.add_decoder_mask(tokens, dataclasses.replace(mask, decode=None), mask_gen)

    def step_ours():
        with autocast(precision, device):
            out = ours(batch, mask=ours_mask())
        out["loss"].backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)
        return out["loss"]

    def step_hf():
        with autocast(precision, device):
            out = hf(pixel_values=pixel_values, bool_masked_pos=bool_masked_pos)
        out.loss.backward()
        opt_hf.step()
        opt_hf.zero_grad(set_to_none=True)
        return out.loss

    print(f"device {device}, precision {precision}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{n_tokens} tokens, {n_visible} visible, torch {torch.__version__}")
    if args.dual_mask:
        decode = ours_mask().decode
        print(f"dual masking (unimask only): decoder sees {int((~bool_masked_pos[0] | decode[0]).sum())} of "
              f"{n_tokens} tokens, loss over {int(decode[0].sum())}")
    gemm = Gemm(torch.bfloat16 if precision == "bf16" else torch.float16 if precision == "fp16" else torch.float32,
                device)
    counted = {"unimask": count_flops(step_ours), "hf": count_flops(step_hf)}  # eager: same math either way
    flops = {name: value[0] for name, value in counted.items()}
    print(f"first-step loss (each library's own init, norm-pix targets): unimask "
          f"{float(counted['unimask'][1].detach()):.4f}, hf {float(counted['hf'][1].detach()):.4f}")
    if args.compile:
        ours.encoder.compile()
        ours.decoder.compile()
        start = time.perf_counter()
        step_ours()
        print(f"torch.compile of unimask's encoder and decoder: first step {time.perf_counter() - start:.1f} s")
    steps = {"unimask": step_ours, "hf": step_hf}
    for _ in range(args.warmup):
        step_ours()
        step_hf()
    times = {"unimask": [], "hf": []}
    cpu_times = {"unimask": [], "hf": []}
    for i in range(args.steps):
        order = ("unimask", "hf") if i % 2 == 0 else ("hf", "unimask")
        for name in order:
            sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            steps[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)
        gemm.time_once()
    memory = {name: peak_memory(steps[name], device) for name in ("unimask", "hf")}
    peak = gemm.gflops()
    print(f"practical peak: {gemm.size}^3 GEMM in {precision}, median of {len(gemm.rates)} timed between the "
          f"steps: {peak:.1f} GFLOP/s")
    rate = {}
    for name in ("unimask", "hf"):
        med = statistics.median(times[name])
        rate[name] = args.batch / med
        achieved = flops[name] / med / 1e9
        print(f"{name:8s} step median {1000 * med:8.1f} ms (min {1000 * min(times[name]):.1f}, max "
              f"{1000 * max(times[name]):.1f}, {len(times[name])} steps; process CPU time median "
              f"{1000 * statistics.median(cpu_times[name]):.1f} ms)  {rate[name]:6.3f} clips/s  "
              f"{flops[name] / 1e9:6.1f} GFLOP/step  {achieved:6.1f} GFLOP/s = {100 * achieved / peak:5.1f}% of GEMM  "
              f"peak mem {memory[name][0] / 2**20:7.1f} MiB")
    print(f"peak memory: unimask {memory['unimask'][0] / max(1, memory['hf'][0]):.2f}x HF "
          f"({memory['unimask'][1]})")
    if args.profile:
        top_ops(step_ours, "unimask")
        top_ops(step_hf, "hf")
    ratio = rate["unimask"] / rate["hf"]
    print(f"(from the fastest steps instead of the medians: {min(times['hf']) / min(times['unimask']):.2f}; "
          f"from process CPU time: {statistics.median(cpu_times['hf']) / statistics.median(cpu_times['unimask']):.2f})")
    print(f"ratio_vs_hf{'_dual' if args.dual_mask else ''}={ratio:.2f}")


# ---- data ----------------------------------------------------------------------------------
def bench_data(args):
    from modalities.video import VideoDataset

    dataset = VideoDataset(root=os.path.join(ROOT, "data", "sample", "video", "train.csv"), num_frames=16,
                           sampling_rate=4, img_size=224)
    indices = [i % len(dataset) for i in range(args.clips)]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=args.batch,
                                         num_workers=args.workers, persistent_workers=False)
    start, seen, first = time.perf_counter(), 0, None
    for batch in loader:
        if first is None:
            first = time.perf_counter() - start
        seen += batch["video"].shape[0]
    elapsed = time.perf_counter() - start
    print(f"{seen} clips of {tuple(batch['video'].shape[1:])} (16 frames x stride 4, RandomResizedCrop 224 + flip) "
          f"from {len(dataset)} sample videos, {args.workers} workers, batch {args.batch}: {elapsed:.2f} s "
          f"(first batch after {first:.2f} s)")
    print(f"data_clips_per_s={seen / elapsed:.2f}")


# ---- masking -------------------------------------------------------------------------------
def bench_masking(args):
    import inspect

    import unimask.masking as masking
    from unimask.masking import Masker
    from unimask.tokens import Tokens

    if args.threads:
        torch.set_num_threads(args.threads)
    batch, grid, p = 2, (8, 14, 14), 2 * 16 * 16 * 3
    n = grid[0] * grid[1] * grid[2]
    coords = torch.stack(torch.meshgrid(*[torch.arange(g, dtype=torch.float32) for g in grid], indexing="ij"), -1)
    tokens = Tokens(torch.randn(batch, n, p), coords.reshape(1, n, 3).expand(batch, -1, -1), grid=grid,
                    patch_shape=(2, 16, 16, 3))
    # for maskers of token groups: 4 groups of 2 time slots each, group-major like a (groups, H, W) grid
    grouped = tokens.replace(group=torch.arange(n) // (n // 4))
    # one unimask ViT-S training step as the yardstick
    from unimask.train.optim import make_optimizer
    from unimask.train.precision import autocast, resolve_precision

    device = torch.device("cpu")
    precision = resolve_precision(args.precision, device)
    model = build_unimask(False)
    opt = make_optimizer(model, CFG["lr"], CFG["weight_decay"], CFG["betas"], device)
    video = {"video": torch.randn(batch, 3, 16, 224, 224)}

    def step():
        with autocast(precision, device):
            out = model(video, generator=torch.Generator().manual_seed(0))
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    step_times = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        step_times.append(time.perf_counter() - start)
    step_s = statistics.median(step_times)
    print(f"one ViT-S VideoMAE training step (B={batch}, N={n}, {precision}): {1000 * step_s:.1f} ms")
    worst, worst_learned = 0.0, 0.0
    for name in sorted(dir(masking)):
        cls = getattr(masking, name)
        if not (inspect.isclass(cls) and issubclass(cls, Masker) and cls is not Masker):
            continue
        kwargs, note = {}, ""
        try:
            if getattr(cls, "needs_features", False):  # learned maskers score the embedded tokens
                masker = cls(dim=CFG["enc_dim"])
                kwargs = {"features": torch.randn(batch, n, CFG["enc_dim"])}
                note = f"  (forward of its {CFG['enc_dim']}-wide scorer on all tokens included)"
            else:
                masker = cls()
            gen = torch.Generator().manual_seed(0)
            these = tokens
            try:
                masker(these, 0.9, gen, **kwargs)
            except ValueError as err:
                if "group" not in str(err):
                    raise
                these, note = grouped, "  (tokens in 4 groups of 2 time slots)"
                masker(these, 0.9, gen, **kwargs)
        except Exception as err:  # a masker that needs settings this generic call does not give
            print(f"{name:24s} skipped: {type(err).__name__}: {err}")
            continue
        times = []
        for i in range(args.repeats):
            start = time.perf_counter()
            masker(these, 0.9, gen, **kwargs)
            times.append(time.perf_counter() - start)
        ms = median_ms(times)
        share = 100 * ms / 1000 / step_s
        if kwargs:
            worst_learned = max(worst_learned, share)
        else:
            worst = max(worst, share)
        print(f"{name:24s} {ms:8.3f} ms per mask of B={batch} x N={n} = {share:.3f}% of a training step{note}")
    if worst_learned:
        print(f"learned maskers (a scoring network, part of the model): up to {worst_learned:.2f}% of a step")
    print(f"masking_max_pct_of_step={worst:.3f}")


# ---- attention kernels ---------------------------------------------------------------------
ATTENTION_SHAPES = [(128, 3, 12, 64), (128, 4, 49, 32), (2, 6, 157, 64), (8, 6, 196, 64), (2, 6, 400, 64),
                    (2, 3, 1568, 64)]  # [B, heads, tokens, head dim]: CPU MAE recipes and the ViT-S benchmark


def bench_attention(args):
    """SDPA's flash kernel vs plain matmul + softmax, forward + backward, per shape: the data
    behind unimask.encoders.CPU_LOW_PRECISION_MATH_BELOW."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from unimask.transformer import CPU_LOW_PRECISION_MATH_BELOW

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.precision]
    print(f"{args.precision}, {torch.get_num_threads()} threads; unimask uses math below "
          f"{CPU_LOW_PRECISION_MATH_BELOW} tokens in bf16/fp16 on CPU")
    for shape in ATTENTION_SHAPES:
        q, k, v = (torch.randn(*shape, dtype=dtype, requires_grad=True) for _ in range(3))
        ms = {}
        for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)):
            with sdpa_kernel(backend):
                times = []
                for i in range(args.repeats + 2):
                    start = time.perf_counter()
                    F.scaled_dot_product_attention(q, k, v).sum().backward()
                    times.append(time.perf_counter() - start)
                ms[name] = 1000 * statistics.median(times[2:])
        print(f"{str(list(shape)):22s} fwd+bwd flash {ms['flash']:8.2f} ms   math {ms['math']:8.2f} ms   "
              f"faster: {min(ms, key=ms.get)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    video = sub.add_parser("videomae", help="unimask vs transformers VideoMAE training steps")
    video.add_argument("--vs", choices=["hf"], default="hf")
    video.add_argument("--dual-mask", action="store_true", help="VideoMAE v2 decoder masking (unimask side)")
    video.add_argument("--steps", type=int, default=10, help="timed steps per model")
    video.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    video.add_argument("--batch", type=int, default=2)
    video.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    video.add_argument("--device", default="auto")
    video.add_argument("--compile", action="store_true", help="torch.compile unimask's encoder and decoder")
    video.add_argument("--profile", action="store_true", help="print the top-10 ops of one step of each")
    video.add_argument("--threads", type=int, default=None,
                       help="torch threads (default: torch's own; 1 gives stable ratios on a shared machine)")
    data = sub.add_parser("data", help="decoded + augmented clips/s from the sample videos")
    data.add_argument("--workers", type=int, default=2)
    data.add_argument("--batch", type=int, default=2)
    data.add_argument("--clips", type=int, default=16)
    masks = sub.add_parser("masking", help="each masker vs one ViT-S training step")
    masks.add_argument("--repeats", type=int, default=20)
    masks.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    masks.add_argument("--threads", type=int, default=None)
    attention = sub.add_parser("attention", help="SDPA flash vs matmul + softmax per sequence length")
    attention.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    attention.add_argument("--repeats", type=int, default=5)
    attention.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    {"videomae": bench_videomae, "data": bench_data, "masking": bench_masking,
     "attention": bench_attention}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
