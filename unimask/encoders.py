"""Encoders over a set of tokens, called as f(x [B,K,D], key_valid [B,K], tokens, ids [B,K])."""
from __future__ import annotations

from typing import Optional

import gin
import torch
from timm.models.vision_transformer import Block
from torch import nn


def key_padding_mask(key_valid: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """[B, K] bool -> [B, 1, 1, K] bool for SDPA, or None when nothing is padded (fast path)."""
    if key_valid is None or bool(key_valid.all()):
        return None
    return key_valid[:, None, None, :]


class TransformerStack(nn.Module):
    """timm Blocks + final norm: the body shared by the ViT encoder and the MAE decoder."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, qkv_bias: bool = True):
        super().__init__()
        rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
        self.blocks = nn.ModuleList([
            Block(dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, drop_path=rate, norm_layer=nn.LayerNorm)
            for rate in rates
        ])
        self.norm = nn.LayerNorm(dim) if depth else nn.Identity()
        self.dim = dim

    def forward(self, x: torch.Tensor, key_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        attn_mask = key_padding_mask(key_valid)  # [B, 1, 1, K] | None
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return self.norm(x)  # [B, K, D]


@gin.configurable
class ViTEncoder(TransformerStack):
    """ViT on the visible tokens only (MAE): position codes are added by the model before."""

    def __init__(self, dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, qkv_bias: bool = True):
        super().__init__(dim, depth, num_heads, mlp_ratio, drop_path, qkv_bias)

    def forward(self, x, key_valid=None, tokens=None, ids=None):  # [B, K, D] -> [B, K, D]
        return super().forward(x, key_valid)
