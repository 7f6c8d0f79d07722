"""What every masker shares: ratio checks, the counting rule, and unit-wise hiding.

Counting rule (DESIGN.md): hide exactly round(ratio * n_units) units per sample, where a
unit is what the masker hides whole; padding is never hidden nor visible and every
sample keeps at least one visible token.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from unimask.tokens import Mask, Tokens

Ratio = Union[float, torch.Tensor]


def ratio_tensor(ratio: Ratio, batch_size: int, device) -> torch.Tensor:
    """float or [B] -> [B] float, checked to lie in [0, 1)."""
    r = torch.as_tensor(ratio, dtype=torch.float32, device=device)
    if r.dim() == 0:
        r = r.expand(batch_size)
    if r.shape != (batch_size,):
        raise ValueError(f"mask ratio must be a float or a [B]={batch_size} tensor, got shape {tuple(r.shape)}")
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()) or bool((r >= 1).any()):
        raise ValueError(f"mask ratio must lie in [0, 1), got {r.tolist()}")
    return r


def count_hidden(ratio: torch.Tensor, n_units: torch.Tensor) -> torch.Tensor:
    """round(ratio * n_units), half away from zero. ratio [B], n_units [B] or int -> [B] long."""
    return torch.floor(ratio * n_units + 0.5).long()


def hide_lowest(scores: torch.Tensor, n_hide: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Hide the n_hide[b] valid units with the lowest score.

    scores [B, U] float, n_hide [B] long, valid [B, U] bool -> hidden [B, U] bool.
    """
    scores = scores.masked_fill(~valid, float("inf"))
    rank = torch.argsort(torch.argsort(scores, dim=1), dim=1)  # [B, U] rank of each unit
    return (rank < n_hide[:, None]) & valid


def random_scores(shape, generator: Optional[torch.Generator], device) -> torch.Tensor:
    """Uniform noise from the masking generator (kept on its device, moved after)."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def top_up(hidden: torch.Tensor, want: torch.Tensor, valid: torch.Tensor, generator) -> torch.Tensor:
    """Add or remove random tokens so each sample hides exactly want[b] tokens.

    Used where a pattern (blocks, spans) cannot hit the count exactly.
    hidden [B, N] bool, want [B] long, valid [B, N] bool -> [B, N] bool.
    """
    noise = random_scores(hidden.shape, generator, hidden.device)
    # hidden tokens first (low score), then the rest in random order; take exactly `want`
    scores = noise + (~hidden).float() * 2.0
    return hide_lowest(scores, want, valid)


class Masker:
    """Base: subclasses implement `hide(tokens, ratio [B], generator) -> [B, N] bool`."""

    def hide(self, tokens: Tokens, ratio: torch.Tensor, generator) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, tokens: Tokens, ratio: Ratio, generator: Optional[torch.Generator] = None, **kwargs) -> Mask:
        ratio = ratio_tensor(ratio, tokens.batch_size, tokens.patches.device)
        valid = tokens.valid_mask()
        if bool((valid.sum(1) < 1).any()):
            raise ValueError("every sample needs at least one valid token to mask")
        hidden = self.hide(tokens, ratio, generator, **kwargs) & valid
        hidden = keep_one_visible(hidden, valid)
        return Mask.from_hidden(hidden, valid, ratio)


def keep_one_visible(hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Un-hide the first valid token of any sample that would have none visible. [B, N] -> [B, N]."""
    none_visible = ~(valid & ~hidden).any(1)  # [B]
    if bool(none_visible.any()):
        first_valid = torch.argmax(valid.int(), dim=1)  # [B]
        fix = torch.zeros_like(hidden).scatter_(1, first_valid[:, None], True) & none_visible[:, None]
        hidden = hidden & ~fix
    return hidden


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
