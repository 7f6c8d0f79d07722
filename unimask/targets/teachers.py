"""Latent targets from a teacher encoder that sees every token: an EMA of the student
(data2vec, GraphMAE2, Point2Vec, BYOL-style) or a frozen encoder loaded from a checkpoint
(MaskDistill and other feature-mimicking MAEs).

Both read the teacher's features the same way (TeacherFeatures): the last layer, or the average
of the top-k layers with each layer normalized per token ('layer') or per channel over the
tokens ('instance', data2vec 2.0), then optionally a final layer norm. Teachers get no gradients,
are left out of the optimizer (their names start with `target.`, which unimask/optim.py skips),
and are saved in the model's checkpoints, so a resumed run continues with the same teacher.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Optional

import gin
import torch
import torch.nn.functional as F
from torch import nn

from unimask.ema import ema_update
from unimask.encoders import encode_ids, encode_layers
from unimask.interfaces import Target

LAYER_NORMS = ("none", "layer", "instance")


def normalize_layer(h: torch.Tensor, kind: str, valid: torch.Tensor) -> torch.Tensor:
    """One layer's output [B, N, D]: per token over channels ('layer'), per channel over the real
    tokens of each sample ('instance', data2vec 2.0), or as it is."""
    if kind == "layer":
        return F.layer_norm(h, h.shape[-1:])
    if kind == "instance":
        w = valid[..., None].to(h.dtype)
        count = w.sum(1, keepdim=True).clamp(min=1)
        mean = (h * w).sum(1, keepdim=True) / count
        var = ((h - mean).square() * w).sum(1, keepdim=True) / count
        return (h - mean) / (var + 1e-5).sqrt()
    return h


class TeacherFeatures(Target):
    """Shared by teacher targets: teacher_adapter + teacher_encoder are set by the subclass.

    latent_dim: the teacher's width; top_k_layers: average of the last k layers (1 = the final,
    normed output); layer_norm: 'none' | 'layer' | 'instance' for each averaged layer; normalize:
    a layer norm of the result (data2vec's final norm, Point2Vec's); with_input: the adapter's
    own target first, [B, N, T + latent_dim] (GraphMAE2, with a loss that splits the parts)."""

    def __init__(self, latent_dim: int, top_k_layers: int = 1, layer_norm: str = "none", normalize: bool = False,
                 with_input: bool = False):
        super().__init__()
        if top_k_layers < 1:
            raise ValueError(f"top_k_layers={top_k_layers} must be >= 1")
        if layer_norm not in LAYER_NORMS:
            raise ValueError(f"layer_norm must be one of {LAYER_NORMS}, got {layer_norm!r}")
        self.latent_dim, self.top_k_layers, self.layer_norm = latent_dim, top_k_layers, layer_norm
        self.normalize, self.with_input = normalize, with_input
        self.teacher_adapter, self.teacher_encoder = None, None
        self._warned = False

    def teacher_parts(self):
        return self.teacher_adapter, self.teacher_encoder

    def train(self, mode: bool = True):
        """The teacher always runs in eval mode (no dropout), whatever the model's mode."""
        super().train(mode)
        for teacher in (self.teacher_adapter, self.teacher_encoder):
            if teacher is not None:
                teacher.eval()
        return self

    def dim(self, adapter) -> int:
        return self.latent_dim + (adapter.target_dim if self.with_input else 0)

    def teacher_latents(self, tokens) -> torch.Tensor:
        """Every token visible -> [B, N, latent_dim] float."""
        ids = torch.arange(tokens.num_tokens, device=tokens.patches.device).expand(tokens.batch_size, -1)
        valid = tokens.valid_mask()
        if self.top_k_layers == 1:
            latent = encode_ids(self.teacher_adapter, self.teacher_encoder, tokens, ids, valid).float()
        else:
            layers = encode_layers(self.teacher_adapter, self.teacher_encoder, tokens, ids, valid)
            if len(layers) < self.top_k_layers and not self._warned:  # a shrunk model (gin/smoke.gin): all of them
                warnings.warn(f"top_k_layers={self.top_k_layers} but the teacher has {len(layers)} layers: "
                              f"averaging all {len(layers)}")
                self._warned = True
            top = [normalize_layer(h.float(), self.layer_norm, valid) for h in layers[-self.top_k_layers:]]
            latent = torch.stack(top).mean(0)
        return F.layer_norm(latent, latent.shape[-1:]) if self.normalize else latent

    @torch.no_grad()
    def forward(self, tokens, adapter):
        self.check_ready()
        latent = self.teacher_latents(tokens)
        if self.with_input:
            latent = torch.cat([adapter.target(tokens).float(), latent], -1)
        return latent, None

    def check_ready(self):
        if self.teacher_encoder is None:
            raise RuntimeError(f"{type(self).__name__} has no teacher yet: the model attaches it once its weights "
                               "are initialized")

    def invert(self, pred, tokens, adapter):
        """The adapter's part of the prediction when it has one (with_input); latents alone have
        no picture (the trainer then skips its reconstruction figure)."""
        if not self.with_input:
            raise NotImplementedError(f"{type(self).__name__} predicts teacher latents: there is nothing to draw")
        return pred[..., :adapter.target_dim]


@gin.configurable
class EMATeacherTarget(TeacherFeatures):
    """The teacher is a copy of the student's adapter (embed + pos) and encoder, moved towards the
    student by an exponential moving average after every optimizer step. It starts as an exact
    copy (attach); the student is held as a plain reference, not a submodule, so its weights are
    not saved twice. momentum: the teacher's EMA weight (GraphMAE2: 0.996); with end_momentum it
    follows a half cosine to that value (BYOL), or a straight line with momentum_curve='linear'
    (data2vec 2.0: 0.9998 -> 0.99999)."""

    def __init__(self, latent_dim: int = gin.REQUIRED, momentum: float = 0.996, end_momentum=None,
                 momentum_curve: str = "cosine", with_input: bool = False, normalize: bool = False,
                 top_k_layers: int = 1, layer_norm: str = "none"):
        super().__init__(latent_dim, top_k_layers, layer_norm, normalize, with_input)
        if momentum_curve not in ("cosine", "linear"):
            raise ValueError(f"EMATeacherTarget.momentum_curve must be 'cosine' or 'linear', got {momentum_curve!r}")
        self.momentum, self.end_momentum, self.momentum_curve = momentum, end_momentum, momentum_curve
        self._student = None

    def attach(self, model):
        """Copy the model's adapter + encoder as the frozen teacher and remember the student."""
        if model.encoder.dim != self.latent_dim:
            raise ValueError(f"EMATeacherTarget.latent_dim={self.latent_dim} but the encoder width is {model.encoder.dim}")
        object.__setattr__(self, "_student", (model.adapter, model.encoder))  # a reference, not a submodule
        self.teacher_adapter = copy.deepcopy(model.adapter).requires_grad_(False).eval()
        self.teacher_encoder = copy.deepcopy(model.encoder).requires_grad_(False).eval()

    def _check_attached(self):
        if self._student is None:
            raise RuntimeError("EMATeacherTarget has no student: the model must call target.attach(model) "
                               "after initializing its weights")

    def check_ready(self):
        self._check_attached()

    def momentum_at(self, progress: float) -> float:
        if self.end_momentum is None:
            return self.momentum
        if self.momentum_curve == "linear":
            return self.momentum + (self.end_momentum - self.momentum) * min(max(progress, 0.0), 1.0)
        return self.end_momentum - (self.end_momentum - self.momentum) * 0.5 * (1 + math.cos(math.pi * progress))

    takes_student = True

    @torch.no_grad()
    def begin_stage(self, model):
        """dBOT: at a new stage the teacher becomes a copy of the student as it stands."""
        self._check_attached()
        for student, teacher in zip(self._student, (self.teacher_adapter, self.teacher_encoder)):
            teacher.load_state_dict(student.state_dict())

    @torch.no_grad()
    def after_step(self, progress: float):
        """teacher <- m * teacher + (1 - m) * student, parameters and float buffers alike
        (momentum 1: a teacher frozen within each stage, dBOT's, is left as it is)."""
        self._check_attached()
        m = self.momentum_at(progress)
        if m >= 1.0:
            return
        for student, teacher in zip(self._student, (self.teacher_adapter, self.teacher_encoder)):
            ema_update(teacher.state_dict(), student.state_dict(), m)


@gin.configurable
class TeacherTarget(TeacherFeatures):
    """A frozen teacher: `adapter` and `encoder` built by gin (any size, e.g. bound in a teacher/
    scope), their weights loaded from a unimask checkpoint (its model's adapter.* and encoder.*
    keys, strictly: a key that does not fit is an error naming it). MaskDistill-style: the student
    predicts the teacher's features of the tokens it could not see."""

    def __init__(self, adapter: nn.Module = gin.REQUIRED, encoder: nn.Module = gin.REQUIRED,
                 checkpoint: Optional[str] = gin.REQUIRED, top_k_layers: int = 1, layer_norm: str = "none",
                 normalize: bool = True, with_input: bool = False):
        super().__init__(encoder.dim, top_k_layers, layer_norm, normalize, with_input)
        self.teacher_adapter, self.teacher_encoder = adapter, encoder
        if checkpoint is not None:
            load_teacher(self.teacher_adapter, self.teacher_encoder, checkpoint)
        self.requires_grad_(False).eval()


def load_teacher(adapter: nn.Module, encoder: nn.Module, path: str):
    """The adapter.* and encoder.* weights of a unimask checkpoint into the teacher's modules."""
    from unimask.train.checkpoint import CheckpointError, clean_state_dict, load_checkpoint

    state = clean_state_dict(load_checkpoint(path)["model"])
    for prefix, module in (("adapter.", adapter), ("encoder.", encoder)):
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        own = module.state_dict()
        missing, unexpected = sorted(set(own) - set(part)), sorted(set(part) - set(own))
        if missing or unexpected:
            raise CheckpointError(f"{path}: the teacher's {prefix[:-1]} does not fit: missing {missing[:6]}, "
                                  f"unexpected {unexpected[:6]}")
        for key, value in part.items():
            if own[key].shape != value.shape:
                raise CheckpointError(f"{path}: teacher key {prefix}{key} has shape {tuple(value.shape)}, the "
                                      f"teacher's is {tuple(own[key].shape)}")
        module.load_state_dict(part)
