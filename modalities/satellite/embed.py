"""One patch embedding per band group (SatMAE: a PatchEmbed per group), on each group's own
channels: groups of unequal size share one zero-padded patch width P in Tokens, and each
projection reads only its group's true channels, so the padding never reaches the weights.

shared=True is ChannelViT / ChA-MAEViT's channel-aware variant instead: one projection for
every group (equal sizes, e.g. one band each) plus a learned embedding per group, so bands
are told apart by their embedding rather than by separate weights.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class GroupPatchEmbed(nn.Module):
    def __init__(self, pixels: int, group_sizes: Sequence[int], dim: int, shared: bool = False):
        super().__init__()
        self.pixels, self.sizes, self.shared = pixels, list(group_sizes), shared
        self.width = max(self.sizes)  # channels per pixel in the padded patch
        if shared:
            if len(set(self.sizes)) > 1:
                raise ValueError(f"SatelliteAdapter.shared_embed needs groups of equal size, got {self.sizes}")
            self.proj = nn.ModuleList([nn.Linear(pixels * self.sizes[0], dim)])
            self.group_embed = nn.Parameter(torch.zeros(len(self.sizes), dim))
            nn.init.normal_(self.group_embed, std=0.02)
        else:
            self.proj = nn.ModuleList(nn.Linear(pixels * c, dim) for c in self.sizes)
            self.group_embed = None

    def forward(self, patches: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """patches [B, K, pixels * width] (channels last, zero-padded), group [B, K] long band
        group of each token -> [B, K, dim]."""
        grouped = patches.view(*patches.shape[:2], self.pixels, self.width)  # [B, K, pixels, width]
        out = None
        for g, size in enumerate(self.sizes):
            where = group == g  # [B, K]
            if not bool(where.any()):
                continue
            proj = self.proj[0 if self.shared else g]
            values = proj(grouped[where][..., :size].flatten(1))  # [M, dim], the group's true channels only
            if out is None:
                out = values.new_zeros(*patches.shape[:2], values.shape[-1])
            out = out.index_put((where,), values)
        if out is None:  # no token at all (an empty selection)
            out = patches.new_zeros(*patches.shape[:2], self.proj[0].out_features)
        if self.group_embed is not None:
            out = out + self.group_embed.to(out.dtype)[group]
        return out
