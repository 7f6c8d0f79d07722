"""FrequencyMasker (Masked Frequency Modeling, Xie et al., IJCV 2023): instead of hiding
patches, remove a band of each sample's 2-D spectrum and let the model restore it.

Jiahao000/MFM data_mfm.py: a circle of `radius` around the centre of the fftshift-ed spectrum;
low-pass keeps the inside (the high frequencies are to be predicted), high-pass removes it; each
sample is low- or high-pass with probability low_pass_share (MFM: half and half, radius 16 at
224 px). The encoder sees every token of the filtered input (Mask.aux[INPUT_PATCHES]), all
tokens are scored, and FrequencyTarget asks for the removed band.
"""
from __future__ import annotations

from typing import Optional

import gin
import torch

from unimask.interfaces import Masker
from unimask.masking.base import random_scores
from unimask.patches import patchify, tokens_to_array
from unimask.tokens import INPUT_PATCHES, Mask

MODES = ("random", "low_pass", "high_pass", "band")


def radial_distance(h: int, w: int, device) -> torch.Tensor:
    """[H, W] distance of every frequency from the centre of the fftshift-ed spectrum."""
    rows = torch.arange(h, device=device, dtype=torch.float32) - h // 2
    cols = torch.arange(w, device=device, dtype=torch.float32) - w // 2
    return torch.sqrt(rows[:, None] ** 2 + cols[None, :] ** 2)


def filter_spectrum(arrays: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """arrays [B, C, H, W], keep [B, H, W] bool (centred spectrum) -> the arrays with only the
    kept frequencies, real [B, C, H, W]."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(arrays.float()), dim=(-2, -1))
    spectrum = spectrum * keep[:, None].to(spectrum.dtype)
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real


@gin.configurable
class FrequencyMasker(Masker):
    """mode: 'low_pass' (keep r < radius), 'high_pass' (remove it), 'band' (remove radius <= r <
    outer_radius), 'random' (low- or high-pass per sample, low_pass_share of them low-pass).
    Works on 2-D grid tokens (Tokens.grid and patch_shape). The schedule's ratio is not used:
    the band sets what is hidden, and Mask.ratio reports the share of frequencies removed."""

    def __init__(self, mode: str = "random", radius: float = 16.0, outer_radius: Optional[float] = None,
                 low_pass_share: float = 0.5):
        if mode not in MODES:
            raise ValueError(f"FrequencyMasker.mode must be one of {MODES}, got {mode!r}")
        if radius <= 0 or (mode == "band" and (outer_radius is None or outer_radius <= radius)):
            raise ValueError(f"FrequencyMasker needs radius > 0 (and outer_radius > radius for a band), got "
                             f"{radius}, {outer_radius}")
        self.mode, self.radius, self.outer_radius, self.low_pass_share = mode, radius, outer_radius, low_pass_share

    def keep_mask(self, batch: int, h: int, w: int, generator, device) -> torch.Tensor:
        """[B, H, W] bool: the frequencies each sample keeps."""
        r = radial_distance(h, w, device)[None].expand(batch, -1, -1)
        inside = r < self.radius
        if self.mode == "low_pass":
            return inside
        if self.mode == "high_pass":
            return ~inside
        if self.mode == "band":
            return ~(inside.logical_not() & (r < self.outer_radius))
        low = random_scores((batch,), generator, device) < self.low_pass_share  # [B]
        return torch.where(low[:, None, None], inside, ~inside)

    def __call__(self, tokens, ratio, generator=None, **kwargs) -> Mask:
        arrays = tokens_to_array(tokens)  # [B, C, H, W]
        if arrays.dim() != 4:
            raise ValueError(f"FrequencyMasker filters 2-D grids; these tokens have grid {tokens.grid}")
        b, _, h, w = arrays.shape
        keep = self.keep_mask(b, h, w, generator, arrays.device)
        filtered = filter_spectrum(arrays, keep).to(tokens.patches.dtype)
        valid = tokens.valid_mask()
        removed = 1.0 - keep.flatten(1).float().mean(1)  # [B]
        mask = Mask.from_hidden(valid, valid, removed)  # every token is to be restored
        mask.aux = {INPUT_PATCHES: patchify(filtered, tokens.patch_shape[:-1]), "frequency_keep": keep}
        return mask
