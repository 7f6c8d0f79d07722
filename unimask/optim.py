"""Optimizer parameter groups and the learning-rate curve, shared by the trainer and the probes.

MAE's rules: no weight decay on biases, norms (1-D parameters), position and mask tokens;
linear warmup then a half cosine to min_lr. Frozen and teacher weights are not optimized.
"""
from __future__ import annotations

import math

import torch

NO_DECAY_NAMES = ("pos", "mask_token", "cls_token")


def param_groups(model: torch.nn.Module, weight_decay: float):
    """No weight decay on biases, norms (1-D params), position and mask tokens. A model with an
    `lr_scale(name) -> float` method (layer-wise lr decay when fine-tuning) or a
    `thaw_at(name) -> float` method (LP-FT: the fraction of the run a parameter waits frozen) gets
    one group per (decay, scale, thaw), each with its 'lr_scale' and 'thaw_at', which the trainer
    multiplies into the lr (`thaw_factor`)."""
    scale_of, thaw_of = getattr(model, "lr_scale", None), getattr(model, "thaw_at", None)
    groups = {}  # (decays, scale, thaw) -> params, in first-seen order
    for name, param in model.named_parameters():
        if not param.requires_grad or name.startswith("target."):
            continue  # frozen or teacher weights are not optimized
        decays = not (param.ndim <= 1 or any(key in name for key in NO_DECAY_NAMES))
        scale = float(scale_of(name)) if scale_of is not None else None
        thaw = float(thaw_of(name)) if thaw_of is not None else 0.0
        groups.setdefault((decays, scale, thaw), []).append(param)
    if scale_of is None and thaw_of is None:  # the two MAE groups, in this order, always (checkpoints keep the layout)
        return [{"params": groups.get((True, None, 0.0), []), "weight_decay": weight_decay},
                {"params": groups.get((False, None, 0.0), []), "weight_decay": 0.0}]
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0,
             "lr_scale": 1.0 if scale is None else scale, "thaw_at": thaw}
            for (decays, scale, thaw), params in groups.items()]


def thaw_factor(step: int, total: int, thaw_at: float, warmup: int) -> float:
    """The lr multiplier of a group that trains from `thaw_at` (a fraction of `total` steps) on:
    0 before it, then a fresh linear warmup over `warmup` steps, since Adam's first steps on a
    group without moments are as large as the lr (LP-FT's second phase starts gently)."""
    if thaw_at <= 0:
        return 1.0
    if still_frozen(step / total, thaw_at):
        return 0.0
    return min(1.0, (step - math.ceil(thaw_at * total) + 1) / max(1, warmup))


def still_frozen(progress: float, thaw_at: float) -> bool:
    """The one rule for a frozen start, read by the trainer (lr 0) and by the model (no autograd
    through the frozen part): frozen while the run's progress (step / steps) is before thaw_at."""
    return progress < thaw_at


def layer_decay_scales(depth: int, decay: float, layer_of) -> "callable":
    """MAE / BEiT layer-wise lr decay: a parameter in layer i of depth + 2 (0 = the embeddings,
    1..depth = the blocks, depth + 1 = the head and final norms) gets lr x decay^(depth + 1 - i).
    layer_of(name) -> i."""
    return lambda name: decay ** (depth + 1 - layer_of(name))


def lr_at(step: int, total: int, peak: float, warmup: int, min_lr: float = 0.0) -> float:
    """Linear warmup to `peak` over `warmup` steps, then half-cosine to `min_lr` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + (peak - min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
