"""Rotary position embedding (RoPE, Su et al. 2021) over token coordinates of any arity.

Instead of adding a position code to the input, every attention layer rotates each head's
queries and keys by angles proportional to the token's position, so attention scores depend on
relative positions. With d coordinate axes (1, 2 or 3 for 1-, 2- and 3-D grids) the head
width is split evenly across the axes (axial RoPE, as EVA-02 / RoPE-ViT do for 2-D); each axis
share is rotated in pairs (the "rotate half" layout of GPT-NeoX / Llama), and any remainder of
the head width is left unrotated. Computed from `Tokens.coords`, so ragged, shuffled or partly
visible token sets get their own angles with no table.
"""
from __future__ import annotations

import torch

from unimask.pos import axis_frequencies


def rope_angles(coords: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple:
    """coords [B, K, d] -> (cos, sin), each [B, 1, K, head_dim] (broadcast over heads)."""
    _, freqs = axis_frequencies(coords.shape[-1], head_dim, theta, coords.device)  # [half]
    angles = coords.float()[..., None] * freqs  # [B, K, d, half]
    angles = torch.cat([angles, angles], -1)  # [B, K, d, per_axis]: rotate-half pairs (i, i + half)
    angles = angles.flatten(-2)  # [B, K, d * per_axis]
    pad = head_dim - angles.shape[-1]
    cos, sin = angles.cos(), angles.sin()
    if pad:  # the rest of the head width is not rotated
        cos = torch.nn.functional.pad(cos, (0, pad), value=1.0)
        sin = torch.nn.functional.pad(sin, (0, pad), value=0.0)
    return cos[:, None], sin[:, None]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, axes: int) -> torch.Tensor:
    """x [B, H, K, hd] rotated by (cos, sin) [B, 1, K, hd] of rope_angles with `axes` axes."""
    head_dim = x.shape[-1]
    per_axis = (head_dim // axes) // 2 * 2
    rotated = x.new_empty(x.shape)
    rotated[..., axes * per_axis:] = 0  # unrotated remainder: sin is 0 there
    for a in range(axes):
        lo, mid, hi = a * per_axis, a * per_axis + per_axis // 2, (a + 1) * per_axis
        rotated[..., lo:mid] = -x[..., mid:hi]
        rotated[..., mid:hi] = x[..., lo:mid]
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)
