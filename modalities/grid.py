"""Dense inputs cut into a regular grid of patches, in any number of axes: the shared half of the
image, video, spectrogram and multi-band adapters.

    patchify / unpatchify   [B, C, *S] <-> [B, N, prod(patch) * C], N-D (unimask/patches.py)
    grid_coords             [B, N, d] integer grid positions (the coords of grid tokens)
    GridAdapter             tokenize (patchify + grid + patch_shape), a linear patch embedding,
                            panels for pictures; subclasses add their input checks and render
    check_divisible / check_input / default_norm / save_rows   shared settings checks and output
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from unimask.interfaces import ModalityAdapter
from unimask.pos import sincos_pos
from unimask.patches import patchify, unpatchify
from unimask.tokens import Tokens

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_norm(channels: int, mean, std):
    """ImageNet statistics for RGB, 0.5 / 0.5 for any other channel count."""
    if mean is None:
        mean = IMAGENET_MEAN if channels == 3 else (0.5,) * channels
    if std is None:
        std = IMAGENET_STD if channels == 3 else (0.5,) * channels
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries for {channels} channels")
    return tuple(mean), tuple(std)


def grid_coords(grid: Sequence[int], batch: int, device) -> torch.Tensor:
    """Integer grid positions of every token: [B, prod(grid), len(grid)] float."""
    axes = torch.meshgrid(*[torch.arange(g, device=device, dtype=torch.float32) for g in grid], indexing="ij")
    return torch.stack(axes, -1).reshape(1, -1, len(grid)).expand(batch, -1, -1)


def learned_grid_for(pos_embed: str, grid: Sequence[Optional[int]], owner: str) -> Optional[tuple]:
    """The token grid of a learned position table (pos_embed='learned'), None for fixed sin-cos;
    an error naming `owner`.pos_embed for anything else, or for a grid of unknown size."""
    if pos_embed not in ("sincos", "learned"):
        raise ValueError(f"{owner}.pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
    if pos_embed == "sincos":
        return None
    if any(g is None for g in grid):
        raise ValueError(f"{owner}.pos_embed='learned' needs a fixed input size (a table has one row per token)")
    return tuple(grid)


def source_grid(n: int, like: Sequence[int]) -> tuple:
    """The grid of a table with n rows that was made for an input like `like` but of another
    size: square in the last two axes, the leading axes kept when they divide n."""
    lead = int(np.prod(like[:-2])) if len(like) > 2 else 1
    side = math.isqrt(n // lead) if n % lead == 0 else 0
    if side * side * lead != n:
        raise ValueError(f"a position table of {n} rows does not fit a grid like {tuple(like)}")
    return tuple(like[:-2]) + (side, side)


def check_divisible(*pairs):
    """At build time: every input size must be a multiple of its patch size; the error names both
    gin bindings. pairs: ((size binding, size), (patch binding, patch)), one per axis."""
    for (size_name, size), (patch_name, patch) in pairs:
        if patch < 1 or size % patch:
            raise ValueError(f"{size_name}={size} is not divisible by {patch_name}={patch}")


def check_input(x: torch.Tensor, shape: Sequence[int], what: str):
    """Raise naming the parameter when a batch does not have the recipe's shape."""
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{what} batch has shape {tuple(x.shape[1:])} per sample, the recipe expects {tuple(shape)}")


class GridAdapter(ModalityAdapter):
    """Shared by dense inputs cut into a regular grid of patches (images, video tubelets)."""

    batch_key = "image"

    def __init__(self, patch: Sequence[int], in_chans: int, dim: int,
                 token_grid: Optional[Sequence[Optional[int]]] = None, pos_embed: str = "sincos",
                 pos_axes: str = "ij"):
        """token_grid: the token grid of a fixed-size input (None along an axis of any size).
        pos_embed: 'sincos' (fixed codes, MAE) or 'learned' (a table over token_grid that starts
        as the sin-cos codes: supervised ViTs and fine-tuning, what timm checkpoints carry).
        pos_axes: 'ij' codes the first grid axis in the first half of the width (this project),
        'xy' the last axis first, as MAE's get_2d_sincos_pos_embed does (to load its fixed tables)."""
        super().__init__()
        if pos_axes not in ("ij", "xy"):
            raise ValueError(f"{type(self).__name__}.pos_axes must be 'ij' or 'xy', got {pos_axes!r}")
        self.patch, self.in_chans, self.dim, self.pos_axes = tuple(patch), in_chans, dim, pos_axes
        self.target_dim = int(np.prod(self.patch)) * in_chans
        self.proj = nn.Linear(self.target_dim, dim)  # = a stride-patch conv, on visible patches only
        self.token_grid = tuple(token_grid) if token_grid is not None else None
        self.learned_grid = learned_grid_for(pos_embed, self.token_grid or (None,), type(self).__name__)
        self.pos_table = nn.Parameter(self.sincos(grid_coords(self.learned_grid, 1, "cpu")[0], dim).clone()) \
            if self.learned_grid else None  # [N, D]

    def sincos(self, coords: torch.Tensor, dim: int) -> torch.Tensor:
        return sincos_pos(coords.flip(-1) if self.pos_axes == "xy" else coords, dim)

    def pos(self, coords: torch.Tensor, dim: int) -> torch.Tensor:
        """coords [..., d] -> [..., dim]: the learned table's rows at the encoder's width (decoders
        at another width get sin-cos), else sin-cos."""
        if self.pos_table is None or dim != self.dim:
            return self.sincos(coords, dim)
        return self.pos_table[self.table_index(coords)]

    def table_index(self, coords: torch.Tensor) -> torch.Tensor:
        """coords [..., d] grid positions -> [...] row-major row of the learned table."""
        strides = [int(np.prod(self.learned_grid[i + 1:])) for i in range(len(self.learned_grid))]
        return (coords.long() * torch.tensor(strides, device=coords.device)).sum(-1)

    # ---- weights in and out (unimask/weights, tools/export.py) -------------------------------
    def grid_positions(self) -> Optional[torch.Tensor]:
        """[N, d] positions of every token of a fixed-size input, row-major; None if it has no fixed size."""
        if self.token_grid is None or any(g is None for g in self.token_grid):
            return None
        return grid_coords(self.token_grid, 1, self.proj.weight.device)[0]

    def learned_pos_table(self) -> Optional[nn.Parameter]:
        """The learned table [N, D] (pos_embed='learned'), None for sin-cos codes."""
        return self.pos_table

    def conv_from_linear(self) -> tuple:
        """proj as the stride-patch convolution it equals: (weight [D, C, *patch], bias [D])."""
        weight = self.proj.weight.detach().view(self.dim, *self.patch, self.in_chans)  # (p q c) order of patchify
        weight = weight.permute(0, len(self.patch) + 1, *range(1, len(self.patch) + 1)).contiguous()
        return weight, self.proj.bias.detach().clone()

    def linear_from_conv(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> dict:
        """A patch convolution [D, C, *patch] (timm, MAE, VideoMAE) -> {'proj.weight', 'proj.bias'}."""
        expected = (self.dim, self.in_chans, *self.patch)
        if tuple(weight.shape) != expected:
            raise ValueError(f"patch_embed.proj.weight is {list(weight.shape)}, {type(self).__name__} needs "
                             f"{list(expected)} (dim, in_chans, patch)")
        linear = weight.permute(0, *range(2, weight.dim()), 1).reshape(self.dim, -1)  # [D, (p q c)]
        out = {"proj.weight": linear.contiguous()}
        if bias is not None:
            out["proj.bias"] = bias
        return out

    def resample_pos_table(self, table: torch.Tensor) -> torch.Tensor:
        """A learned table [N', D] of another square/cubic grid -> this adapter's grid [N, D]
        (timm's resample_abs_pos_embed for 2-D, trilinear for 3-D)."""
        grid = self.learned_grid
        old = source_grid(table.shape[0], grid)
        if len(grid) == 2:
            from timm.layers import resample_abs_pos_embed

            return resample_abs_pos_embed(table[None], list(grid), list(old), num_prefix_tokens=0)[0]
        x = table.T.reshape(1, table.shape[1], *old)
        mode = {1: "linear", 3: "trilinear"}[len(grid)]
        x = torch.nn.functional.interpolate(x.float(), size=grid, mode=mode, align_corners=False)
        return x.reshape(table.shape[1], -1).T.to(table.dtype)

    def grid_of(self, spatial: Sequence[int]) -> tuple:
        if any(s % p for s, p in zip(spatial, self.patch)):
            raise ValueError(f"input size {tuple(spatial)} is not divisible by patch size {self.patch}")
        return tuple(s // p for s, p in zip(spatial, self.patch))

    def tokenize(self, batch) -> Tokens:
        x = batch[self.batch_key] if isinstance(batch, dict) else batch
        x = x.flatten(0, 1) if x.dim() == len(self.patch) + 3 else x  # repeated sampling [B, R, ...]
        if x.shape[1] != self.in_chans:
            raise ValueError(f"{self.batch_key} batch has {x.shape[1]} channels, in_chans is {self.in_chans}")
        grid = self.grid_of(x.shape[2:])
        patches = patchify(x, self.patch)
        return Tokens(patches, grid_coords(grid, x.shape[0], x.device), grid=grid,
                      patch_shape=self.patch + (self.in_chans,))

    def embed(self, patches, tokens, ids):  # [B, K, P] -> [B, K, D]
        return self.proj(patches)

    def panels(self, tokens: Tokens, pred: torch.Tensor, mask) -> list:
        """Sample 0 as [input, masked input, reconstruction with visible patches pasted], each
        [C, *S] in [0, 1], all three scaled by the input's own range."""
        patches = tokens.patches[:1].float()  # [1, N, P]
        hidden = mask.masked[:1, :, None]
        lo, hi = patches.min(), patches.max()
        masked = torch.where(hidden, torch.full_like(patches, float(lo)), patches)
        recon = torch.where(hidden, pred[:1].float(), patches)
        x = unpatchify(torch.cat([patches, masked, recon]), tokens.grid, self.patch, self.in_chans)
        x = ((x - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1)
        return [x[i] for i in range(3)]

    def render_views(self, first: Tokens, second: Tokens, pred: torch.Tensor, mask, path: str) -> str:
        """Sample 0 as view 1 | masked view 2 | reconstruction of view 2 (2-D grids; a clip's
        first time slot)."""
        _, masked, recon = self.panels(second, pred, mask)
        view = first.patches[:1].float()
        lo, hi = view.min(), view.max()
        view = ((unpatchify(view, first.grid, self.patch, self.in_chans)[0] - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1)
        panels = [view, masked, recon]
        if view.dim() == 4:  # [C, T, H, W]: the first frame
            panels = [p[:, 0] for p in panels]
        return save_rows([panels], path, columns=("view 1", "masked view 2", "reconstruction"))


PANELS = ("input", "masked", "reconstruction")  # what render draws, in order


def save_rows(rows: list, path: str, min_size: int = 112, columns: Sequence[str] = (),
              row_names: Sequence[str] = ()) -> str:
    """rows: list of lists of [C, H, W] tensors in [0, 1] -> one PNG grid, upscaled until its
    shorter side reaches min_size (tiny images and flat spectrograms stay visible). columns /
    row_names: a title over each column / left of each row (PANELS for a reconstruction figure,
    so nobody has to guess which panel is which); also stored as the PNG's 'panels' text."""
    import torchvision.utils as vutils

    images = [img if img.shape[0] == 3 else img[:1].expand(3, -1, -1) for row in rows for img in row]
    grid = vutils.make_grid(torch.stack(images), nrow=len(rows[0]), padding=2, pad_value=1.0)
    scale = max(1, min_size // max(1, min(images[0].shape[-2:])))
    if scale > 1:
        grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    picture = Image.fromarray((grid.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8))
    tile = [(size + 2) * scale for size in images[0].shape[-2:]]  # one panel and its padding, [h, w]
    picture, info = titled(picture, tile, 2 * scale, list(columns), list(row_names))
    picture.save(path, pnginfo=info)
    return path


def titled(picture: Image.Image, tile: list, pad: int, columns: list, row_names: list) -> tuple:
    """The grid picture with a strip of titles above (columns) and left of it (row_names) ->
    (picture, PNG text chunk). tile: [h, w] of one panel with its padding; pad: the grid's edge."""
    from PIL import ImageDraw, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if not columns and not row_names:
        return picture, info
    info.add_text("panels", " / ".join(columns or row_names))
    draw = ImageDraw.Draw(picture)
    left = max((int(draw.textlength(name)) for name in row_names), default=-6) + 6
    top = 14 if columns else 0
    out = Image.new("RGB", (picture.width + left, picture.height + top), "white")
    out.paste(picture, (left, top))
    draw = ImageDraw.Draw(out)
    for i, name in enumerate(columns):
        centre = left + pad // 2 + i * tile[1] + tile[1] // 2
        draw.text((centre - draw.textlength(name) / 2, 1), name, fill="black")
    for i, name in enumerate(row_names):
        draw.text((2, top + pad // 2 + i * tile[0] + tile[0] // 2 - 5), name, fill="black")
    return out, info
