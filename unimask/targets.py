"""What the decoder predicts. A Target maps Tokens to (values [B,N,T], weight [B,N,T]|None)."""
from __future__ import annotations

import copy
import math

import gin
import torch
from torch import nn

from unimask.ema import ema_update
from unimask.encoders import encode_ids
from unimask.tokens import gather_rows, gather_tokens


class Target(nn.Module):
    """Base: default = the adapter's own target (raw patches). What the model may call on a
    target, all defined here: dim, select (the scored rows only), attach (once, after the model's
    weights are initialized: teachers copy the student), after_step, invert (for pictures)."""

    def forward(self, tokens, adapter):
        return adapter.target(tokens), None

    def dim(self, adapter) -> int:
        return adapter.target_dim

    def select(self, tokens, adapter, ids):
        """(values, weight) of the tokens ids [B, S] only -> [B, S, T]. Here: all, then gathered;
        per-token targets override it to compute only those rows."""
        values, weight = self(tokens, adapter)
        return gather_tokens(values, ids), None if weight is None else gather_tokens(weight, ids)

    def attach(self, model):
        """Targets that need the model (a teacher copying the student) take it here."""

    def after_step(self, progress: float):
        """Targets with weights of their own (EMA teachers) update here."""

    def invert(self, pred, tokens, adapter):
        """Predictions [B, N, T] back in patch space, for pictures; identity by default."""
        return pred


@gin.configurable
class PixelTarget(Target):
    """Raw patches, optionally norm-pix (MAE): each patch normalized by its own mean/var.

    per_channel=True normalizes each channel of the patch separately over its pixels, as
    VideoMAE does for tubelets (channels are the last axis of Tokens.patch_shape).
    """

    def __init__(self, norm_pix: bool = True, per_channel: bool = False, eps: float = 1e-6):
        super().__init__()
        self.norm_pix, self.per_channel, self.eps = norm_pix, per_channel, eps

    def centre(self, values, tokens, inplace: bool = False):
        """values [B, N, T] -> (grouped view [B, N, pixels, C] or [B, N, T], mean, values - mean, axis);
        inplace=True subtracts in the caller's own copy of the values."""
        if self.per_channel:
            if not tokens.patch_shape:
                raise ValueError("PixelTarget(per_channel=True) needs Tokens.patch_shape with channels last")
            grouped, axis = values.view(*values.shape[:2], -1, tokens.patch_shape[-1]), -2  # [B, N, pixels, C]
        else:
            grouped, axis = values, -1
        mean = grouped.mean(axis, keepdim=True)
        return grouped, mean, grouped.sub_(mean) if inplace else grouped - mean, axis

    def scale(self, centred, axis):
        """Unbiased std (+ eps) from the centred values: the sum of squares is one vector-norm
        pass (several times faster on CPU than var() over the strided pixel axis)."""
        var = torch.linalg.vector_norm(centred, 2, dim=axis, keepdim=True).square() / (centred.shape[axis] - 1)
        return var.sqrt() + self.eps if self.per_channel else (var + self.eps).sqrt()

    def stats(self, values, tokens):
        """Per-patch (or per patch channel) mean and scale. values [B, N, T] -> views to divide by."""
        grouped, mean, centred, axis = self.centre(values, tokens)
        return grouped, mean, self.scale(centred, axis)

    def normalize(self, values, tokens, inplace: bool = False):
        """Norm-pix: values [B, N, T] float -> (values - mean) / scale per patch (channel); a new
        tensor, or `values` itself with inplace=True."""
        _, _, centred, axis = self.centre(values, tokens, inplace)
        return centred.div_(self.scale(centred, axis)).view(values.shape)

    def forward(self, tokens, adapter):
        values = adapter.target(tokens).float()  # [B, N, T]
        return (self.normalize(values, tokens) if self.norm_pix else values), None

    def select(self, tokens, adapter, ids):
        """forward() for the tokens ids [B, S] only: gathered first, normalized after."""
        values = gather_rows(adapter.target(tokens), ids).float()  # [B, S, T], a fresh copy
        if not self.norm_pix:
            return values, None
        return self.normalize(values, tokens, inplace=not values.requires_grad), None

    def invert(self, pred, tokens, adapter):
        if not self.norm_pix:
            return pred
        values = adapter.target(tokens).float()
        grouped, mean, scale = self.stats(values, tokens)
        return (pred.float().view(grouped.shape) * scale + mean).view(values.shape)


@gin.configurable
class EMATeacherTarget(Target):
    """Latent target from a teacher: a frozen copy of the student's adapter (embed + pos) and
    encoder, moved towards the student by an exponential moving average after every optimizer
    step (GraphMAE2's latent target; BYOL / data2vec style teachers).

    The teacher sees every token (nothing hidden) and gives values [B, N, latent_dim]; with
    `with_input=True` the adapter's own target comes first, [B, N, T + latent_dim], so one
    decoder predicts both (pair with a loss that splits the two parts).

    The student is handed over by `attach(model)`, which the model calls once its weights are
    initialized; the teacher starts as an exact copy. The student is held as a plain reference,
    not a submodule, so its weights are not saved twice. momentum: EMA weight of the teacher
    (GraphMAE2: 0.996); with `end_momentum` it follows a half cosine to that value (BYOL).
    """

    def __init__(self, latent_dim: int = gin.REQUIRED, momentum: float = 0.996, end_momentum=None,
                 with_input: bool = False, normalize: bool = False):
        super().__init__()
        self.latent_dim, self.momentum, self.end_momentum = latent_dim, momentum, end_momentum
        self.with_input, self.normalize = with_input, normalize
        self.teacher_adapter, self.teacher_encoder = None, None
        self._student = None

    def attach(self, model):
        """Copy the model's adapter + encoder as the frozen teacher and remember the student."""
        if model.encoder.dim != self.latent_dim:
            raise ValueError(f"EMATeacherTarget.latent_dim={self.latent_dim} but the encoder width is {model.encoder.dim}")
        object.__setattr__(self, "_student", (model.adapter, model.encoder))  # a reference, not a submodule
        self.teacher_adapter = copy.deepcopy(model.adapter).requires_grad_(False).eval()
        self.teacher_encoder = copy.deepcopy(model.encoder).requires_grad_(False).eval()

    def train(self, mode: bool = True):
        """The teacher always runs in eval mode (no dropout), whatever the model's mode."""
        super().train(mode)
        for teacher in (self.teacher_adapter, self.teacher_encoder):
            if teacher is not None:
                teacher.eval()
        return self

    def dim(self, adapter) -> int:
        return self.latent_dim + (adapter.target_dim if self.with_input else 0)

    def _check_attached(self):
        if self._student is None:
            raise RuntimeError("EMATeacherTarget has no student: the model must call target.attach(model) "
                               "after initializing its weights")

    @torch.no_grad()
    def forward(self, tokens, adapter):
        self._check_attached()
        ids = torch.arange(tokens.num_tokens, device=tokens.patches.device).expand(tokens.batch_size, -1)  # all visible
        latent = encode_ids(self.teacher_adapter, self.teacher_encoder, tokens, ids, tokens.valid_mask()).float()  # [B, N, D]
        if self.normalize:
            latent = nn.functional.layer_norm(latent, latent.shape[-1:])
        if self.with_input:
            latent = torch.cat([adapter.target(tokens).float(), latent], -1)
        return latent, None

    def invert(self, pred, tokens, adapter):
        """The adapter's part of the prediction when it has one (with_input); latents alone have
        no picture (the trainer then skips its reconstruction figure)."""
        if not self.with_input:
            raise NotImplementedError("EMATeacherTarget predicts teacher latents: there is nothing to draw")
        return pred[..., :adapter.target_dim]

    def momentum_at(self, progress: float) -> float:
        if self.end_momentum is None:
            return self.momentum
        return self.end_momentum - (self.end_momentum - self.momentum) * 0.5 * (1 + math.cos(math.pi * progress))

    @torch.no_grad()
    def after_step(self, progress: float):
        """teacher <- m * teacher + (1 - m) * student, parameters and float buffers alike."""
        self._check_attached()
        m = self.momentum_at(progress)
        for student, teacher in zip(self._student, (self.teacher_adapter, self.teacher_encoder)):
            ema_update(teacher.state_dict(), student.state_dict(), m)
