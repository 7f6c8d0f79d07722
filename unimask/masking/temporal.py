"""Maskers along one axis: whole time slots (frames), running cells, contiguous spans."""
from __future__ import annotations

import math
from typing import Optional

import gin
import torch

from unimask.interfaces import Masker
from unimask.masking.base import (count_hidden, grid_axis_index, grid_layout, hide_lowest, hide_random_units,
                                  random_scores, spread_units, top_up, unit_validity)


@gin.configurable
class FrameMasker(Masker):
    """Hide whole slices of the grid along `axis` (axis 0 = time slots of a (T, H, W) grid).

    Frame masking as compared in VideoMAE (Tong et al. 2022); on a 2-D (frequency, time)
    grid, axis=1 hides whole time columns. A unit is one slice: round(ratio * slices) are hidden.
    """

    def __init__(self, axis: int = 0):
        self.axis = axis

    def hide(self, tokens, ratio, generator):
        slice_of_token, n_slices = axis_units(tokens, self.axis, "FrameMasker")
        slices_valid = unit_validity(tokens.valid_mask(), slice_of_token, n_slices)  # [B, S]
        return spread_units(hide_random_units(slices_valid, ratio, generator), slice_of_token)


def axis_units(tokens, axis: int, name: str) -> tuple:
    """Slices of the grid along `axis` as units -> ([N] slice of each token, number of slices)."""
    if tokens.grid is None or not -len(tokens.grid) <= axis < len(tokens.grid):
        raise ValueError(f"{name}(axis={axis}) needs a grid with that axis, tokens have grid {tokens.grid}")
    return grid_axis_index(tokens.grid, axis, tokens.patches.device), int(tokens.grid[axis])


def running_cell_pattern(grid: tuple, n_hidden_per_cell: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """VideoMAE v2's running cell: in every 2x2 cell, position p = 2 * (h % 2) + (w % 2) is
    hidden at slot t when (p + offset + t + 1) % 4 < n_hidden_per_cell, so the hidden
    positions rotate by one each slot and every place is hidden in n/4 of the slots.

    grid (T, H, W), n_hidden_per_cell [B] long, offset [B] long -> [B, T*H*W] bool.
    """
    t, h, w = grid
    device = offset.device
    slot = torch.arange(t, device=device).view(t, 1, 1)
    cell_pos = 2 * (torch.arange(h, device=device).view(1, h, 1) % 2) + torch.arange(w, device=device).view(1, 1, w) % 2
    phase = (cell_pos + slot + 1).reshape(1, -1) + offset[:, None]  # [B, N]
    return phase % 4 < n_hidden_per_cell[:, None]


@gin.configurable
class RunningCellMasker(Masker):
    """VideoMAE v2 (Wang et al. 2023) running-cell masking, the decoder masker of dual masking.

    floor(4 * ratio) of the 4 positions of each 2x2 cell are hidden, shifting by one
    position per time slot from a random start per sample (ratio 0.5: 2 of 4). The pattern
    is laid on the full grid and ignores `valid`; only the count is fitted to the valid
    tokens (random top-up or trim), which leaves the pattern untouched where it already fits,
    e.g. under a tube mask with T a multiple of 4. As `MaskedModel.decoder_masker` the valid
    tokens are the encoder-hidden ones, and the decoder reconstructs those the cell leaves visible.
    """

    def hide(self, tokens, ratio, generator):
        grid = grid_layout(tokens, "RunningCellMasker")
        valid = tokens.valid_mask()
        offset = (random_scores(tokens.batch_size, generator, valid.device) * 4).long()  # [B] start of the cycle
        hidden = running_cell_pattern(grid, torch.floor(ratio * 4).long(), offset)  # [B, N]
        return top_up(hidden & valid, count_hidden(ratio, valid.sum(1)), valid, generator)


def truncated_geometric(shape, p: float, max_len: int, generator, device) -> torch.Tensor:
    """SpanBERT span lengths: Geo(p) on {1, 2, ...} renormalized to {1..max_len} (mean 3.8 at 0.2, 10)."""
    u = random_scores(shape, generator, device)
    q = 1.0 - p
    length = torch.floor(torch.log1p(-u * (1 - q ** max_len)) / math.log(q)) + 1
    return length.clamp(1, max_len).long()


def span_units(unit_valid: torch.Tensor, want: torch.Tensor, lengths: torch.Tensor, generator) -> torch.Tensor:
    """Hide exactly want[b] of the valid units in contiguous spans.

    Spans take lengths[b, 0], lengths[b, 1]... until `want` is reached (the last one cut to
    fit); the spans and the visible units are then shuffled into one random sequence, so
    spans never overlap and the count is exact without any top-up (adjacent spans merge).
    Padding units are skipped: spans run over the valid units in order.
    unit_valid [B, U] bool, want [B] long, lengths [B, U] long >= 1 -> [B, U] bool.
    """
    batch, units = unit_valid.shape
    device = unit_valid.device
    starts = torch.cumsum(lengths, 1) - lengths  # [B, U] hidden units before span j
    used = starts < want[:, None]
    span_len = torch.where(used, torch.minimum(lengths, want[:, None] - starts), 0)
    n_spans = used.sum(1)
    n_items = unit_valid.sum(1) - want + n_spans  # visible units + spans, <= valid units
    item_ok = torch.arange(units, device=device)[None] < n_items[:, None]
    is_span = hide_lowest(random_scores((batch, units), generator, device), n_spans, item_ok)  # [B, U]
    span_index = (torch.cumsum(is_span.long(), 1) - 1).clamp(min=0)
    item_len = torch.where(is_span, torch.gather(span_len, 1, span_index), item_ok.long())
    item_start = torch.cumsum(item_len, 1) - item_len  # position along the valid units
    edges = torch.zeros(batch, units + 1, dtype=torch.long, device=device)
    edges.scatter_add_(1, item_start, is_span.long()).scatter_add_(1, item_start + item_len, -is_span.long())
    hidden_compact = torch.cumsum(edges, 1)[:, :units] > 0  # [B, U] along the valid units
    valid_order = torch.argsort((~unit_valid).to(torch.int8), dim=1, stable=True)  # valid units first
    return torch.zeros_like(unit_valid).scatter(1, valid_order, hidden_compact)


@gin.configurable
class SpanMasker(Masker):
    """Contiguous spans (SpanBERT, Joshi et al. 2020) along token order or one grid axis.

    axis=None: spans of tokens in sequence order (text, 1-D signals). axis=k: spans of
    whole slices along grid axis k (axis 0 = contiguous time slots). Span lengths follow
    SpanBERT's geometric distribution (p=0.2, at most max_len=10) or are fixed with
    `length`. A unit is a token (or a slice); round(ratio * units) are hidden exactly.
    """

    def __init__(self, p: float = 0.2, max_len: int = 10, length: Optional[int] = None, axis: Optional[int] = None):
        if not 0 < p < 1 or max_len < 1 or (length is not None and length < 1):
            raise ValueError(f"SpanMasker needs 0 < p < 1, max_len >= 1, length >= 1; got {p}, {max_len}, {length}")
        self.p, self.max_len, self.length, self.axis = p, max_len, length, axis

    def hide(self, tokens, ratio, generator):
        valid = tokens.valid_mask()  # [B, N]
        if self.axis is None:
            unit_valid, unit_of_token = valid, None
        else:
            unit_of_token, n_units = axis_units(tokens, self.axis, "SpanMasker")
            unit_valid = unit_validity(valid, unit_of_token, n_units)
        if self.length is None:
            lengths = truncated_geometric(unit_valid.shape, self.p, self.max_len, generator, valid.device)
        else:
            lengths = torch.full(unit_valid.shape, self.length, dtype=torch.long, device=valid.device)
        hidden_units = span_units(unit_valid, count_hidden(ratio, unit_valid.sum(1)), lengths, generator)
        return hidden_units if unit_of_token is None else spread_units(hidden_units, unit_of_token)
