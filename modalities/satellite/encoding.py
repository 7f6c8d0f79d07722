"""SatMAE's position code: fixed sin-cos parts CONCATENATED along the width, not summed.

    [ 2-D spatial (row, col) | 1-D band group | time: year, month, hour (1-D each) ]

SatMAE gives the group code 256 of ViT-L's 1024 encoder dims and 128 of the decoder's 512
(a quarter), and temporal SatMAE gives the time code 3 x 128 of 1024 and 3 x 64 of 512
(three eighths); the shares below reproduce both at any width, so one `pos(coords, dim)`
serves the encoder and the decoder. A single group gets no group part (SatMAE's temporal
model has none), single-date data no time part.

Token coords, the columns this reads: (frame, group, row, col[, year, month, hour]).
"""
from __future__ import annotations

import torch

from unimask.pos import sincos_pos

FRAME, GROUP, ROW, COL = 0, 1, 2, 3  # coords columns; the time fields follow when temporal
TIME = slice(4, 7)


def even(x: float) -> int:
    return int(round(x / 2)) * 2


def pos_widths(dim: int, n_groups: int, temporal: bool, group_share: float, time_share: float) -> tuple:
    """-> (spatial, group, time) widths summing to dim; time is three even field widths."""
    group = even(dim * group_share) if n_groups > 1 else 0
    time = 3 * even(dim * time_share / 3) if temporal else 0
    spatial = dim - group - time
    if spatial < 4 or (n_groups > 1 and group < 2) or (temporal and time < 6):
        raise ValueError(f"position width {dim} is too small for its parts (spatial {spatial}, group {group}, "
                         f"time {time}): widen the model or lower SatelliteAdapter.group_pos_share/time_pos_share")
    return spatial, group, time


def satellite_pos(coords: torch.Tensor, dim: int, n_groups: int, temporal: bool, group_share: float = 0.25,
                  time_share: float = 0.375) -> torch.Tensor:
    """coords [..., 4 or 7] -> [..., dim]: cat(spatial 2-D sin-cos, group sin-cos, time sin-cos)."""
    spatial, group, time = pos_widths(dim, n_groups, temporal, group_share, time_share)
    parts = [sincos_pos(coords[..., ROW:COL + 1], spatial)]
    if group:
        parts.append(sincos_pos(coords[..., GROUP:GROUP + 1], group))
    if time:
        parts.append(sincos_pos(coords[..., TIME], time))
    return torch.cat(parts, -1)
