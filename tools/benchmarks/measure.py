"""How tools/bench.py measures: the GEMM peak, FLOPs, peak memory, profiles, and the interleaved
step timing of several training steps in one process (so machine noise hits all of them alike)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import torch


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


def gemm_dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


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


@dataclass
class Timed:
    """One side of a comparison: its training step and what was measured of it."""
    name: str
    step: Callable[[], torch.Tensor]  # forward + backward + optimizer step + zero_grad -> loss
    times: List[float] = field(default_factory=list)  # wall seconds per timed step
    cpu_times: List[float] = field(default_factory=list)  # process CPU seconds per timed step
    flops: float = 0.0
    memory: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def time_interleaved(sides: List[Timed], steps: int, warmup: int, device, gemm: Gemm):
    """Warm up every side, then time `steps` steps of each, alternating the order every round,
    with one peak GEMM timed after each round."""
    for _ in range(warmup):
        for side in sides:
            side.step()
    for i in range(steps):
        for side in (sides if i % 2 == 0 else sides[::-1]):
            sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            side.step()
            sync(device)
            side.times.append(time.perf_counter() - start)
            side.cpu_times.append(time.process_time() - cpu_start)
        gemm.time_once()


def compare(sides: List[Timed], args, device, precision: str, batch: int, unit: str) -> Dict[str, float]:
    """Count FLOPs, time all sides interleaved, measure peak memory, print one line per side
    -> samples/s per side. The first side is unimask, the second the reference."""
    gemm = Gemm(gemm_dtype(precision), device)
    losses = {}
    for side in sides:
        side.flops, loss = count_flops(side.step)
        losses[side.name] = float(loss.detach())
    print("first-step loss (each library's own init): " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    time_interleaved(sides, args.steps, args.warmup, device, gemm)
    for side in sides:
        side.memory = peak_memory(side.step, device)[0]
    peak = gemm.gflops()
    print(f"practical peak: {gemm.size}^3 GEMM in {precision}, median of {len(gemm.rates)} timed between the "
          f"steps: {peak:.1f} GFLOP/s")
    rate = {}
    for side in sides:
        med = side.median
        rate[side.name] = batch / med
        achieved = side.flops / med / 1e9
        print(f"{side.name:14s} step median {1000 * med:8.1f} ms (min {1000 * min(side.times):.1f}, max "
              f"{1000 * max(side.times):.1f}, {len(side.times)} steps; process CPU time median "
              f"{1000 * statistics.median(side.cpu_times):.1f} ms)  {rate[side.name]:7.3f} {unit}/s  "
              f"{side.flops / 1e9:7.1f} GFLOP/step  {achieved:6.1f} GFLOP/s = {100 * achieved / peak:5.1f}% of GEMM  "
              f"peak mem {side.memory / 2**20:7.1f} MiB")
    ours, ref = sides[0], sides[1]
    print(f"peak memory: {ours.name} {ours.memory / max(1, ref.memory):.2f}x {ref.name} "
          f"({'torch.cuda.max_memory_allocated' if device.type == 'cuda' else 'live tensor bytes, profiler timeline'})")
    print(f"(from the fastest steps instead of the medians: {min(ref.times) / min(ours.times):.2f}; "
          f"from process CPU time: {statistics.median(ref.cpu_times) / statistics.median(ours.cpu_times):.2f})")
    if args.profile:
        for side in sides:
            top_ops(side.step, side.name)
    return rate
