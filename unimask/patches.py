"""Dense arrays <-> patch tokens, in any number of axes: the layout Tokens.patches has for every
grid modality ([B, N, prod(patch) * C], tokens in row-major grid order, each patch's values with
its patch axes first and channels last, MAE's order). In the core because targets that need the
whole picture back (HOG's gradients, a frequency band) read Tokens.grid and Tokens.patch_shape."""
from __future__ import annotations

from typing import Sequence

import torch
from einops import rearrange


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """[B, C, *S] -> [B, N, prod(patch) * C] for any number of axes (1-D, 2-D or 3-D
    grids): tokens in row-major grid order, each patch's values with the patch
    axes first and channels last (MAE's order, so norm-pix per channel can view them)."""
    sizes, d = x.shape[2:], len(patch)
    if len(sizes) != d:
        raise ValueError(f"patchify: input has {len(sizes)} axes after channels, patch {tuple(patch)} has {d}")
    grid_axes, patch_axes = patch_layout(d)  # 2-D: 'b c (g0 p0) (g1 p1) -> b (g0 g1) (p0 p1 c)'
    return rearrange(x, f"b c {' '.join(f'(g{i} p{i})' for i in range(d))} -> b ({grid_axes}) ({patch_axes} c)",
                     **{f"p{i}": p for i, p in enumerate(patch)})


def unpatchify(patches: torch.Tensor, grid: Sequence[int], patch: Sequence[int], channels: int) -> torch.Tensor:
    """Inverse of patchify: [B, N, P] -> [B, C, *S]."""
    d = len(grid)
    grid_axes, patch_axes = patch_layout(d)
    return rearrange(patches, f"b ({grid_axes}) ({patch_axes} c) -> b c {' '.join(f'(g{i} p{i})' for i in range(d))}",
                     c=channels, **{f"g{i}": g for i, g in enumerate(grid)}, **{f"p{i}": p for i, p in enumerate(patch)})


def patch_layout(d: int) -> tuple:
    """einops axis names of a d-axis grid: ('g0 g1', 'p0 p1') for d = 2."""
    return " ".join(f"g{i}" for i in range(d)), " ".join(f"p{i}" for i in range(d))


def tokens_to_array(tokens, values=None) -> torch.Tensor:
    """values [B, N, P] (Tokens.patches by default) of grid tokens -> [B, C, *S], read from
    Tokens.grid and Tokens.patch_shape (patch axes, then channels)."""
    if tokens.grid is None or not tokens.patch_shape:
        raise ValueError("this needs grid tokens: Tokens.grid and Tokens.patch_shape (patch axes + channels)")
    values = tokens.patches if values is None else values
    return unpatchify(values, tokens.grid, tokens.patch_shape[:-1], tokens.patch_shape[-1])
