"""Optimizer parameter groups and the learning-rate curve, shared by the trainer and the probes.

MAE's rules: no weight decay on biases, norms (1-D parameters), position and mask tokens;
linear warmup then a half cosine to min_lr. Frozen and teacher weights are not optimized.
"""
from __future__ import annotations

import math

import torch

NO_DECAY_NAMES = ("pos", "mask_token", "cls_token", "token_embed")


def param_groups(model: torch.nn.Module, weight_decay: float):
    """No weight decay on biases, norms (1-D params), position and mask tokens."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad or name.startswith("target."):
            continue  # frozen or teacher weights are not optimized
        if param.ndim <= 1 or any(key in name for key in NO_DECAY_NAMES):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int, peak: float, warmup: int, min_lr: float = 0.0) -> float:
    """Linear warmup to `peak` over `warmup` steps, then half-cosine to `min_lr` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + (peak - min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
