"""Spatially coherent maskers: BEiT's blockwise rectangles on a grid, and Point-MAE's block
of nearest neighbours around a seed token in coordinate space."""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import gin
import torch

from unimask.interfaces import Masker
from unimask.masking.base import count_hidden, grid_layout, hide_lowest, random_scores, top_up


def grow_patterns(propose: Callable[[torch.Tensor], torch.Tensor], valid: torch.Tensor, want: torch.Tensor,
                  patience: int = 10, max_rounds: int = 10_000) -> torch.Tensor:
    """Union of random patterns (boxes) grown until each row hides `want` units.

    Every round `propose(remaining [R] long)` returns K candidates per row, [R, K, U] bool,
    tried in order: the first that adds between 1 and `remaining` new units is taken, so the
    count is never overshot (BEiT's rule). Trying K at once is the same as trying them one
    after another, since a rejection leaves the mask unchanged; it only saves rounds. A row
    stops after `patience` rejections in a row (BEiT's 10 attempts per block) and leaves the
    rest to `top_up`. The loop runs over rounds, never over samples or tokens.
    valid [R, U] bool, want [R] long -> hidden [R, U] bool.
    """
    hidden = torch.zeros_like(valid)
    failures = torch.zeros(valid.shape[0], dtype=torch.long, device=valid.device)
    for _ in range(max_rounds):
        remaining = want - hidden.sum(1)  # [R]
        active = (remaining > 0) & (failures < patience)
        if not bool(active.any()):
            break
        candidates = propose(remaining) & valid[:, None]  # [R, K, U]
        new = (candidates & ~hidden[:, None]).sum(2)  # [R, K]
        fits = (new > 0) & (new <= remaining[:, None])
        first = torch.argmax(fits.int(), dim=1)  # [R] first fitting candidate (0 if none)
        accept = active & fits.any(1) & (failures + first < patience)  # within the attempts left
        chosen = torch.gather(candidates, 1, first[:, None, None].expand(-1, 1, candidates.shape[2])).squeeze(1)
        hidden = hidden | (chosen & accept[:, None])
        failures = torch.where(accept, torch.zeros_like(failures), failures + candidates.shape[1] * active.long())
    return hidden


@gin.configurable
class BlockMasker(Masker):
    """BEiT (Bao et al. 2022) blockwise masking on a 2-D or 3-D grid.

    Random rectangles with an area drawn uniformly in [min_block, min(max_block, remaining)]
    tokens and an aspect ratio log-uniform in [min_aspect, 1 / min_aspect] are added while
    they fit the remaining budget (BEiT: min_block 16, aspect 0.3); random tokens make the
    count exact. On a (T, H, W) grid, mode='slot' draws blocks in every time slot
    independently (each slot hides its own share), mode='cube' draws 3-D boxes (BEVT's
    block-wise tube masking) whose temporal extent is uniform in [min_slots, T] (default
    half the slots) and whose volume follows the area rule.
    """

    def __init__(self, min_block: int = 16, max_block: Optional[int] = None, min_aspect: float = 0.3,
                 max_aspect: Optional[float] = None, mode: str = "slot", min_slots: Optional[int] = None,
                 patience: int = 10, proposals: int = 8):
        if mode not in ("slot", "cube"):
            raise ValueError(f"BlockMasker.mode must be 'slot' or 'cube', got {mode!r}")
        if min_block < 1 or min_aspect <= 0:
            raise ValueError(f"BlockMasker needs min_block >= 1 and min_aspect > 0, got {min_block}, {min_aspect}")
        max_aspect = max_aspect if max_aspect is not None else 1 / min_aspect
        self.min_block, self.max_block, self.mode, self.patience = min_block, max_block, mode, patience
        self.min_slots, self.proposals = min_slots, proposals
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))

    def hide(self, tokens, ratio, generator):
        t, h, w = grid_layout(tokens, "BlockMasker")
        valid = tokens.valid_mask()  # [B, N]
        batch = valid.shape[0]
        depth = t if self.mode == "cube" else 1  # time slots one row of boxes spans
        rows_valid = valid.reshape(batch * t // depth, depth * h * w)  # [R, U]: a sample, or one slot of it
        row_ratio = ratio.repeat_interleave(t // depth)
        want = count_hidden(row_ratio, rows_valid.sum(1))
        hidden = grow_patterns(lambda remaining: self.propose_boxes(remaining, (depth, h, w), generator),
                               rows_valid, want, self.patience)
        return top_up(hidden.reshape(batch, -1), count_hidden(ratio, valid.sum(1)), valid, generator)

    def propose_boxes(self, remaining: torch.Tensor, layout: tuple, generator) -> torch.Tensor:
        """`proposals` random boxes per row, sized by the remaining budget.
        remaining [R] -> [R, K, D*H*W] bool."""
        depth, h, w = layout
        rows, device = remaining.shape[0], remaining.device
        u = random_scores((6, rows, self.proposals), generator, device)  # [6, R, K]
        cap = remaining.clamp(min=1).double()[:, None]  # [R, 1]
        if self.max_block is not None:
            cap = cap.clamp(max=self.max_block)
        volume = self.min_block + (cap - self.min_block) * u[0]  # BEiT: uniform(min, max), either order
        aspect = torch.exp(self.log_aspect[0] + (self.log_aspect[1] - self.log_aspect[0]) * u[1].double())
        shortest = min(depth, self.min_slots if self.min_slots is not None else max(1, depth // 2))
        extent_t = shortest + torch.floor(u[2] * (depth - shortest + 1)).long()  # [R, K] in shortest..depth
        area = volume / extent_t
        extent_h = torch.round(torch.sqrt(area * aspect)).long().clamp(1, h)
        extent_w = torch.round(torch.sqrt(area / aspect)).long().clamp(1, w)
        start_t = torch.floor(u[3] * (depth - extent_t + 1)).long()
        start_h = torch.floor(u[4] * (h - extent_h + 1)).long()
        start_w = torch.floor(u[5] * (w - extent_w + 1)).long()
        inside = []
        for size, start, extent in ((depth, start_t, extent_t), (h, start_h, extent_h), (w, start_w, extent_w)):
            index = torch.arange(size, device=device)
            inside.append((index >= start[..., None]) & (index < (start + extent)[..., None]))  # [R, K, size]
        box = inside[0][..., :, None, None] & inside[1][..., None, :, None] & inside[2][..., None, None, :]
        return box.reshape(rows, self.proposals, -1)


@gin.configurable
class PointBlockMasker(Masker):
    """Point-MAE (Pang et al. 2022) block masking: a random seed token and its nearest
    neighbours by `Tokens.coords` distance (xyz centres), exactly round(ratio * N) of them.

    dims picks the coordinate columns to measure (None: all). On grid tokens it hides a
    disc around the seed.
    """

    def __init__(self, dims: Optional[Sequence[int]] = None):
        self.dims = list(dims) if dims is not None else None

    def hide(self, tokens, ratio, generator):
        valid = tokens.valid_mask()  # [B, N]
        coords = tokens.coords.float() if self.dims is None else tokens.coords[..., self.dims].float()  # [B, N, C]
        seed_score = random_scores(valid.shape, generator, valid.device).masked_fill(~valid, 2.0)
        seed = torch.argmin(seed_score, dim=1)  # [B] a random real token
        seed_coords = torch.gather(coords, 1, seed[:, None, None].expand(-1, 1, coords.shape[-1]))  # [B, 1, C]
        distance = (coords - seed_coords).norm(dim=-1)  # [B, N]
        return hide_lowest(distance, count_hidden(ratio, valid.sum(1)), valid)
