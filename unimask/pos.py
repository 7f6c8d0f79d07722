"""Fixed sin-cos position codes for coordinates of any arity, at any width.

MAE and VideoMAE use 2-D / 3-D sin-cos tables; here the table is computed from the token
coordinates themselves, so one function serves grids, xyz centres and sequence positions,
and ragged or shuffled token sets get the right code without a lookup table.
"""
from __future__ import annotations

import torch


def axis_frequencies(n_axes: int, dim: int, temperature: float, device) -> tuple:
    """Each of n_axes gets an even share per_axis of dim; -> (per_axis, omega [per_axis / 2]),
    the frequencies 1 / temperature^(i / half) shared by sin-cos codes and rotary angles."""
    per_axis = (dim // n_axes) // 2 * 2
    if per_axis == 0:
        raise ValueError(f"position width {dim} is too small for {n_axes} coordinate axes")
    half = per_axis // 2
    return per_axis, 1.0 / temperature ** (torch.arange(half, device=device, dtype=torch.float32) / half)


def sincos_pos(coords: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """coords [..., C] float -> [..., dim]; each axis gets an even share of dim, rest zero-padded."""
    per_axis, omega = axis_frequencies(coords.shape[-1], dim, temperature, coords.device)  # omega [half]
    angles = coords.float()[..., None] * omega  # [..., C, half]
    codes = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # [..., C * per_axis]
    pad = dim - codes.shape[-1]
    if pad:
        codes = torch.nn.functional.pad(codes, (0, pad))
    return codes
