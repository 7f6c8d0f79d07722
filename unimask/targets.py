"""What the decoder predicts. A Target maps Tokens to (values [B,N,T], weight [B,N,T]|None)."""
from __future__ import annotations

import gin
import torch
from torch import nn


class Target(nn.Module):
    """Base: default = the adapter's own target (raw patches)."""

    def forward(self, tokens, adapter):
        return adapter.target(tokens), None

    def dim(self, adapter) -> int:
        return adapter.target_dim

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

    def stats(self, values, tokens):
        """Per-patch (or per patch channel) mean and scale. values [B, N, T] -> views to divide by."""
        if self.per_channel:
            if not tokens.patch_shape:
                raise ValueError("PixelTarget(per_channel=True) needs Tokens.patch_shape with channels last")
            grouped = values.view(*values.shape[:2], -1, tokens.patch_shape[-1])  # [B, N, pixels, C]
            return grouped, grouped.mean(-2, keepdim=True), grouped.var(-2, keepdim=True).sqrt() + self.eps
        return values, values.mean(-1, keepdim=True), (values.var(-1, keepdim=True) + self.eps).sqrt()

    def forward(self, tokens, adapter):
        values = adapter.target(tokens).float()  # [B, N, T]
        if not self.norm_pix:
            return values, None
        grouped, mean, scale = self.stats(values, tokens)
        return ((grouped - mean) / scale).view(values.shape), None

    def invert(self, pred, tokens, adapter):
        if not self.norm_pix:
            return pred
        values = adapter.target(tokens).float()
        grouped, mean, scale = self.stats(values, tokens)
        return (pred.float().view(grouped.shape) * scale + mean).view(values.shape)
