"""Maskers that hide tokens by a fixed rule: random (MAE) and tube (VideoMAE)."""
from __future__ import annotations

import gin
import torch

from unimask.interfaces import Masker
from unimask.masking.base import (count_hidden, grid_layout, hide_lowest, hide_random_units, random_scores,
                                  spread_units, unit_validity)


@gin.configurable
class RandomMasker(Masker):
    """MAE (He et al. 2022): hide a uniformly random subset of the valid tokens.

    unit=(2, 2) hides whole 2x2 cells of a grid instead (SimMIM's 32px mask patches over
    16px tokens); the count rule then counts cells. allow_all_hidden: ratios up to 1.0 and no
    visible token kept (masked generation: MaskGIT, MAGE; see Masker.allow_all_hidden).
    """

    def __init__(self, unit=None, allow_all_hidden: bool = False):
        self.unit = tuple(unit) if unit else None
        self.allow_all_hidden = bool(allow_all_hidden)

    def hide(self, tokens, ratio, generator):
        valid = tokens.valid_mask()  # [B, N]
        if self.unit is None:
            noise = random_scores(valid.shape, generator, valid.device)
            return hide_lowest(noise, count_hidden(ratio, valid.sum(1)), valid)
        cells, cell_of_token = grid_cells(tokens, self.unit, "RandomMasker")
        hidden_cells = hide_random_units(unit_validity(valid, cell_of_token, cells), ratio, generator)
        return spread_units(hidden_cells, cell_of_token)


def grid_cells(tokens, unit, name):
    """Cells of `unit` tokens on the grid -> (number of cells, [N] cell index of each token)."""
    if tokens.grid is None or len(unit) != len(tokens.grid):
        raise ValueError(f"{name}.unit={unit} needs a grid of {len(unit)} axes, tokens have grid {tokens.grid}")
    if any(g % u for g, u in zip(tokens.grid, unit)):
        raise ValueError(f"{name}.unit={unit} does not divide the token grid {tokens.grid}")
    axes = torch.meshgrid(*[torch.arange(g, device=tokens.patches.device) // u for g, u in zip(tokens.grid, unit)],
                          indexing="ij")
    cell_grid = [g // u for g, u in zip(tokens.grid, unit)]
    index = torch.zeros_like(axes[0])
    for axis, size in zip(axes, cell_grid):
        index = index * size + axis
    return int(torch.tensor(cell_grid).prod()), index.reshape(-1)


@gin.configurable
class TubeMasker(Masker):
    """VideoMAE (Tong et al. 2022): one spatial mask shared by every time slot.

    A unit is a spatial place (h, w) over all T slots; round(ratio * H * W) places are hidden.
    """

    def hide(self, tokens, ratio, generator):
        t, h, w = grid_layout(tokens, "TubeMasker")
        place_of_token = torch.arange(h * w, device=ratio.device).repeat(t)  # [N], row-major (T, H, W)
        hidden_places = hide_random_units(unit_validity(tokens.valid_mask(), place_of_token, h * w), ratio, generator)
        return spread_units(hidden_places, place_of_token)
