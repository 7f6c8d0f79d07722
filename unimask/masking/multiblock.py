"""MultiBlockMasker: I-JEPA's target blocks and context block (Assran et al., CVPR 2023), and on a
(T, H, W) grid V-JEPA's multi-block tubes (Bardes et al., 2024); on tokens without a grid the
blocks are nearest-neighbour sets in coordinate space.

Why a masker of its own: a latent-prediction model needs to know *which* target block each hidden
token belongs to (the predictor predicts each block from the context), and its hidden share comes
from the blocks' scales, not from a ratio. So the Mask it returns carries `target_blocks`
[B, M, N], `decode` = their union (the tokens the loss covers) and `ratio` = the share actually
hidden per sample; a schedule that varies is refused (`check_schedule`), since it would be ignored.

Counting rule (docs/masking.md): a block of scale s holds exactly round(s * n_units) units, where
a unit is a spatial place of the grid (H * W of them; a tube over the block's time slots on a 3-D
grid) or a real token on coordinates. On a grid the block is the first c places, row-major, of a
box of w = ceil(c / h) columns and ceil(c / w) rows, h = round(sqrt(c * aspect)) (so only its last
row may be short); on coordinates it is the c nearest real tokens to a random real seed token.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import gin
import torch

from unimask.interfaces import Masker, keep_one_visible, ratio_tensor
from unimask.masking.base import count_hidden, grid_layout, random_scores
from unimask.masking.schedules import ConstantRatio
from unimask.tokens import Mask, Tokens

LAYOUTS = ("auto", "grid", "coords")


def span(pair, name: str, low: float = 0.0, high: float = 1.0) -> tuple:
    """A (min, max) setting checked to lie in [low, high] with min <= max -> (float, float)."""
    lo, hi = (float(v) for v in pair)
    if not low <= lo <= hi <= high:
        raise ValueError(f"MultiBlockMasker.{name}={tuple(pair)}: need {low} <= min <= max <= {high}")
    return lo, hi


@gin.configurable
class MultiBlockMasker(Masker):
    """Per sample, M target blocks and (optionally) one context block from which every target token is
    removed; the encoder sees the rest of the context block, the loss covers the target blocks.

    num_targets, target_scale (share of the units, drawn uniformly per block), target_aspect (rows /
    columns, uniform per block; I-JEPA: 4, (0.15, 0.2), (0.75, 1.5)); context_scale, context_aspect
    (I-JEPA: (0.85, 1.0), 1); context_scale=None: the context is every token outside the targets
    (V-JEPA). target_slots: the share of a 3-D grid's time slots a target block spans, uniform
    (V-JEPA: (1.0, 1.0), every slot); the context block spans every slot. block_sets: several
    (num_targets, min_scale, max_scale) sets, sample b drawing from set b % len (V-JEPA's short-range
    (8, 0.15, 0.15) and long-range (2, 0.7, 0.7) masks, half the batch each, in one encoder pass;
    V-JEPA runs both on every clip); None: the one set (num_targets, *target_scale). layout: 'grid'
    (boxes on Tokens.grid), 'coords' (nearest-neighbour sets), 'auto' (grid when the tokens have one).
    min_context: a sample whose context keeps fewer tokens is drawn again, up to `retries` times
    (I-JEPA's min_keep), then left as it is (at least one visible token, the contract's rule).
    Target blocks may overlap each other, as in I-JEPA.
    """

    def __init__(self, num_targets: int = 4, target_scale: Sequence[float] = (0.15, 0.2),
                 target_aspect: Sequence[float] = (0.75, 1.5), context_scale: Optional[Sequence[float]] = (0.85, 1.0),
                 context_aspect: Sequence[float] = (1.0, 1.0), target_slots: Sequence[float] = (1.0, 1.0),
                 block_sets: Optional[Sequence[Sequence[float]]] = None, layout: str = "auto",
                 min_context: int = 1, retries: int = 20):
        if layout not in LAYOUTS:
            raise ValueError(f"MultiBlockMasker.layout={layout!r}: use one of {LAYOUTS}")
        sets = block_sets if block_sets is not None else ((num_targets, *target_scale),)
        if not sets or any(len(s) != 3 or int(s[0]) < 1 for s in sets):
            raise ValueError(f"MultiBlockMasker.block_sets={block_sets!r}: (num_targets >= 1, min_scale, max_scale) each")
        self.counts = [int(s[0]) for s in sets]
        self.scales = [span(s[1:], "target_scale") for s in sets]
        self.target_aspect = span(target_aspect, "target_aspect", 1e-3, 1e3)
        self.context_scale = None if context_scale is None else span(context_scale, "context_scale")
        self.context_aspect = span(context_aspect, "context_aspect", 1e-3, 1e3)
        self.target_slots = span(target_slots, "target_slots")
        self.layout, self.min_context, self.retries = layout, int(min_context), int(retries)

    def check_schedule(self, schedule):
        """The hidden share comes from the block scales: a schedule that varies would be silently ignored."""
        if schedule is not None and not isinstance(schedule, ConstantRatio):
            raise ValueError(f"MultiBlockMasker hides what its blocks cover (target_scale, context_scale), not a "
                             f"schedule's ratio: bind no schedule (or a ConstantRatio, whose value it ignores), "
                             f"not {type(schedule).__name__}")

    def hide(self, tokens, ratio, generator):
        return self(tokens, ratio, generator).masked

    def __call__(self, tokens: Tokens, ratio=0.0, generator: Optional[torch.Generator] = None, **kwargs) -> Mask:
        """-> Mask with target_blocks [B, M, N], decode [B, N] (their union) and ratio [B] = hidden / real
        tokens. `ratio` is checked as every masker's is, and otherwise unused."""
        batch, device = tokens.batch_size, tokens.patches.device
        ratio_tensor(ratio, batch, device)
        valid, maskable = tokens.valid_mask(), tokens.maskable_mask()
        use_grid = self.layout == "grid" or (self.layout == "auto" and tokens.grid is not None)
        layout = grid_layout(tokens, "MultiBlockMasker(layout='grid')") if use_grid else None
        sets = torch.arange(batch, device=device) % len(self.counts)
        blocks, context = self.draw(layout, tokens.coords, maskable, sets, generator)  # [B, M, N], [B, N]
        for _ in range(self.retries):
            short = (context & ~blocks.any(1)).sum(1) < torch.clamp(maskable.sum(1), max=self.min_context)
            if not bool(short.any()):
                break
            rows = short.nonzero().squeeze(1)
            blocks[rows], context[rows] = self.draw(layout, tokens.coords[rows], maskable[rows], sets[rows], generator)
        blocks = blocks & maskable[:, None]
        seen = (context & maskable & ~blocks.any(1)) | (valid & ~maskable)  # unmaskable tokens stay visible
        hidden = keep_one_visible(valid & ~seen, valid)
        blocks = blocks & hidden[:, None]
        share = hidden.sum(1).double() / valid.sum(1).clamp(min=1).double()
        mask = Mask.from_hidden(hidden, valid, share)
        mask.decode, mask.target_blocks = blocks.any(1), blocks
        return mask

    # ---- drawing ---------------------------------------------------------------------------
    def draw(self, layout: Optional[tuple], coords: torch.Tensor, valid: torch.Tensor, sets: torch.Tensor,
             generator) -> tuple:
        """Target blocks and the context block of R samples. layout (T, H, W) or None (coordinates),
        coords [R, N, C], valid [R, N] (the units that may be hidden), sets [R] long ->
        (blocks [R, M, N] bool, context [R, N] bool; all True when there is no context block)."""
        rows, m = valid.shape[0], max(self.counts)
        lo = torch.tensor([s[0] for s in self.scales], dtype=torch.float64, device=valid.device)[sets]
        hi = torch.tensor([s[1] for s in self.scales], dtype=torch.float64, device=valid.device)[sets]
        used = torch.arange(m, device=valid.device)[None] < torch.tensor(self.counts, device=valid.device)[sets][:, None]
        u = random_scores((rows, m + 1), generator, valid.device).double()  # the scale of every block
        scale = torch.cat([lo[:, None] + (hi - lo)[:, None] * u[:, :m], u[:, m:]], 1)  # [R, M + 1]
        if self.context_scale is not None:
            scale[:, m] = self.context_scale[0] + (self.context_scale[1] - self.context_scale[0]) * u[:, m]
        if layout is None:
            found = self.near_sets(coords, valid, scale, generator)  # [R, M + 1, N]
        else:
            found = self.boxes(layout, valid, scale, m, generator)
        blocks = found[:, :m] & used[..., None]
        context = found[:, m] if self.context_scale is not None else torch.ones_like(valid)
        return blocks & valid[:, None], context & valid

    def boxes(self, layout: tuple, valid: torch.Tensor, scale: torch.Tensor, m: int, generator) -> torch.Tensor:
        """Row-major-filled boxes of exactly round(scale * H * W) places (module docstring), over a
        random run of time slots for targets and every slot for the context. scale [R, M + 1] -> [R, M + 1, N]."""
        t, h, w = layout
        rows, device = scale.shape[0], scale.device
        u = random_scores((5, rows, m + 1), generator, device).double()  # aspect, top, left, slots, start
        count = count_hidden(scale.flatten(), h * w).view(rows, m + 1).clamp(1, h * w)  # [R, M + 1] places
        aspect_lo = torch.tensor([self.target_aspect[0]] * m + [self.context_aspect[0]], dtype=torch.float64, device=device)
        aspect_hi = torch.tensor([self.target_aspect[1]] * m + [self.context_aspect[1]], dtype=torch.float64, device=device)
        aspect = aspect_lo + (aspect_hi - aspect_lo) * u[0]
        tall = torch.round(torch.sqrt(count * aspect)).long()
        tall = torch.maximum(torch.minimum(tall, count.clamp(max=h)), torch.div(count + w - 1, w, rounding_mode="floor"))
        wide = torch.div(count + tall - 1, tall, rounding_mode="floor")  # columns, <= W since tall >= ceil(c / W)
        high = torch.div(count + wide - 1, wide, rounding_mode="floor")  # rows actually filled
        top = torch.floor(u[1] * (h - high + 1)).long()
        left = torch.floor(u[2] * (w - wide + 1)).long()
        share = torch.cat([self.target_slots[0] + (self.target_slots[1] - self.target_slots[0]) * u[3, :, :m],
                           torch.ones_like(u[3, :, m:])], 1)
        slots = torch.floor(share * t).long().clamp(1, t)  # V-JEPA: max(1, int(T * temporal scale))
        start = torch.floor(u[4] * (t - slots + 1)).long()
        i = torch.arange(h, device=device) - top[..., None]  # [R, M + 1, H] row inside the box
        j = torch.arange(w, device=device) - left[..., None]  # [R, M + 1, W]
        order = i[..., :, None] * wide[..., None, None] + j[..., None, :]  # [R, M + 1, H, W] place in fill order
        inside = (i[..., :, None] >= 0) & (j[..., None, :] >= 0) & (j[..., None, :] < wide[..., None, None])
        place = inside & (order < count[..., None, None])
        k = torch.arange(t, device=device) - start[..., None]
        in_time = (k >= 0) & (k < slots[..., None])  # [R, M + 1, T]
        return (in_time[..., :, None, None] & place[..., None, :, :]).reshape(rows, m + 1, t * h * w)

    def near_sets(self, coords: torch.Tensor, valid: torch.Tensor, scale: torch.Tensor, generator) -> torch.Tensor:
        """The round(scale * real tokens) nearest real tokens to a random real seed token, per block.
        coords [R, N, C], valid [R, N], scale [R, M + 1] -> [R, M + 1, N]."""
        rows, n = valid.shape
        blocks = scale.shape[1]
        seed_score = random_scores((rows, blocks, n), generator, valid.device).masked_fill(~valid[:, None], 2.0)
        seed = torch.argmin(seed_score, dim=2)  # [R, M + 1] a random real token each
        points = coords.float()
        seed_at = torch.gather(points, 1, seed[..., None].expand(-1, -1, points.shape[-1]))  # [R, M + 1, C]
        distance = torch.cdist(seed_at, points).masked_fill(~valid[:, None], math.inf)  # [R, M + 1, N]
        rank = torch.argsort(torch.argsort(distance, dim=2, stable=True), dim=2)
        count = count_hidden(scale.flatten(), valid.sum(1).repeat_interleave(blocks)).view(rows, blocks)
        return (rank < count[..., None]) & valid[:, None]
