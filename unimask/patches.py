"""Dense arrays <-> patch tokens, in any number of axes: the layout Tokens.patches has for every
grid modality ([B, N, prod(patch) * C], tokens in row-major grid order, each patch's values with
its patch axes first and channels last, MAE's order). In the core because targets that need the
whole picture back (HOG's gradients, a frequency band) read Tokens.grid and Tokens.patch_shape."""
from __future__ import annotations

import math
from typing import Sequence

import torch


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """[B, C, *S] -> [B, N, prod(patch) * C] for any number of axes (1-D, 2-D or 3-D
    grids): tokens in row-major grid order, each patch's values with the patch
    axes first and channels last (MAE's order, so norm-pix per channel can view them)."""
    batch, channels, *sizes = x.shape
    d = len(patch)
    if len(sizes) != d:
        raise ValueError(f"patchify: input has {len(sizes)} axes after channels, patch {tuple(patch)} has {d}")
    grid = [s // p for s, p in zip(sizes, patch)]
    x = x.reshape(batch, channels, *[n for g, p in zip(grid, patch) for n in (g, p)])  # [B, C, g1, p1, g2, p2, ...]
    order = [0, *range(2, 2 + 2 * d, 2), *range(3, 3 + 2 * d, 2), 1]  # B, grid axes, patch axes, C
    return x.permute(order).reshape(batch, math.prod(grid), math.prod(patch) * channels)


def unpatchify(patches: torch.Tensor, grid: Sequence[int], patch: Sequence[int], channels: int) -> torch.Tensor:
    """Inverse of patchify: [B, N, P] -> [B, C, *S]."""
    d = len(grid)
    x = patches.reshape(patches.shape[0], *grid, *patch, channels)  # [B, g1.., p1.., C]
    order = [0, 1 + 2 * d, *[i for k in range(d) for i in (1 + k, 1 + d + k)]]  # B, C, g1, p1, g2, p2, ...
    return x.permute(order).reshape(patches.shape[0], channels, *[g * p for g, p in zip(grid, patch)])


def tokens_to_array(tokens, values=None) -> torch.Tensor:
    """values [B, N, P] (Tokens.patches by default) of grid tokens -> [B, C, *S], read from
    Tokens.grid and Tokens.patch_shape (patch axes, then channels)."""
    if tokens.grid is None or not tokens.patch_shape:
        raise ValueError("this needs grid tokens: Tokens.grid and Tokens.patch_shape (patch axes + channels)")
    values = tokens.patches if values is None else values
    return unpatchify(values, tokens.grid, tokens.patch_shape[:-1], tokens.patch_shape[-1])
