"""Device and precision choice: bf16 autocast only where the hardware runs it fast.

On CPUs without native bf16 (AVX2-only) bf16 matmuls are emulated and hundreds of times
slower than fp32, so `auto` picks bf16 on a CPU only when it reports AVX512-BF16 or AMX.
"""
from __future__ import annotations

import contextlib
import functools

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.lru_cache(None)
def cpu_has_fast_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA with bf16 / fast-bf16 CPUs, fp16 on older GPUs, fp32 otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    """Context manager for the forward pass in the chosen precision."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
