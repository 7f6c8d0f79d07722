"""`tools/bench.py masking` (each masker against one ViT-S VideoMAE training step) and
`tools/bench.py attention` (SDPA's flash kernel against matmul + softmax per sequence length:
the data behind unimask.transformer.CPU_LOW_PRECISION_MATH_BELOW)."""
from __future__ import annotations

import statistics
import time

import torch

from benchmarks.measure import median_ms
from benchmarks.pairs import OPTIM, VIDEO, unimask_step, unimask_video


# ---- masking -------------------------------------------------------------------------------
def bench_masking(args):
    import inspect

    import unimask.masking as masking
    from unimask.interfaces import Masker
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
    from unimask.optim import make_optimizer
    from unimask.train.precision import resolve_precision

    device = torch.device("cpu")
    precision = resolve_precision(args.precision, device)
    model = unimask_video(VIDEO, False)
    opt = make_optimizer(model, OPTIM["lr"], OPTIM["weight_decay"], OPTIM["betas"], device)
    video = {"video": torch.randn(batch, 3, 16, 224, 224)}

    step = unimask_step(model, opt, video, lambda: {"generator": torch.Generator().manual_seed(0)}, precision, device)
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
                masker = cls(dim=VIDEO["enc_dim"])
                kwargs = {"features": torch.randn(batch, n, VIDEO["enc_dim"])}
                note = f"  (forward of its {VIDEO['enc_dim']}-wide scorer on all tokens included)"
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
