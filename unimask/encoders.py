"""Encoders over a set of tokens (see unimask/interfaces.py), and the one path into them.

`encode_ids` is how tokens reach an encoder, for the model and for teacher targets alike:
the adapter embeds the patches of the chosen ids, the adapter's position codes are added, and an
encoder that asks for them (`pos_every_block`) gets the codes again for every block.
"""
from __future__ import annotations

from typing import Optional

import gin
import torch
from torch import nn

from unimask.interfaces import Encoder
from unimask.rope import rope_angles
from unimask.tokens import Tokens, gather_rows, gather_tokens, select_ids
from unimask.transformer import TransformerStack


def embed_ids(adapter, tokens: Tokens, ids: torch.Tensor) -> torch.Tensor:
    """The adapter's embedding of the tokens ids [B, K], gathered first: -> [B, K, D]."""
    return adapter.embed(gather_rows(tokens.patches, ids), tokens, ids)


def position_codes(adapter, tokens: Tokens, ids: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The adapter's position codes of ids [B, K] at the width and dtype of like [B, K, D]."""
    return adapter.pos(gather_tokens(tokens.coords, ids), like.shape[-1]).to(like.dtype)


def encode_ids(adapter, encoder: Encoder, tokens: Tokens, ids: torch.Tensor, valid: Optional[torch.Tensor],
               x: Optional[torch.Tensor] = None, with_cls: bool = False) -> torch.Tensor:
    """encoder(embedded tokens + position codes) for the tokens ids [B, K] (valid [B, K]) -> [B, K, D],
    or [B, 1 + K, D] with the encoder's [CLS] output first (with_cls). x: their embedding when the
    caller changed it (replace mode's [MASK] tokens); else embedded here."""
    x = embed_ids(adapter, tokens, ids) if x is None else x
    pos = position_codes(adapter, tokens, ids, x)
    again = pos if encoder.pos_every_block else None
    if with_cls:
        return encoder.forward_with_cls(x + pos, valid, pos=again, tokens=tokens, ids=ids)
    return encoder(x + pos, valid, tokens, ids, pos=again)


def all_visible(adapter, batch) -> tuple:
    """A raw batch tokenized with every valid token kept -> (Tokens, ids [B, K], valid [B, K])."""
    tokens = adapter.tokenize(batch)
    return (tokens,) + tuple(select_ids(tokens.valid_mask()))


def encode_all(adapter, encoder: Encoder, batch, with_cls: bool = False) -> tuple:
    """A raw batch with every token visible -> (encode_ids output, valid [B, K]): the frozen
    features probes read and what a classifier pools."""
    tokens, ids, valid = all_visible(adapter, batch)
    return encode_ids(adapter, encoder, tokens, ids, valid, with_cls=with_cls), valid


def encode_layers(adapter, encoder: Encoder, tokens: Tokens, ids: torch.Tensor,
                  valid: Optional[torch.Tensor], x: Optional[torch.Tensor] = None) -> list:
    """encode_ids, but every layer's output [B, K, D], first to last (teacher targets; objectives
    that read an intermediate layer: encoder.final_norm of the last gives encode_ids' output)."""
    x = embed_ids(adapter, tokens, ids) if x is None else x
    pos = position_codes(adapter, tokens, ids, x)
    return encoder.layer_outputs(x + pos, valid, tokens, ids, pos=pos if encoder.pos_every_block else None)


@gin.configurable
class ViTEncoder(Encoder, TransformerStack):
    """ViT on the visible tokens only (MAE): position codes are added by encode_ids before.

    class_token=True prepends a learned [CLS] token (timm's and MAE's ViTs carry one; MAE's
    pretraining ignores it, supervised and fine-tuned checkpoints pool it). Its output is dropped
    from forward's rows, so the rest of the pipeline sees one row per token either way;
    forward_with_cls returns it first. The token has no position code of its own: a checkpoint's
    pos_embed[:, 0] is folded into it when loading (unimask/weights).

    rope=True rotates queries and keys in every block by the tokens' coordinates (rotary
    positions, unimask/rope.py; axial over the coordinate axes), computed from `tokens` and `ids`;
    pair it with an adapter that adds no position code of its own. [CLS] is not rotated."""

    def __init__(self, dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, qkv_bias: bool = True, pos_every_block: bool = False,
                 class_token: bool = False, norm_eps: float = 1e-5, rope: bool = False, rope_theta: float = 10000.0):
        TransformerStack.__init__(self, dim, depth, num_heads, mlp_ratio, drop_path, qkv_bias, pos_every_block,
                                  norm_eps)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if class_token else None  # MAE's init
        self.rope, self.rope_theta = rope, rope_theta

    vit_layout = True  # blocks.{i}.*, norm.*, cls_token: timm's names
    takes_block_masks = True

    @property
    def uses_tokens(self) -> bool:  # rotary angles come from the tokens' coordinates
        return self.rope

    def block_count(self) -> int:
        return len(self.blocks)

    def learned_cls_token(self) -> Optional[nn.Parameter]:
        return self.cls_token

    def rotary(self, tokens, ids, with_cls: bool) -> Optional[tuple]:
        """(cos, sin, axes) for the tokens ids [B, K] (+ an unrotated [CLS] row first), or None."""
        if not self.rope:
            return None
        if tokens is None or ids is None:
            raise ValueError("ViTEncoder.rope=True needs the tokens' coordinates (called without tokens/ids)")
        coords = gather_tokens(tokens.coords, ids)  # [B, K, d]
        cos, sin = rope_angles(coords, self.blocks[0].attn.head_dim, self.rope_theta)
        if with_cls:
            cos = torch.cat([torch.ones_like(cos[:, :, :1]), cos], 2)
            sin = torch.cat([torch.zeros_like(sin[:, :, :1]), sin], 2)
        return cos, sin, coords.shape[-1]

    def forward(self, x, key_valid=None, tokens=None, ids=None, pos=None, block_masks=None):  # [B, K, D] -> [B, K, D]
        """block_masks: one [B, 1, K, K] bool attention mask per block (True = may attend), e.g.
        who may see whom when hidden tokens ride along (unimask/position_prediction.py)."""
        if self.cls_token is None:
            return TransformerStack.forward(self, x, key_valid, pos=pos, block_masks=block_masks,
                                            rope=self.rotary(tokens, ids, False))
        if block_masks is not None:
            raise ValueError("ViTEncoder: block_masks with class_token=True are not supported (the masks "
                             "would need a [CLS] row and column)")
        return self.forward_with_cls(x, key_valid, pos=pos, tokens=tokens, ids=ids)[:, 1:]

    def forward_with_cls(self, x, key_valid=None, pos=None, tokens=None, ids=None):  # -> [B, 1 + K, D], [CLS] first
        if self.cls_token is None:
            raise ValueError("ViTEncoder.class_token=False: this encoder has no [CLS] token")
        rope = self.rotary(tokens, ids, True)
        x, key_valid, pos = with_cls(self.cls_token, x, key_valid, pos)
        return TransformerStack.forward(self, x, key_valid, pos=pos, rope=rope)

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h)

    def layer_outputs(self, x, key_valid=None, tokens=None, ids=None, pos=None) -> list:
        if self.cls_token is None:
            return self.block_outputs(x, key_valid, pos, rope=self.rotary(tokens, ids, False))
        rope = self.rotary(tokens, ids, True)
        x, key_valid, pos = with_cls(self.cls_token, x, key_valid, pos)
        return [out[:, 1:] for out in self.block_outputs(x, key_valid, pos, rope=rope)]


def with_cls(cls_token, x, key_valid, pos):
    """Prepend [CLS] to x [B, K, D] -> ([B, 1 + K, D], key_valid [B, 1 + K] | None, pos | None);
    it is always valid and its position code is zero."""
    batch = x.shape[0]
    x = torch.cat([cls_token.to(x.dtype).expand(batch, -1, -1), x], 1)
    if key_valid is not None:
        key_valid = torch.cat([key_valid.new_ones(batch, 1), key_valid], 1)
    if pos is not None:
        pos = torch.cat([pos.new_zeros(batch, 1, pos.shape[-1]), pos], 1)
    return x, key_valid, pos
