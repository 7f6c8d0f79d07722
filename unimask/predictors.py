"""JEPAPredictor: the narrow transformer of I-JEPA / V-JEPA that predicts target-encoder latents of
hidden blocks from the context encoder's latents.

Why it is an MAEDecoder: I-JEPA's predictor (VisionTransformerPredictor) is the same network as
MAE's decoder (a linear from encoder width, mask tokens plus fixed position codes at its own
width, timm Blocks, a norm and a linear out); only the sequences it reads differ. Each
sequence is one sample's context latents followed by mask tokens at one target block's places
(I-JEPA), or at all of that sample's target places (V-JEPA); every sequence of the batch runs in
one pass, padded where blocks differ in size, and the last block computes the mask-token rows only.
Positions come from the adapter (`adapter.pos(coords, width)`), as for every decoder.
"""
from __future__ import annotations

import gin
import torch

from unimask.decoders import MAEDecoder
from unimask.encoders import position_codes
from unimask.tokens import Tokens, gather_tokens


@gin.configurable
class JEPAPredictor(MAEDecoder):
    """in_dim: the context encoder's width; dim, depth, num_heads: the predictor's (I-JEPA ViT-H/14:
    384, 12, 16, the encoder's head count); norm_eps 1e-6 as I-JEPA's. Its head's width is the
    target's (init_head), the target encoder's width for latent targets."""

    def __init__(self, in_dim: int = 768, dim: int = 384, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, norm_eps: float = 1e-6):
        super().__init__(in_dim=in_dim, dim=dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, remask=True,
                         use_pos=True, pos_every_block=False, window=None, shift_windows=False, norm_eps=norm_eps)

    def predict(self, adapter, tokens: Tokens, latent: torch.Tensor, ctx_ids: torch.Tensor, ctx_valid: torch.Tensor,
                owner: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Predictions at the target places of R sequences.

        latent [B, K, in_dim] context latents of the tokens ctx_ids [B, K] (valid ctx_valid [B, K]);
        owner [R] long: the sample of each sequence; ids [R, S] its target tokens (valid [R, S])
        -> [R, S, out_dim]."""
        z = self.embed(latent)  # [B, K, dim], embedded once per sample, then shared by its sequences
        z = (z + position_codes(adapter, tokens, ctx_ids, z)).index_select(0, owner)  # [R, K, dim]
        coords = gather_tokens(tokens.coords.index_select(0, owner), ids)  # [R, S, C]
        queries = self.mask_token.to(z.dtype) + adapter.pos(coords, z.shape[-1]).to(z.dtype)  # [R, S, dim]
        seq = torch.cat([z, queries], 1)  # [R, K + S, dim]
        seq_valid = torch.cat([ctx_valid.index_select(0, owner), valid], 1)
        context = z.shape[1]
        rows = torch.arange(context, context + ids.shape[1], device=ids.device).expand(ids.shape[0], -1)  # [R, S]
        return self(seq, seq_valid, tokens, None, out_rows=rows)
