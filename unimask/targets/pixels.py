"""Pixels as the target: raw patches, or norm-pix (MAE), per patch or per patch channel (VideoMAE)."""
from __future__ import annotations

import gin
import torch

from unimask.interfaces import Target, target_weight
from unimask.tokens import gather_rows


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
        weight = target_weight(tokens, ids)  # no-data pixels: the adapter filled them, this zeroes their loss
        if not self.norm_pix:
            return values, weight
        return self.normalize(values, tokens, inplace=not values.requires_grad), weight

    def invert(self, pred, tokens, adapter):
        if not self.norm_pix:
            return pred
        values = adapter.target(tokens).float()
        grouped, mean, scale = self.stats(values, tokens)
        return (pred.float().view(grouped.shape) * scale + mean).view(values.shape)
