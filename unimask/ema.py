"""Exponential moving averages of weights: one update rule for the trainer's EMA of the model
(train.ema_decay) and for EMA teachers (EMATeacherTarget)."""
from __future__ import annotations

import torch


@torch.no_grad()
def ema_update(average: dict, current: dict, decay: float):
    """average <- decay * average + (1 - decay) * current, in place, for the floating-point
    entries of two state dicts with the same keys; other entries (step counters) are copied."""
    for key, value in current.items():
        target = average[key]
        if target.dtype.is_floating_point:
            target.mul_(decay).add_(value.detach().to(target.dtype), alpha=1 - decay)
        else:
            target.copy_(value)
