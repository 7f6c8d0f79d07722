"""PCP-MAE (Zhang et al., NeurIPS 2024): the decoder is given where the encoder thinks the hidden
tokens are, not where they are.

Why: Point-MAE hands the decoder the hidden tokens' positions. Where the positions alone nearly
determine the content (thin 2-D shapes whose positions trace them), the decoder reconstructs
the hidden tokens from them and the encoder is barely needed, so its features learn little. PCP-MAE's Predicting Center
Module runs the hidden tokens through the same encoder blocks: each carries its own content
embedding plus one learned position token (no position code of its own), attends to the visible
tokens and to the other hidden ones, and a head predicts its coordinates. The visible tokens never
attend to the hidden ones, so in eval mode their latents are exactly the plain MAE's (in
training a BatchNorm in the embedding normalizes visible and hidden groups as one batch, as
PCP-MAE embeds every group at once). The loss adds
`weight` x MSE between predicted and true coordinates; the decoder gets the position codes of the
predicted coordinates, detached (PCP-MAE's `add_detach`), so reconstruction does not pull the
prediction. One difference from the paper: the head predicts the coordinates themselves (what the
adapter's position code reads), not their sin-cos embedding.
"""
from __future__ import annotations

import gin
import torch
import torch.nn.functional as F
from torch import nn

from unimask.encoders import embed_ids, position_codes
from unimask.interfaces import Encoder
from unimask.tokens import Mask, Tokens, gather_tokens, select_ids


def accepts_block_masks(encoder: nn.Module) -> bool:
    """Can this encoder carry the hidden tokens along (transformer blocks, forward(block_masks=):
    Encoder.takes_block_masks)? A GNN or another module without them would fail deep inside forward
    otherwise."""
    return isinstance(encoder, Encoder) and encoder.takes_block_masks


def ride_along_masks(keep_valid: torch.Tensor, hidden_valid: torch.Tensor) -> torch.Tensor:
    """Who may attend to whom in [visible K | hidden M]: visible queries see valid visible keys
    only, hidden queries see every valid key. keep_valid [B, K], hidden_valid [B, M] -> [B, 1, K+M, K+M]."""
    k = keep_valid.shape[1]
    valid = torch.cat([keep_valid, hidden_valid], 1)  # [B, K+M]
    key_visible = torch.zeros_like(valid)
    key_visible[:, :k] = True
    query_hidden = ~key_visible
    allowed = (query_hidden[:, :, None] | key_visible[:, None, :]) & valid[:, None, :]  # [B, K+M, K+M]
    return allowed[:, None]


@gin.configurable
class PositionPredictor(nn.Module):
    """PCP-MAE's centre prediction for MaskedModel (drop mode; `MaskedModel.position_predictor`).
    dim: the encoder's width; coord_dim: the width of Tokens.coords; weight: the loss weight
    (PCP-MAE's ita, 0.1)."""

    def __init__(self, dim: int = gin.REQUIRED, coord_dim: int = gin.REQUIRED, weight: float = 0.1):
        super().__init__()
        self.weight = weight
        self.mask_pos_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(inplace=True),
                                  nn.Linear(dim, coord_dim))
        self.reset_token()

    def reset_token(self):
        """PCP-MAE's init of the position token. The head keeps torch's default Linear init, as
        PCP-MAE's pred_pos_proj does (its _init_weights covers the encoder and decoder only)."""
        nn.init.trunc_normal_(self.mask_pos_token, std=0.02)

    def forward(self, adapter, encoder, tokens: Tokens, mask: Mask) -> tuple:
        """-> (latent [B, K, D] of the visible tokens mask.ids_keep, decoder_tokens: tokens with the
        hidden ones' coordinates replaced by their detached predictions, loss [] (unweighted MSE))."""
        if encoder.rope:
            raise ValueError("PositionPredictor: a rotary encoder (ViTEncoder.rope=True) would rotate the hidden "
                             "tokens by their true coordinates; use an adapter's position codes instead")
        if not tokens.coords.is_floating_point():
            raise ValueError("PositionPredictor needs continuous coordinates (Tokens.coords is "
                             f"{tokens.coords.dtype}: grid indices, whose position codes are table lookups)")
        hidden_ids, hidden_valid = select_ids(mask.masked)  # [B, M]
        ids, keep_valid = mask.ids_keep, mask.keep_valid  # [B, K]
        k, all_ids = ids.shape[1], torch.cat([ids, hidden_ids], 1)  # [B, K+M]
        x = embed_ids(adapter, tokens, all_ids)  # [B, K+M, D]: content only; one call, as PCP-MAE embeds
        # every group at once (a BatchNorm in the embedding sees one batch, not two)
        pos_visible = position_codes(adapter, tokens, ids, x[:, :k])  # [B, K, D]
        pos_hidden = self.mask_pos_token.to(x.dtype).expand(*hidden_ids.shape, -1)  # [B, M, D]
        pos = torch.cat([pos_visible, pos_hidden], 1)
        x = x + pos
        valid = torch.cat([keep_valid, hidden_valid], 1)
        masks = [ride_along_masks(keep_valid, hidden_valid)] * encoder.block_count()
        out = encoder(x, valid, tokens, all_ids,
                      pos=pos if encoder.pos_every_block else None, block_masks=masks)  # [B, K+M, D]
        predicted = self.head(out[:, k:]).float()  # [B, M, coord_dim]
        true = gather_tokens(tokens.coords, hidden_ids).float()
        if predicted.shape[-1] != true.shape[-1]:
            raise ValueError(f"PositionPredictor.coord_dim={predicted.shape[-1]} but the tokens' coordinates "
                             f"have {true.shape[-1]}")
        per_row = F.mse_loss(predicted, true, reduction="none").mean(-1) * hidden_valid  # [B, M]
        loss = per_row.sum() / hidden_valid.sum().clamp(min=1)
        filled = torch.where(hidden_valid[..., None], predicted.detach(), true)
        coords = tokens.coords.scatter(1, hidden_ids[..., None].expand_as(filled), filled)  # [B, N, c]
        return out[:, :k], tokens.replace(coords=coords), loss
