"""Pictures of input | masked | reconstruction as band composites: true colour (red, green,
blue bands) and false colour (NIR, red, green: vegetation shows red), one row each per frame.

Every composite is stretched by its input's 2nd-98th percentiles per channel (satellite
bands rarely fill their range), and the same stretch is applied to the masked input and the
reconstruction. Hidden values are grey per band: with independent group masking a place
can be hidden in one composite channel and visible in another, which tints it.
"""
from __future__ import annotations

import torch

from modalities.grid import PANELS, save_rows
from unimask.patches import unpatchify

GREY = 0.5


def band_images(adapter, patches: torch.Tensor, grid: tuple) -> torch.Tensor:
    """One sample's tokens [N, P] -> [T, C, H, W] in the recipe's band order (padding dropped)."""
    frames, groups, side = (1, grid[0], grid[-1]) if len(grid) == 3 else (grid[0], grid[1], grid[-1])  # (T,) G, h, w
    per_group = unpatchify(patches.reshape(frames * groups, side * side, -1), (side, side),
                           (adapter.patch, adapter.patch), adapter.width)  # [T*G, width, H, W]
    per_group = per_group.reshape(frames, groups, adapter.width, *per_group.shape[-2:])
    out = per_group.new_zeros(frames, len(adapter.bands), *per_group.shape[-2:])
    for g, members in enumerate(adapter.groups):
        out[:, members] = per_group[:, g, :len(members)]
    return out


def stretch(images: list, reference: torch.Tensor) -> list:
    """Scale [3, H, W] images by the reference's 2-98 percentiles per channel -> [0, 1]."""
    flat = reference.reshape(reference.shape[0], -1)
    low, high = torch.quantile(flat, 0.02, dim=1), torch.quantile(flat, 0.98, dim=1)
    scale = (high - low).clamp(min=1e-6)
    return [((img - low[:, None, None]) / scale[:, None, None]).clamp(0, 1) for img in images]


def composite_rows(adapter, bands_in, bands_masked, bands_recon, hidden) -> list:
    """Per frame and composite: [input, masked, reconstruction], each [3, H, W] in [0, 1]."""
    choices = [c for c in (adapter.rgb, adapter.false_color) if c is not None]
    if not choices:  # neither composite's bands are in the recipe: the first three bands (or one, grey)
        choices = [list(range(min(3, len(adapter.bands))))]
    rows = []
    for t in range(bands_in.shape[0]):
        for chosen in choices:
            pick = (chosen * 3)[:3] if len(chosen) < 3 else chosen
            inp, rec = bands_in[t, pick], bands_recon[t, pick]
            inp_s, msk_s, rec_s = stretch([inp, bands_masked[t, pick], rec], inp)
            msk_s = torch.where(hidden[t, pick], torch.full_like(msk_s, GREY), msk_s)
            rows.append([inp_s, msk_s, rec_s])
    return rows


def render_composites(adapter, tokens, pred, mask, path: str) -> str:
    """Sample 0's composites of input | masked | reconstruction (visible patches pasted) -> PNG."""
    patches = tokens.patches[0].float().cpu()  # [N, P]
    hidden = mask.masked[0].cpu()[:, None].expand_as(patches)  # [N, P]
    recon = torch.where(hidden, pred[0].float().cpu(), patches)
    grid = tuple(tokens.grid)
    bands_in, bands_recon = band_images(adapter, patches, grid), band_images(adapter, recon, grid)
    hidden_bands = band_images(adapter, hidden.float(), grid) > 0.5
    return save_rows(composite_rows(adapter, bands_in, bands_in, bands_recon, hidden_bands), path,
                     columns=PANELS)
