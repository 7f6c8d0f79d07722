"""ColorMAE (Hinojosa et al. 2024): masks from filtered random noise.

White noise on the token grid is filtered into a colour of noise and the highest `ratio`
share of it is hidden: red (low-pass) gives large blobs, blue (high-pass) evenly spread
small holes, green (band-pass) mid-sized blobs, purple (band-stop) a mix of both ends.
"""
from __future__ import annotations

import functools

import gin
import torch

from unimask.interfaces import Masker
from unimask.masking.base import count_hidden, grid_layout, hide_lowest, random_scores, unit_validity

COLOURS = ("red", "blue", "green", "purple")


@functools.lru_cache(maxsize=64)
def circular_gaussian(size: int, sigma: float, device) -> torch.Tensor:
    """[size, size] row-normalized Gaussian weights over wrap-around distance (noise has no edges).
    Cached: the filter depends on the grid only."""
    index = torch.arange(size, device=device)
    offset = (index[:, None] - index[None, :]).remainder(size)
    distance = torch.minimum(offset, size - offset).float()
    weight = torch.exp(-0.5 * (distance / sigma) ** 2)
    return weight / weight.sum(1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian low-pass as two small matrix products. [R, H, W] -> [R, H, W]."""
    rows = circular_gaussian(x.shape[1], sigma, x.device)  # [H, H]
    cols = circular_gaussian(x.shape[2], sigma, x.device)  # [W, W]
    return rows @ x @ cols.T


def coloured_noise(white: torch.Tensor, colour: str, sigma: float) -> torch.Tensor:
    """Filter white noise [R, H, W] into one of COLOURS (band-pass = difference of Gaussians)."""
    low = gaussian_blur(white, sigma)
    if colour == "red":
        return low
    if colour == "blue":
        return white - low
    band = low - gaussian_blur(white, 2 * sigma)
    return band if colour == "green" else white - band


@gin.configurable
class NoiseMasker(Masker):
    """Hide the top `ratio` share of filtered noise on the grid (ColorMAE).

    sigma: filter width in tokens. per_slot=False draws one 2-D pattern shared by all time
    slots of a (T, H, W) grid (a unit is then a place, as in tube masking); per_slot=True
    draws one per slot (units are tokens).
    """

    def __init__(self, colour: str = "green", sigma: float = 1.0, per_slot: bool = False):
        if colour not in COLOURS:
            raise ValueError(f"NoiseMasker.colour must be one of {COLOURS}, got {colour!r}")
        if sigma <= 0:
            raise ValueError(f"NoiseMasker.sigma must be > 0, got {sigma}")
        self.colour, self.sigma, self.per_slot = colour, sigma, per_slot

    def hide(self, tokens, ratio, generator):
        t, h, w = grid_layout(tokens, "NoiseMasker")
        valid = tokens.valid_mask()  # [B, N]
        batch, device = valid.shape[0], valid.device
        slots = t if self.per_slot else 1
        white = random_scores((batch * slots, h, w), generator, device) - 0.5
        pattern = coloured_noise(white, self.colour, self.sigma).reshape(batch, slots * h * w)  # [B, U]
        if self.per_slot:
            return hide_lowest(-pattern, count_hidden(ratio, valid.sum(1)), valid)
        place_of_token = torch.arange(h * w, device=device).repeat(t)  # [N]
        place_valid = unit_validity(valid, place_of_token, h * w)  # [B, H*W]
        hidden_places = hide_lowest(-pattern, count_hidden(ratio, place_valid.sum(1)), place_valid)
        return hidden_places.repeat(1, t)
