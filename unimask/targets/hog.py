"""HOGTarget (MaskFeat, Wei et al., CVPR 2022): histograms of oriented gradients of each patch,
computed in torch with fixed convolutions so they run on the GPU inside the training step.

MaskFeat (SlowFast operators.py HOGLayerC): on the normalized input, per channel: 3x3 Sobel
gradients (reflect padding), 9 unsigned orientation bins over 180 degrees with hard assignment
weighted by the gradient magnitude, summed over cells of 8x8 grid positions, each cell's 9 bins L2-normalized
(no block normalization). A 16x16 patch covers 2 x 2 cells: 3 channels x 9 bins x 4 cells = 108
values. 3-D patches (tubelets): per slice along the first patch axis, the slices side by side. gradient='central' uses [-1, 0, 1]
differences instead (scikit-image's hog, which the tests compare with). The angle is the usual
atan2(dy, dx); MaskFeat's atan2(dx, dy) permutes the bins, which changes nothing learned.
"""
from __future__ import annotations

import math

import gin
import torch
import torch.nn.functional as F
from einops import rearrange

from unimask.interfaces import Target
from unimask.patches import patchify, tokens_to_array
from unimask.tokens import gather_rows

KERNELS = {"sobel": [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]],
           "central": [[0.0, 0.0, 0.0], [1.0, 0.0, -1.0], [0.0, 0.0, 0.0]]}


def hog_cells(arrays: torch.Tensor, bins: int = 9, cell: int = 8, gradient: str = "sobel") -> torch.Tensor:
    """[B, C, H, W] -> cell histograms [B, C, bins, H / cell, W / cell], each cell's bins L2-normalized."""
    b, c, h, w = arrays.shape
    kx = torch.tensor(KERNELS[gradient], dtype=arrays.dtype, device=arrays.device)
    kernels = torch.stack([kx, kx.T])[:, None].repeat(c, 1, 1, 1)  # [2C, 1, 3, 3]: d/dx, d/dy per channel
    grad = F.conv2d(F.pad(arrays, (1, 1, 1, 1), mode="reflect"), kernels, groups=c).view(b, c, 2, h, w)
    gx, gy = -grad[:, :, 0], -grad[:, :, 1]  # the kernels give left - right: flip to right - left
    magnitude = torch.hypot(gx, gy)
    angle = torch.remainder(torch.atan2(gy, gx), math.pi)  # unsigned: [0, pi)
    index = torch.floor(angle / math.pi * bins).long().clamp(max=bins - 1)  # [B, C, H, W]
    votes = F.one_hot(index, bins).to(arrays.dtype) * magnitude[..., None]  # [B, C, H, W, bins]
    votes = rearrange(votes, "b c h w bins -> b (c bins) h w")
    cells = F.avg_pool2d(votes, cell, cell) * (cell * cell)  # sums over each cell
    return F.normalize(cells.view(b, c, bins, h // cell, w // cell), p=2, dim=2)


@gin.configurable
class HOGTarget(Target):
    """Per-patch HOG of grid tokens (2-D patches; tubelets slice by slice) -> [B, N, slices x cells x
    channels x bins]. cell_size must divide the patch (MaskFeat: cells of 8 x 8, patches of 16 x 16;
    a 4 x 4 patch of a 28 x 28 grid takes 4 x 4 cells)."""

    def __init__(self, bins: int = 9, cell_size: int = 8, gradient: str = "sobel"):
        super().__init__()
        if gradient not in KERNELS:
            raise ValueError(f"HOGTarget.gradient must be one of {sorted(KERNELS)}, got {gradient!r}")
        self.bins, self.cell, self.gradient = bins, cell_size, gradient

    def layout(self, adapter) -> tuple:
        """(slices per token, cells per token, channels) from a grid adapter's patch."""
        patch, channels = adapter.patch, adapter.in_chans  # None on adapters without a grid (ModalityAdapter)
        if patch is None or channels is None or len(patch) not in (2, 3):
            raise ValueError(f"HOGTarget needs a 2-D or 3-D grid adapter (patch, in_chans), got {type(adapter).__name__}")
        slices, (p, q) = (1, patch) if len(patch) == 2 else (patch[0], patch[1:])
        if p % self.cell or q % self.cell:
            raise ValueError(f"HOGTarget.cell_size={self.cell} does not divide the patch {tuple(patch)}")
        return slices, (p // self.cell) * (q // self.cell), channels

    def dim(self, adapter) -> int:
        slices, cells, channels = self.layout(adapter)
        return slices * cells * channels * self.bins

    @torch.no_grad()
    def forward(self, tokens, adapter):
        x = tokens_to_array(tokens).float()  # [B, C, H, W] or [B, C, T, H, W]
        if x.dim() == 4:
            cells = hog_cells(x, self.bins, self.cell, self.gradient)  # [B, C, bins, h, w]
            p, q = tokens.patch_shape[0] // self.cell, tokens.patch_shape[1] // self.cell
            return patchify(cells.flatten(1, 2), (p, q)), None  # [B, N, cells * C * bins]
        b, c, t, h, w = x.shape
        slices = hog_cells(x.transpose(1, 2).reshape(b * t, c, h, w), self.bins, self.cell, self.gradient)
        slices = slices.view(b, t, c * self.bins, h // self.cell, w // self.cell).transpose(1, 2)  # [B, C*bins, T, h, w]
        u, p, q = tokens.patch_shape[0], tokens.patch_shape[1] // self.cell, tokens.patch_shape[2] // self.cell
        return patchify(slices, (u, p, q)), None  # [B, N, slices * cells * C * bins]

    def select(self, tokens, adapter, ids):
        values, _ = self(tokens, adapter)  # the whole picture's gradients, then the scored rows
        return gather_rows(values, ids), None

    def invert(self, pred, tokens, adapter):
        raise NotImplementedError("HOGTarget predicts gradient histograms: there is no picture to draw")
