"""The trainer's AdamW over MAE's parameter groups (unimask/optim.py)."""
from __future__ import annotations

import torch

from unimask.optim import param_groups


def make_optimizer(model, lr: float, weight_decay: float, betas, device: torch.device):
    # fused: one kernel per parameter group (CUDA and, since torch 2.4, CPU: ~2x faster than
    # foreach there and without foreach's full-size temporaries); foreach elsewhere
    kwargs = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), **kwargs)
