"""Encoders over a set of tokens (see unimask/interfaces.py), and the one path into them.

`encode_ids` is how tokens reach an encoder, for the model and for teacher targets alike:
the adapter embeds the patches of the chosen ids, the adapter's position codes are added, and an
encoder that asks for them (`pos_every_block`) gets the codes again for every block.
"""
from __future__ import annotations

from typing import Optional

import gin
import torch

from unimask.gnn import GNNEncoder  # noqa: F401  (registered with gin; its home is unimask/gnn.py)
from unimask.interfaces import Encoder
from unimask.tokens import Tokens, gather_rows, gather_tokens
from unimask.transformer import TransformerStack


def embed_ids(adapter, tokens: Tokens, ids: torch.Tensor) -> torch.Tensor:
    """The adapter's embedding of the tokens ids [B, K], gathered first: -> [B, K, D]."""
    return adapter.embed(gather_rows(tokens.patches, ids), tokens, ids)


def position_codes(adapter, tokens: Tokens, ids: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The adapter's position codes of ids [B, K] at the width and dtype of like [B, K, D]."""
    return adapter.pos(gather_tokens(tokens.coords, ids), like.shape[-1]).to(like.dtype)


def encode_ids(adapter, encoder: Encoder, tokens: Tokens, ids: torch.Tensor, valid: Optional[torch.Tensor],
               x: Optional[torch.Tensor] = None) -> torch.Tensor:
    """encoder(embedded tokens + position codes) for the tokens ids [B, K] (valid [B, K]) -> [B, K, D].
    x: their embedding when the caller changed it (replace mode's [MASK] tokens); else embedded here."""
    x = embed_ids(adapter, tokens, ids) if x is None else x
    pos = position_codes(adapter, tokens, ids, x)
    return encoder(x + pos, valid, tokens, ids, pos=pos if encoder.pos_every_block else None)


def encode_layers(adapter, encoder: Encoder, tokens: Tokens, ids: torch.Tensor,
                  valid: Optional[torch.Tensor]) -> list:
    """encode_ids, but every layer's output [B, K, D], first to last (teacher targets)."""
    x = embed_ids(adapter, tokens, ids)
    pos = position_codes(adapter, tokens, ids, x)
    return encoder.layer_outputs(x + pos, valid, tokens, ids, pos=pos if encoder.pos_every_block else None)


@gin.configurable
class ViTEncoder(Encoder, TransformerStack):
    """ViT on the visible tokens only (MAE): position codes are added by encode_ids before."""

    def __init__(self, dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, qkv_bias: bool = True, pos_every_block: bool = False):
        TransformerStack.__init__(self, dim, depth, num_heads, mlp_ratio, drop_path, qkv_bias, pos_every_block)

    def forward(self, x, key_valid=None, tokens=None, ids=None, pos=None):  # [B, K, D] -> [B, K, D]
        return TransformerStack.forward(self, x, key_valid, pos=pos)

    def layer_outputs(self, x, key_valid=None, tokens=None, ids=None, pos=None) -> list:
        return self.block_outputs(x, key_valid, pos)
