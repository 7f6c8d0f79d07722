"""A decoder that also reads a second set of tokens through cross-attention: SiamMAE's cross-self
decoder (Gupta et al., NeurIPS 2023; CropMAE, Eymael et al., ECCV 2024).

Each block: cross-attention from the tokens being decoded (view 2: its few visible latents and
mask tokens) to the context (view 1's encoded tokens), then self-attention among the decoded
tokens, then an MLP, each pre-norm with a residual; mode='cross' drops the self-attention
(SiamMAE's cross-only ablation). Attention is torch's scaled_dot_product_attention; the MLP and
norms are timm's. The context's keys and values come from the context alone, so nothing of view
2 reaches view 1's features.
"""
from __future__ import annotations

from typing import Optional

import gin
import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Mlp
from torch import nn

from unimask.interfaces import Decoder, DecoderSpec
from unimask.tokens import gather_tokens
from unimask.transformer import RowBlock, attention_backend, key_padding_mask


class CrossAttention(nn.Module):
    """queries x [B, M, D], keys / values context [B, C, D] (context_valid [B, C]) -> [B, M, D]."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CrossAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.kv, self.proj = nn.Linear(dim, dim, bias=qkv_bias), nn.Linear(dim, 2 * dim, bias=qkv_bias), \
            nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_valid: Optional[torch.Tensor]) -> torch.Tensor:
        q = rearrange(self.q(x), "b m (h e) -> b h m e", h=self.num_heads)  # [B, H, M, hd]
        k, v = rearrange(self.kv(context), "b c (two h e) -> two b h c e", two=2, h=self.num_heads)  # [B, H, C, hd]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_padding_mask(context_valid))
        return self.proj(rearrange(out, "b h m e -> b m (h e)"))


class CrossSelfBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, self_attention: bool = True):
        super().__init__()
        self.norm_cross, self.norm_context = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross = CrossAttention(dim, num_heads)
        self.self_block = RowBlock(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm) \
            if self_attention else None  # self-attention + MLP, timm's Block
        self.mlp = None if self_attention else nn.Sequential(nn.LayerNorm(dim), Mlp(dim, int(dim * mlp_ratio)))

    def forward(self, x, key_valid, context, context_valid, out_rows=None):
        x = x + self.cross(self.norm_cross(x), self.norm_context(context), context_valid)
        if self.self_block is not None:
            return self.self_block(x, attn_mask=key_padding_mask(key_valid), out_rows=out_rows)
        x = x + self.mlp(x)
        return x if out_rows is None else gather_tokens(x, out_rows)


@gin.configurable
class CrossSelfDecoder(Decoder):
    """in_dim: encoder width; dim, depth, num_heads: the decoder's; mode: 'cross_self' (SiamMAE)
    or 'cross' (cross-attention and MLP only). forward also takes context [B, C, dim] (the other
    view's latents, already at decoder width) and context_valid [B, C]."""

    spec = DecoderSpec(remask=True, use_pos=True, predicts_rows=True, cross_context=True)

    def __init__(self, in_dim: int = 384, dim: int = 256, depth: int = 4, num_heads: int = 8,
                 mlp_ratio: float = 4.0, mode: str = "cross_self"):
        super().__init__()
        if mode not in ("cross_self", "cross"):
            raise ValueError(f"CrossSelfDecoder.mode must be 'cross_self' or 'cross', got {mode!r}")
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.blocks = nn.ModuleList([CrossSelfBlock(dim, num_heads, mlp_ratio, mode == "cross_self")
                                     for _ in range(depth)])
        self.norm, self.head, self.dim = nn.LayerNorm(dim), None, dim

    def init_head(self, out_dim: int):
        self.head = nn.Linear(self.dim, out_dim)

    def forward(self, x, key_valid=None, tokens=None, ids=None, out_rows=None, pos=None, context=None,
                context_valid=None):
        """x [B, M, dim] -> [B, M, out_dim], or [B, S, out_dim] at out_rows [B, S]."""
        if context is None:
            raise ValueError("CrossSelfDecoder needs the other view's tokens as context")
        with attention_backend(x):
            for i, block in enumerate(self.blocks):
                last = i == len(self.blocks) - 1
                x = block(x, key_valid, context, context_valid, out_rows if last else None)
        if out_rows is not None and not self.blocks:
            x = gather_tokens(x, out_rows)
        return self.head(self.norm(x))
