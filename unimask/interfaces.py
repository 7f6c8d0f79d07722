"""What the model may call on an encoder and a decoder: the whole interface, in one place.

MaskedModel talks to its encoder and decoder only through these attributes and calls, so a new
backbone (a GNN, a cross-attention decoder, a Mamba stack) subclasses one of these two classes
and fills them in; the model never probes with hasattr.

    x [B, K, D] tokens in, key_valid [B, K] bool (False = padding), tokens: the batch's Tokens,
    ids [B, K] which token each row of x holds (a GNN reads the edges among them).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class Encoder(nn.Module):
    """dim: width of x and of the output. pos_every_block: forward also takes `pos` [B, K, D], the
    position codes, to add again before every block (Point-MAE); the model adds them once to x
    either way. uses_tokens: forward reads `tokens` and `ids` (a GNN reads their edges), so it
    serves one modality's tokens only."""

    dim: int
    pos_every_block: bool = False
    uses_tokens: bool = False

    def forward(self, x: torch.Tensor, key_valid: Optional[torch.Tensor], tokens, ids: torch.Tensor,
                pos: Optional[torch.Tensor] = None) -> torch.Tensor:  # [B, K, D] -> [B, K, D]
        raise NotImplementedError

    def layer_outputs(self, x: torch.Tensor, key_valid: Optional[torch.Tensor], tokens, ids: torch.Tensor,
                      pos: Optional[torch.Tensor] = None) -> list:
        """Each layer's output [B, K, D], first to last (teachers average the top ones); an
        encoder without layers to show gives its output alone."""
        return [self(x, key_valid, tokens, ids, pos=pos)]


class Decoder(nn.Module):
    """embed: encoder width -> dim (applied to the latent); mask_token [1, 1, dim]: fills the places
    of tokens the decoder predicts; remask: hidden tokens' latents are replaced by the mask token
    (always true in drop mode; GraphMAE's re-mask in replace mode); use_pos: the model adds the
    adapter's position codes at width dim; pos_every_block: forward also takes `pos`;
    predicts_rows: forward(out_rows=[B, S]) returns only those rows (the model passes the scored
    ones), else forward returns every row it was given. init_head(out_dim) is called once the
    target's width is known. cross_context: forward takes context= / context_valid= (another
    set of tokens read through cross-attention: SiamMAE's view 1); else the model appends context
    tokens to the decoded ones (MultiMAE's other modalities)."""

    dim: int
    embed: nn.Module
    mask_token: nn.Parameter
    remask: bool = True
    use_pos: bool = True
    pos_every_block: bool = False
    predicts_rows: bool = False
    cross_context: bool = False

    def init_head(self, out_dim: int):
        raise NotImplementedError

    def forward(self, x: torch.Tensor, key_valid: Optional[torch.Tensor], tokens, ids: torch.Tensor,
                out_rows: Optional[torch.Tensor] = None, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError  # [B, M, dim] -> [B, M, out_dim], or [B, S, out_dim] at out_rows
