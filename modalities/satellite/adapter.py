"""SatelliteAdapter: multi-band rasters -> one token per (frame, band group, patch place).

SatMAE's group-channel layout: the bands are split into groups, every group is cut into
patches on the same spatial grid, and the tokens are laid out group-major, (G, h, w), or
(T, G, h, w) for a temporal stack, so the k-th token of every group sits at one place (what
ChannelGroupMasker's 'consistent' mode needs). Tokens.group is each token's masking unit:
frame * G + band group, so 'independent' masking is independent across groups AND across
time (temporal SatMAE's default), and 'consistent' hides the same places everywhere.

Tokens.patches [B, N, p * p * Cmax]: the group's channels zero-padded to the largest group;
the target weight (Tokens.extras[TARGET_WEIGHT]) is 0 for the padding and for no-data pixels.
"""
from __future__ import annotations

from typing import Optional, Sequence

import gin
import torch

from modalities.grid import check_divisible, grid_coords
from unimask.patches import patchify
from modalities.satellite.bands import SATMAE_BANDS, SATMAE_GROUPS, GroupSpec, optional_bands, resolve_groups
from modalities.satellite.embed import GroupPatchEmbed
from modalities.satellite.encoding import satellite_pos
from unimask.interfaces import ModalityAdapter
from unimask.tokens import TARGET_WEIGHT, Tokens, gather_tokens


@gin.configurable
class SatelliteAdapter(ModalityAdapter):
    """bands: the recipe's band names in the batch's channel order (SatelliteDataset.bands);
    groups: tuple of band-name tuples (SatMAE's Sentinel-2 grouping by default), 'per_band'
    (ChA-MAEViT: a token and a masking unit per band) or None (one group); temporal: the batch
    is [B, T, C, H, W] with 'timestamps' [B, T, 3]; group_pos_share / time_pos_share: the part
    of the position width given to the group and time codes (SatMAE: 1/4 and 3/8);
    shared_embed: one projection for every group plus learned group embeddings (ChannelViT);
    rgb / false_color: the bands drawn as red, green, blue in the two composites."""

    batch_key = "bands"

    def __init__(self, bands: Sequence[str] = SATMAE_BANDS, groups: GroupSpec = SATMAE_GROUPS, img_size: int = 96,
                 patch_size: int = 8, dim: int = 768, temporal: bool = False, group_pos_share: float = 0.25,
                 time_pos_share: float = 0.375, shared_embed: bool = False,
                 rgb: Optional[Sequence[str]] = ("B4", "B3", "B2"),
                 false_color: Optional[Sequence[str]] = ("B8", "B4", "B3")):
        super().__init__()
        check_divisible((("SatelliteAdapter.img_size", img_size), ("SatelliteAdapter.patch_size", patch_size)))
        self.bands = [str(b) for b in bands]
        self.groups = resolve_groups(self.bands, groups)  # [G] lists of band indices
        self.img_size, self.patch, self.temporal = img_size, patch_size, temporal
        self.group_pos_share, self.time_pos_share = group_pos_share, time_pos_share
        sizes = [len(g) for g in self.groups]
        self.width = max(sizes)
        self.padded = len(set(sizes)) > 1
        self.target_dim = patch_size * patch_size * self.width
        self.embedding = GroupPatchEmbed(patch_size * patch_size, sizes, dim, shared=shared_embed)
        self.rgb = optional_bands(self.bands, rgb, "SatelliteAdapter.rgb")
        self.false_color = optional_bands(self.bands, false_color, "SatelliteAdapter.false_color")
        pad = len(self.bands)  # index of an all-zero channel appended in tokenize
        self.register_buffer("channel_index", torch.tensor([g + [pad] * (self.width - len(g)) for g in self.groups]),
                             persistent=False)  # [G, width]

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    # ---- checks ---------------------------------------------------------------------------
    def frames_of(self, batch) -> tuple:
        """-> (bands [B, T, C, H, W], valid pixels of the same shape, timestamps [B, T, 3] | None)."""
        x = batch[self.batch_key]
        valid = batch.get("valid_pixels")
        if self.temporal:
            if x.dim() != 5 or "timestamps" not in batch:
                raise ValueError(f"SatelliteAdapter.temporal=True needs 'bands' [B, T, C, H, W] and 'timestamps' "
                                 f"[B, T, 3]; got bands {tuple(x.shape)}{'' if 'timestamps' in batch else ', no timestamps'} "
                                 "(single-date data: set SatelliteDataset.synthetic_dates for a demo)")
            stamps = batch["timestamps"].float()
        else:
            if x.dim() != 4:
                raise ValueError(f"'bands' batch {tuple(x.shape)} is not [B, C, H, W]; a temporal stack needs "
                                 "SatelliteAdapter.temporal=True")
            x, stamps = x[:, None], None
            valid = None if valid is None else valid[:, None]
        b, t, c, h, w = x.shape
        if c != len(self.bands) or (h, w) != (self.img_size, self.img_size):
            raise ValueError(f"'bands' batch has {c} bands of {h} x {w}; the recipe expects {len(self.bands)} "
                             f"({', '.join(self.bands)}) of {self.img_size} x {self.img_size} (SatelliteAdapter.bands/img_size)")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("'bands' batch holds NaN or inf: the dataset must fill no-data pixels and mark them in "
                             "'valid_pixels' (SatelliteDataset does)")
        valid = torch.ones_like(x, dtype=torch.bool) if valid is None else valid.reshape(x.shape).bool()
        if stamps is not None and tuple(stamps.shape) != (b, t, 3):
            raise ValueError(f"'timestamps' {tuple(stamps.shape)} must be [B, T, 3] = {(b, t, 3)}")
        return x, valid, stamps

    # ---- tokens ---------------------------------------------------------------------------
    def grouped_patches(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C, H, W] -> [B, T * G * h * w, p * p * width]: each group's channels (zero-padded
        to `width`) cut into patches, group-major within a frame."""
        b, t, c, h, w = x.shape
        x = torch.cat([x, x.new_zeros(b, t, 1, h, w)], 2)[:, :, self.channel_index.reshape(-1)]  # [B, T, G*width, H, W]
        x = x.reshape(b * t * self.n_groups, self.width, h, w)
        patches = patchify(x, (self.patch, self.patch))  # [B*T*G, h*w, p*p*width]
        return patches.reshape(b, -1, patches.shape[-1])

    def tokenize(self, batch) -> Tokens:
        x, valid, stamps = self.frames_of(batch)
        b, t = x.shape[:2]
        g = self.n_groups
        patches = self.grouped_patches(x.float())
        side = self.img_size // self.patch
        grid = (t, g, side, side)
        coords = grid_coords(grid, b, x.device)  # [B, N, 4]: frame, group, row, col
        if stamps is not None:
            per_token = stamps[:, :, None].expand(b, t, g * side * side, 3).reshape(b, -1, 3)
            coords = torch.cat([coords, per_token.to(coords.dtype)], -1)  # + year, month, hour
        group = (torch.arange(t, device=x.device)[:, None] * g + torch.arange(g, device=x.device)).repeat_interleave(
            side * side)  # [N]: the masking unit, frame * G + band group
        extras = {}
        if self.padded or not bool(valid.all()):
            present = torch.cat([valid, valid.new_zeros(*valid.shape[:2], 1, *valid.shape[3:])], 2)  # the pad is absent
            extras[TARGET_WEIGHT] = self.grouped_patches(present.float())  # [B, N, P]: 0 = padding or no-data
        return Tokens(patches, coords, grid=grid if self.temporal else grid[1:], group=group,
                      patch_shape=(self.patch, self.patch, self.width), extras=extras)

    def embed(self, patches, tokens, ids):  # [B, K, P] -> [B, K, D]
        band_group = gather_tokens(tokens.coords[..., 1], ids).long()  # [B, K]
        return self.embedding(patches, band_group)

    def pos(self, coords, dim):  # [..., 4 | 7] -> [..., dim]
        return satellite_pos(coords, dim, self.n_groups, self.temporal, self.group_pos_share, self.time_pos_share)

    # ---- pictures -------------------------------------------------------------------------
    def render(self, tokens, pred, mask, path):
        from modalities.satellite.render import render_composites

        return render_composites(self, tokens, pred, mask, path)
