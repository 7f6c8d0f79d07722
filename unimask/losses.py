"""Per-token losses: loss(pred [B,M,T], target [B,M,T], weight [B,M,T]|None) -> [B,M].

The model reduces the per-token values over the tokens it scores, so a learning masker can
read them (HPM, AdaMAE) and ragged batches weigh each real token once.
"""
from __future__ import annotations

from typing import Optional

import gin
import torch
import torch.nn.functional as F


def weighted_mean(values: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """[B, M, T] -> [B, M], averaged over T (by weight where given)."""
    if weight is None:
        return values.mean(-1)
    return (values * weight).sum(-1) / weight.sum(-1).clamp(min=1e-6)


class SquaredErrorMean(torch.autograd.Function):
    """mean((pred - target)^2, -1) in fp32: [B, M, T] x2 -> [B, M]. The same math as the plain
    expression, but forward is one subtraction + one norm pass and backward one pass;
    only the difference is kept for backward (F.mse_loss keeps both inputs)."""

    @staticmethod
    def forward(ctx, pred, target):
        if pred.dtype == torch.float32:
            diff = pred - target.float()  # [B, M, T]
        else:  # one fp32 copy, the (low-precision) target subtracted into it: fp32 math, no 2nd temporary
            diff = pred.float().sub_(target)
        ctx.save_for_backward(diff)
        ctx.dtypes = (pred.dtype, target.dtype)
        # sum of squares as a squared 2-norm: one pass and no [B, M, T] temporary (vecdot has one)
        return torch.linalg.vector_norm(diff, dim=-1).square() / diff.shape[-1]  # [B, M]

    @staticmethod
    def backward(ctx, grad):  # grad [B, M]
        (diff,) = ctx.saved_tensors
        grad_diff = diff * (grad.float() * (2.0 / diff.shape[-1]))[..., None]  # [B, M, T]
        pred_grad = grad_diff.to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        target_grad = (-grad_diff).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return pred_grad, target_grad


@gin.configurable
class MSELoss:
    """MAE's mean squared error per token."""

    def __call__(self, pred, target, weight=None):
        if weight is None:
            return SquaredErrorMean.apply(pred, target)
        return weighted_mean((pred.float() - target.float()) ** 2, weight)


@gin.configurable
class L1Loss:
    """SimMIM's L1 per token."""

    def __call__(self, pred, target, weight=None):
        return weighted_mean((pred.float() - target.float()).abs(), weight)


@gin.configurable
class SmoothL1Loss:
    """Smooth L1 (Huber with `beta`) per token, averaged over T: 0.5 d^2 / beta where |d| < beta,
    else |d| - 0.5 beta. I-JEPA's and DMT-JEPA's released code (F.smooth_l1_loss, beta 1)."""

    def __init__(self, beta: float = 1.0):
        self.beta = beta

    def __call__(self, pred, target, weight=None):
        values = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=self.beta)
        return weighted_mean(values, weight)


@gin.configurable
class SCELoss:
    """GraphMAE's scaled cosine error (1 - cos)^alpha per token."""

    def __init__(self, alpha: float = 2.0):
        self.alpha = alpha

    def __call__(self, pred, target, weight=None):
        cos = F.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-8)
        return (1 - cos).clamp(min=0).pow(self.alpha)


@gin.configurable
class CELoss:
    """Cross-entropy for token ids: pred [B,M,V] logits, target [B,M,1] long ids. label_smoothing:
    torch's (MaskGIT trains with 0.1)."""

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"CELoss.label_smoothing={label_smoothing}: must lie in [0, 1)")
        self.label_smoothing = float(label_smoothing)

    def __call__(self, pred, target, weight=None):
        b, m, v = pred.shape
        return F.cross_entropy(pred.float().reshape(b * m, v), target.reshape(b * m).long(), reduction="none",
                               label_smoothing=self.label_smoothing).view(b, m)


@gin.configurable
class ChamferLoss:
    """Chamfer-L2 between point sets, pure torch; pred/target [B, M, S*point_dim].

    Computed in chunks of `chunk` token rows so the [rows, S, S] distance block stays small.
    """

    def __init__(self, point_dim: int = 3, chunk: int = 4096, squared: bool = True):
        self.point_dim, self.chunk, self.squared = point_dim, chunk, squared

    def __call__(self, pred, target, weight=None):
        b, m, _ = pred.shape
        p = pred.float().reshape(b * m, -1, self.point_dim)  # [R, S, d]
        t = target.float().reshape(b * m, -1, self.point_dim)  # [R, S', d]
        out = []
        for start in range(0, p.shape[0], self.chunk):
            out.append(chamfer_rows(p[start:start + self.chunk], t[start:start + self.chunk], self.squared))
        return torch.cat(out).view(b, m)


def chamfer_rows(p: torch.Tensor, t: torch.Tensor, squared: bool = True) -> torch.Tensor:
    """p [R, S, d], t [R, S', d] -> [R]: mean nearest distance both ways (Point-MAE's CD-L2 sum)."""
    dist = torch.cdist(p, t).pow(2) if squared else torch.cdist(p, t)  # [R, S, S']
    return dist.min(2).values.mean(1) + dist.min(1).values.mean(1)


@gin.configurable
class FeatureLatentSCELoss:
    """GraphMAE2's two terms on one prediction (EMATeacherTarget(with_input=True)): SCE with
    `alpha` on the leading feature columns + lam * SCE with `latent_alpha` on the last
    `latent_dim` columns (the teacher's latent). -> [B, M]."""

    def __init__(self, latent_dim: int = gin.REQUIRED, alpha: float = 3.0, latent_alpha: float = 1.0, lam: float = 1.0):
        self.latent_dim, self.lam = latent_dim, lam
        self.feature_loss, self.latent_loss = SCELoss(alpha), SCELoss(latent_alpha)

    def __call__(self, pred, target, weight=None):
        split = pred.shape[-1] - self.latent_dim
        return (self.feature_loss(pred[..., :split], target[..., :split])
                + self.lam * self.latent_loss(pred[..., split:], target[..., split:]))
