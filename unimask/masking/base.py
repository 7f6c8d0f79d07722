"""The building blocks maskers share: the counting rule and unit-wise hiding.

The Masker contract itself (its __call__, the [0, 1) ratio check and the one-visible-token rule)
is in unimask/interfaces.py. Counting rule (docs/masking.md): hide exactly
round(ratio * n_units) units per sample, where a unit is what the masker hides whole; padding is
never hidden nor visible and every sample keeps at least one visible token.

Helpers here are the building blocks of every masker in this package:
  hide_lowest           exact top-k hiding by score (the whole of random masking)
  top_up                make a pattern's count exact with random tokens
  grid_axis_index       token -> slice index along one grid axis (frames, rows)
  unit_validity         which units hold at least one real token
  hide_random_units     random masking of whole units; spread_units maps units back to tokens
  random_rank_in_group  per-group random order, so groups are masked independently in one pass
"""
from __future__ import annotations

from typing import Optional

import torch

from unimask.tokens import Tokens


def count_hidden(ratio: torch.Tensor, n_units: torch.Tensor) -> torch.Tensor:
    """round(ratio * n_units), half away from zero, in float64. ratio [B], n_units [B] or int -> [B] long."""
    return torch.floor(ratio.double() * n_units + 0.5).long()


def hide_lowest(scores: torch.Tensor, n_hide: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Hide the n_hide[b] valid units with the lowest score.

    scores [B, U] float, n_hide [B] long, valid [B, U] bool -> hidden [B, U] bool.
    """
    scores = scores.masked_fill(~valid, float("inf"))
    rank = torch.argsort(torch.argsort(scores, dim=1), dim=1)  # [B, U] rank of each unit
    return (rank < n_hide[:, None]) & valid


def random_scores(shape, generator: Optional[torch.Generator], device) -> torch.Tensor:
    """Uniform noise in [0, 1) from the masking generator (drawn on its device, moved after)."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def random_normal(shape, generator: Optional[torch.Generator], device) -> torch.Tensor:
    """Standard normal noise from the masking generator."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


def top_up(hidden: torch.Tensor, want: torch.Tensor, valid: torch.Tensor, generator) -> torch.Tensor:
    """Add or remove random tokens so each sample hides exactly want[b] tokens.

    Used where a pattern (blocks, spans) cannot hit the count exactly.
    hidden [B, N] bool, want [B] long, valid [B, N] bool -> [B, N] bool.
    """
    noise = random_scores(hidden.shape, generator, hidden.device)
    # hidden tokens first (low score), then the rest in random order; take exactly `want`
    scores = noise + (~hidden).float() * 2.0
    return hide_lowest(scores, want, valid)


def grid_axis_index(grid: tuple, axis: int, device) -> torch.Tensor:
    """[N] long: the index along grid axis `axis` of every token of a row-major grid."""
    grid = tuple(int(g) for g in grid)
    if not -len(grid) <= axis < len(grid):
        raise ValueError(f"axis {axis} does not exist in the token grid {grid}")
    axis = axis % len(grid)
    shape = [1] * len(grid)
    shape[axis] = grid[axis]
    return torch.arange(grid[axis], device=device).view(shape).expand(grid).reshape(-1)


def unit_validity(valid: torch.Tensor, unit_of_token: torch.Tensor, n_units: int) -> torch.Tensor:
    """A unit is real if any of its tokens is. valid [B, N], unit_of_token [N] long -> [B, U] bool."""
    batch = valid.shape[0]
    unit_valid = torch.zeros(batch, n_units, dtype=torch.bool, device=valid.device)
    return unit_valid.scatter_reduce_(1, unit_of_token.expand(batch, -1), valid, "amax")


def spread_units(hidden_units: torch.Tensor, unit_of_token: torch.Tensor) -> torch.Tensor:
    """Unit decisions back to tokens. hidden_units [B, U], unit_of_token [N] -> [B, N] bool."""
    return torch.gather(hidden_units, 1, unit_of_token.expand(hidden_units.shape[0], -1))


def hide_random_units(unit_valid: torch.Tensor, ratio: torch.Tensor, generator) -> torch.Tensor:
    """Random masking of whole units (cells, tubes, slices, columns): exactly
    round(ratio * real units) of them. unit_valid [B, U] bool, ratio [B] -> [B, U] bool."""
    noise = random_scores(unit_valid.shape, generator, unit_valid.device)
    return hide_lowest(noise, count_hidden(ratio, unit_valid.sum(1)), unit_valid)


def group_ids(tokens: Tokens):
    """-> (Tokens.group as [N] long on the tokens' device, number of groups)."""
    if tokens.group is None:
        raise ValueError("this masker needs Tokens.group (the group of each token), and these tokens have none")
    ids = tokens.group.to(tokens.patches.device).long()
    if ids.shape != (tokens.num_tokens,) or bool((ids < 0).any()):
        raise ValueError(f"Tokens.group must be [N]={tokens.num_tokens} non-negative ids, got shape {tuple(ids.shape)}")
    return ids, int(ids.max()) + 1


def random_rank_in_group(ids: torch.Tensor, n_groups: int, valid: torch.Tensor, generator) -> torch.Tensor:
    """Random order of the real tokens inside each group. ids [N], valid [B, N] -> [B, N] long
    (0 .. real tokens of the group - 1; padding ranks after them).

    Two stable sorts (random score, then group with padding last) order every group at once.
    """
    batch, n = valid.shape
    by_score = torch.argsort(random_scores((batch, n), generator, valid.device), dim=1)  # [B, N]
    group_key = (ids[None] * 2 + (~valid).long()).expand(batch, n)
    by_group = torch.argsort(torch.gather(group_key, 1, by_score), dim=1, stable=True)
    position = torch.argsort(torch.gather(by_score, 1, by_group), dim=1)  # place in (group, padding, score) order
    group_size = torch.bincount(ids, minlength=n_groups)
    group_start = torch.cumsum(group_size, 0) - group_size  # [G]
    return position - group_start[ids][None]


def grid_layout(tokens: Tokens, name: str) -> tuple:
    """(T, H, W) view of tokens.grid, a 2-D grid counting as T = 1."""
    if tokens.grid is None:
        raise ValueError(f"{name} needs Tokens.grid (a dense layout), and these tokens have none")
    grid = tuple(int(g) for g in tokens.grid)
    if len(grid) == 2:
        return (1,) + grid
    if len(grid) == 3:
        return grid
    raise ValueError(f"{name} handles 2-D (H, W) or 3-D (T, H, W) grids, got {grid}")
