"""MAE decoder: project the latent, fill hidden places with a mask token, add position codes,
run a few timm Blocks and a linear head. With depth=0 and no position codes it is SimMIM's
linear head."""
from __future__ import annotations

import gin
import torch
from torch import nn

from unimask.encoders import TransformerStack


@gin.configurable
class MAEDecoder(nn.Module):
    """in_dim: encoder width; dim: decoder width; remask: hidden tokens' latents are replaced
    by the mask token before decoding (always true in drop mode, GraphMAE's re-mask in replace
    mode); use_pos: add the adapter's position code at decoder width."""

    def __init__(self, in_dim: int = 768, dim: int = 512, depth: int = 8, num_heads: int = 16,
                 mlp_ratio: float = 4.0, remask: bool = True, use_pos: bool = True):
        super().__init__()
        self.embed = nn.Linear(in_dim, dim) if (depth or in_dim != dim) else nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.body = TransformerStack(dim, depth, num_heads, mlp_ratio) if depth else None
        self.head = None
        self.dim, self.remask, self.use_pos = dim, remask, use_pos

    def init_head(self, out_dim: int):
        """The model sets the output width once it knows the target's."""
        self.head = nn.Linear(self.dim, out_dim)

    def forward(self, x, key_valid=None, tokens=None, ids=None):  # [B, M, dim] -> [B, M, out_dim]
        if self.body is not None:
            x = self.body(x, key_valid)
        return self.head(x)
