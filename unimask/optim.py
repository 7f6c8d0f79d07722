"""The optimizer: AdamW (or LARS, MAE's linear probe) over MAE's parameter groups, and the
learning-rate curve, shared by the trainer and the probes.

MAE's rules: no weight decay on biases, norms (1-D parameters), position and mask tokens;
linear warmup then a half cosine to min_lr. Frozen and teacher weights are not optimized.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from unimask.interfaces import PretrainingModel

NO_DECAY_NAMES = ("pos", "mask_token", "cls_token")


def param_groups(model: torch.nn.Module, weight_decay: float, lr_scale: Optional[Callable] = None,
                 thaw_at: Optional[Callable] = None):
    """No weight decay on biases, norms (1-D params), position and mask tokens. Where
    `lr_scale(name)` gives a number (layer-wise lr decay when fine-tuning) or `thaw_at(name)` is
    above 0 (LP-FT: the fraction of the run a parameter waits frozen), one group per (decay,
    scale, thaw), each with its 'lr_scale' and 'thaw_at', which the trainer multiplies into the
    lr (`thaw_factor`); otherwise MAE's two groups. Unless given, both come from the model's
    PretrainingModel.lr_scale / thaw_at (any other module: no scale, no wait)."""
    if isinstance(model, PretrainingModel):
        lr_scale, thaw_at = lr_scale or model.lr_scale, thaw_at or model.thaw_at
    lr_scale, thaw_at = lr_scale or (lambda name: None), thaw_at or (lambda name: 0.0)
    groups = {}  # (decays, scale, thaw) -> params, in first-seen order
    for name, param in model.named_parameters():
        if not param.requires_grad or name.startswith("target."):
            continue  # frozen or teacher weights are not optimized
        decays = not (param.ndim <= 1 or any(key in name for key in NO_DECAY_NAMES))
        scale = lr_scale(name)
        groups.setdefault((decays, None if scale is None else float(scale), float(thaw_at(name))), []).append(param)
    if all(scale is None and thaw == 0.0 for _, scale, thaw in groups):  # MAE's two groups, in this order, always
        return [{"params": groups.get((True, None, 0.0), []), "weight_decay": weight_decay},
                {"params": groups.get((False, None, 0.0), []), "weight_decay": 0.0}]
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0,
             "lr_scale": 1.0 if scale is None else scale, "thaw_at": thaw}
            for (decays, scale, thaw), params in groups.items()]


OPTIMIZERS = ("adamw", "lars")
LARS_MOMENTUM, LARS_TRUST = 0.9, 0.001  # MAE's util/lars.py defaults (main_linprobe.py keeps them)


def make_optimizer(model, lr: float, weight_decay: float, betas, device: torch.device, name: str = "adamw"):
    """The trainer's optimizer over the model's groups (its PretrainingModel.lr_scale / thaw_at).
    'adamw' (every recipe but the linear probe), fused: one kernel per parameter group (CUDA and,
    since torch 2.4, CPU: ~2x faster than foreach there and without foreach's full-size
    temporaries); foreach elsewhere. 'lars': timm's Lars as MAE's linear probe uses it (lars_groups)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {name!r}")
    groups = model.param_groups(weight_decay)
    if name == "lars":
        from timm.optim import Lars

        return Lars(lars_groups(groups), lr=lr, momentum=LARS_MOMENTUM, trust_coeff=LARS_TRUST)
    kwargs = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), **kwargs)


def lars_groups(groups: list) -> list:
    """MAE's LARS (util/lars.py) scales the step of a parameter with ndim > 1 by its trust ratio
    (trust x |w| / |g + wd w|) and gives biases and norms (ndim <= 1) plain momentum SGD without
    weight decay. timm's Lars adapts a whole group, when its weight_decay != 0 or always_adapt,
    so each group splits by ndim: matrices always adapt (the linear probe's weight decay is 0,
    which would otherwise turn LARS off), vectors never and without decay. Empty groups go.
    timm's ratio is trust x |w| / (|g| + wd |w| + eps), the LARS paper's: equal to MAE's at
    weight decay 0 (its linear probe) up to eps, slightly smaller otherwise."""
    out = []
    for group in groups:
        matrices = [p for p in group["params"] if p.ndim > 1]
        vectors = [p for p in group["params"] if p.ndim <= 1]
        if matrices:
            out.append({**group, "params": matrices, "always_adapt": True})
        if vectors:
            out.append({**group, "params": vectors, "always_adapt": False, "weight_decay": 0.0})
    return out


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


def weight_decay_at(step: int, total: int, start: float, final: float) -> float:
    """I-JEPA's (and DINO's) weight-decay curve: a half cosine from `start` at step 0 to `final` at
    `total` (I-JEPA: 0.04 -> 0.4), so regularization grows as the representation settles."""
    progress = min(step / max(1, total), 1.0)
    return final + (start - final) * 0.5 * (1 + math.cos(math.pi * progress))


class Stages:
    """A run split into `count` equal stages (dBOT's multi-stage distillation): where each starts,
    and each step's place in its own stage, over which the learning-rate schedule runs again."""

    def __init__(self, count: int, total: int, model_restarts: bool = True):
        if count < 1 or count > max(total, 1):
            raise ValueError(f"train.stages={count} must be between 1 and train.steps={total}")
        if count > 1 and not model_restarts:
            raise ValueError(f"train.stages={count} needs a model whose target is a teacher that takes the student's "
                             "weights at each stage (MaskedModel with EMATeacherTarget: gin/dbot.gin)")
        self.count, self.total = count, total
        self.starts = [round(i * total / count) for i in range(count)] + [total]

    def index(self, step: int) -> int:
        return max(i for i in range(self.count) if self.starts[i] <= step)

    def starts_at(self, step: int) -> bool:
        """A stage after the first begins at this step."""
        return step > 0 and step in self.starts[1:-1]

    def local(self, step: int) -> tuple:
        """-> (step within its stage, the stage's length)."""
        i = self.index(step)
        return step - self.starts[i], self.starts[i + 1] - self.starts[i]


def set_schedules(optimizer, step: int, total: int, peak: float, warmup: int, min_lr: float, weight_decays: tuple,
                  decaying: list, stages: Stages) -> tuple:
    """This step's learning rate in every group (warmup + half cosine, restarted per stage, x the
    group's lr_scale and thaw factor) and, when weight_decays[1] is set, the weight decay's curve.
    -> (lr, {'weight_decay': value} or {}) for the log."""
    local, length = stages.local(step)
    lr = lr_at(local, length, peak, warmup, min_lr)
    for group in optimizer.param_groups:
        group["lr"] = (lr * group.get("lr_scale", 1.0)  # layer-wise decay when fine-tuning
                       * thaw_factor(step, total, group.get("thaw_at", 0.0), warmup))
    scheduled = {}
    if weight_decays[1] is not None:
        scheduled["weight_decay"] = weight_decay_at(step, total, *weight_decays)
        for group, decays in zip(optimizer.param_groups, decaying):
            group["weight_decay"] = scheduled["weight_decay"] if decays else 0.0
    return lr, scheduled
