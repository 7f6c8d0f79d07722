"""Dense inputs cut into a regular grid of patches, in any number of axes: the shared half of the
image, video, spectrogram and multi-band adapters.

    patchify / unpatchify   [B, C, *S] <-> [B, N, prod(patch) * C], N-D (unimask/patches.py)
    grid_coords             [B, N, d] integer grid positions (the coords of grid tokens)
    GridAdapter             tokenize (patchify + grid + patch_shape), a linear patch embedding,
                            panels for pictures; subclasses add their input checks and render
    check_divisible / check_input / default_norm / save_rows   shared settings checks and output
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from modalities.base import ModalityAdapter
from unimask.patches import patchify, unpatchify  # noqa: F401  (grid adapters import them from here)
from unimask.tokens import Tokens

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_norm(channels: int, mean, std):
    """ImageNet statistics for RGB, 0.5 / 0.5 for any other channel count."""
    if mean is None:
        mean = IMAGENET_MEAN if channels == 3 else (0.5,) * channels
    if std is None:
        std = IMAGENET_STD if channels == 3 else (0.5,) * channels
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries for {channels} channels")
    return tuple(mean), tuple(std)


def grid_coords(grid: Sequence[int], batch: int, device) -> torch.Tensor:
    """Integer grid positions of every token: [B, prod(grid), len(grid)] float."""
    axes = torch.meshgrid(*[torch.arange(g, device=device, dtype=torch.float32) for g in grid], indexing="ij")
    return torch.stack(axes, -1).reshape(1, -1, len(grid)).expand(batch, -1, -1)


def check_divisible(*pairs):
    """At build time: every input size must be a multiple of its patch size; the error names both
    gin bindings. pairs: ((size binding, size), (patch binding, patch)), one per axis."""
    for (size_name, size), (patch_name, patch) in pairs:
        if patch < 1 or size % patch:
            raise ValueError(f"{size_name}={size} is not divisible by {patch_name}={patch}")


def check_input(x: torch.Tensor, shape: Sequence[int], what: str):
    """Raise naming the parameter when a batch does not have the recipe's shape."""
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{what} batch has shape {tuple(x.shape[1:])} per sample, the recipe expects {tuple(shape)}")


class GridAdapter(ModalityAdapter):
    """Shared by dense inputs cut into a regular grid of patches (images, video tubelets)."""

    batch_key = "image"

    def __init__(self, patch: Sequence[int], in_chans: int, dim: int):
        super().__init__()
        self.patch, self.in_chans = tuple(patch), in_chans
        self.target_dim = int(np.prod(self.patch)) * in_chans
        self.proj = nn.Linear(self.target_dim, dim)  # = a stride-patch conv, on visible patches only

    def grid_of(self, spatial: Sequence[int]) -> tuple:
        if any(s % p for s, p in zip(spatial, self.patch)):
            raise ValueError(f"input size {tuple(spatial)} is not divisible by patch size {self.patch}")
        return tuple(s // p for s, p in zip(spatial, self.patch))

    def tokenize(self, batch) -> Tokens:
        x = batch[self.batch_key] if isinstance(batch, dict) else batch
        x = x.flatten(0, 1) if x.dim() == len(self.patch) + 3 else x  # repeated sampling [B, R, ...]
        if x.shape[1] != self.in_chans:
            raise ValueError(f"{self.batch_key} batch has {x.shape[1]} channels, in_chans is {self.in_chans}")
        grid = self.grid_of(x.shape[2:])
        patches = patchify(x, self.patch)
        return Tokens(patches, grid_coords(grid, x.shape[0], x.device), grid=grid,
                      patch_shape=self.patch + (self.in_chans,))

    def embed(self, patches, tokens, ids):  # [B, K, P] -> [B, K, D]
        return self.proj(patches)

    def panels(self, tokens: Tokens, pred: torch.Tensor, mask) -> list:
        """Sample 0 as [input, masked input, reconstruction with visible patches pasted], each
        [C, *S] in [0, 1], all three scaled by the input's own range."""
        patches = tokens.patches[:1].float()  # [1, N, P]
        hidden = mask.masked[:1, :, None]
        lo, hi = patches.min(), patches.max()
        masked = torch.where(hidden, torch.full_like(patches, float(lo)), patches)
        recon = torch.where(hidden, pred[:1].float(), patches)
        x = unpatchify(torch.cat([patches, masked, recon]), tokens.grid, self.patch, self.in_chans)
        x = ((x - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1)
        return [x[i] for i in range(3)]

    def render_views(self, first: Tokens, second: Tokens, pred: torch.Tensor, mask, path: str) -> str:
        """Sample 0 as view 1 | masked view 2 | reconstruction of view 2 (2-D grids; a clip's
        first time slot)."""
        _, masked, recon = self.panels(second, pred, mask)
        view = first.patches[:1].float()
        lo, hi = view.min(), view.max()
        view = ((unpatchify(view, first.grid, self.patch, self.in_chans)[0] - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1)
        panels = [view, masked, recon]
        if view.dim() == 4:  # [C, T, H, W]: the first frame
            panels = [p[:, 0] for p in panels]
        return save_rows([panels], path)


def save_rows(rows: list, path: str, min_size: int = 112) -> str:
    """rows: list of lists of [C, H, W] tensors in [0, 1] -> one PNG grid, upscaled until its
    shorter side reaches min_size (tiny images and flat spectrograms stay visible)."""
    import torchvision.utils as vutils

    images = [img if img.shape[0] == 3 else img[:1].expand(3, -1, -1) for row in rows for img in row]
    grid = vutils.make_grid(torch.stack(images), nrow=len(rows[0]), padding=2, pad_value=1.0)
    scale = max(1, min_size // max(1, min(images[0].shape[-2:])))
    if scale > 1:
        grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray((grid.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)).save(path)
    return path
