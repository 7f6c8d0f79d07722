"""MaskedModel: tokenize -> mask -> encode -> decode -> loss, for any adapter.

drop mode (MAE): the encoder sees the visible tokens only and the decoder fills hidden
places with a mask token. replace mode (SimMIM, BERT, GraphMAE): hidden tokens become a
learned [MASK] embedding (or a random / kept token, `replace_probs`) and the encoder sees
all tokens. Dual masking (VideoMAE v2): `decoder_masker` picks the hidden tokens the
decoder reconstructs; the rest are never decoded.
"""
from __future__ import annotations

from typing import Optional, Sequence

import gin
import torch
from torch import nn

from unimask.encoders import encode_with_pos, pos_kwargs
from unimask.targets import Target, gather_rows
from unimask.tokens import Mask, Tokens, gather_tokens


def select_ids(keep: torch.Tensor):
    """Indices of the True entries per sample, in order, padded. keep [B, N] -> ids [B, M], valid [B, M]."""
    ids = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    count = keep.sum(1)
    m = int(count.max())
    return ids[:, :m], torch.arange(m, device=keep.device)[None] < count[:, None]


def scored_among(mask: Mask, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Which of the tokens ids [B, M] (valid [B, M]) the loss scores -> [B, M] bool."""
    return gather_tokens(mask.targets, ids) & valid


@gin.configurable
class MaskedModel(nn.Module):
    def __init__(self, adapter, masker, schedule, encoder, decoder, target: Optional[Target] = None,
                 loss=None, mode: str = "drop", decoder_masker=None, decoder_ratio: float = 0.5,
                 replace_probs: Sequence[float] = (1.0, 0.0, 0.0), aux_objectives: Sequence[nn.Module] = ()):
        super().__init__()
        if mode not in ("drop", "replace"):
            raise ValueError(f"MaskedModel.mode must be 'drop' or 'replace', got {mode!r}")
        if abs(sum(replace_probs) - 1) > 1e-6 or len(replace_probs) != 3:
            raise ValueError(f"MaskedModel.replace_probs must be 3 numbers (mask, random, keep) summing to 1, got {replace_probs}")
        self.adapter, self.encoder, self.decoder = adapter, encoder, decoder
        self.masker, self.schedule, self.decoder_masker = masker, schedule, decoder_masker
        self.decoder_ratio, self.mode, self.replace_probs = decoder_ratio, mode, tuple(replace_probs)
        self.target = target if target is not None else Target()
        self.loss_fn = loss if loss is not None else adapter.loss
        self.decoder.init_head(self.target.dim(adapter))
        self.enc_mask_token = nn.Parameter(torch.zeros(1, 1, encoder.dim)) if mode == "replace" else None
        self.apply(init_weights)
        if self.enc_mask_token is not None:
            nn.init.normal_(self.enc_mask_token, std=0.02)
        self.aux_objectives = nn.ModuleList(aux_objectives)  # objective(out, src_ids, src_valid) -> scalar
        if hasattr(self.target, "attach"):  # a teacher copies the student once its weights are initialized
            self.target.attach(self)

    # ---- masking -------------------------------------------------------------------------
    def make_mask(self, tokens: Tokens, progress: float, generator=None) -> Mask:
        ratio = self.schedule(progress, tokens.batch_size, generator)
        features = None
        if getattr(self.masker, "needs_features", False):
            all_ids = torch.arange(tokens.num_tokens, device=tokens.patches.device).expand(tokens.batch_size, -1)
            features = self.embed_tokens(tokens, all_ids)
        mask = self.masker(tokens, ratio, generator, **({"features": features} if features is not None else {}))
        return self.add_decoder_mask(tokens, mask, generator)

    def add_decoder_mask(self, tokens: Tokens, mask: Mask, generator=None) -> Mask:
        """Dual masking: set `mask.decode` to the hidden tokens the decoder keeps (no-op without
        a decoder_masker)."""
        if self.decoder_masker is not None:
            hidden = Tokens(tokens.patches, tokens.coords, mask.masked & tokens.valid_mask(), tokens.grid, tokens.group)
            decode = self.decoder_masker(hidden, self.decoder_ratio, generator)
            mask.decode = mask.masked & ~decode.masked  # the part of the hidden tokens the decoder keeps
        return mask

    # ---- encoder -------------------------------------------------------------------------
    def embed_tokens(self, tokens: Tokens, ids: torch.Tensor, patches: Optional[torch.Tensor] = None):
        """ids [B, K] -> embedded tokens with position codes [B, K, D]."""
        patches = gather_rows(tokens.patches, ids) if patches is None else patches
        x = self.adapter.embed(patches, tokens, ids)
        return x + self.adapter.pos(gather_tokens(tokens.coords, ids), x.shape[-1]).to(x.dtype)

    def encode(self, tokens: Tokens, mask: Mask, generator=None):
        """-> latent [B, K, D], ids [B, K] of the tokens it belongs to, their validity [B, K]."""
        if self.mode == "drop":
            x = self.adapter.embed(gather_rows(tokens.patches, mask.ids_keep), tokens, mask.ids_keep)
            latent = encode_with_pos(self.adapter, self.encoder, x, mask.keep_valid, tokens, mask.ids_keep)
            return latent, mask.ids_keep, mask.keep_valid
        valid = tokens.valid_mask()
        all_ids = torch.arange(tokens.num_tokens, device=valid.device).expand(tokens.batch_size, -1)
        x = self.adapter.embed(tokens.patches, tokens, all_ids)  # [B, N, D]
        x = self.replace_hidden(x, tokens, mask, all_ids, generator)
        return encode_with_pos(self.adapter, self.encoder, x, valid, tokens, all_ids), all_ids, valid

    def replace_hidden(self, x, tokens, mask, all_ids, generator):
        """BERT 80/10/10: hidden tokens -> [MASK] / a random token / themselves. x [B, N, D]."""
        p_mask, p_random, _ = self.replace_probs
        device = x.device
        gen_device = generator.device if generator is not None else device
        u = torch.rand(mask.masked.shape, generator=generator, device=gen_device).to(device)
        to_mask = mask.masked & (u < p_mask)
        to_random = mask.masked & (u >= p_mask) & (u < p_mask + p_random)
        if bool(to_random.any()):
            random_patches = self.adapter.random_patches(tokens.patches, generator)
            if random_patches is None:  # another real token of the batch
                flat_valid = torch.nonzero(tokens.valid_mask().flatten()).squeeze(1)
                pick = torch.randint(len(flat_valid), mask.masked.shape, generator=generator, device=gen_device).to(device)
                random_patches = tokens.patches.flatten(0, 1)[flat_valid[pick]]
            x = torch.where(to_random[..., None], self.adapter.embed(random_patches, tokens, all_ids), x)
        return torch.where(to_mask[..., None], self.enc_mask_token.to(x.dtype), x)

    # ---- decoder -------------------------------------------------------------------------
    def decode(self, latent, src_ids, src_valid, tokens: Tokens, mask: Mask):
        """Latent of some tokens -> predictions for the tokens the decoder predicts.

        The decoder attends over every token it sees (visible + decoded); a decoder with
        `predicts_rows` returns only the scored ones (mask.targets), others all it sees.
        latent [B, K, D], src_ids/src_valid [B, K] -> pred [B, M, T], dec_ids [B, M], dec_valid [B, M]
        """
        dec = self.decoder
        z = dec.embed(latent)  # [B, K, Dd]
        batch, n = tokens.batch_size, tokens.num_tokens
        keep_latent = src_valid & ~(gather_tokens(mask.masked, src_ids) if dec.remask else torch.zeros_like(src_valid))
        mask_token = dec.mask_token.to(z.dtype)
        z = torch.where(keep_latent[..., None], z, mask_token)
        full = mask_token.expand(batch, n, z.shape[-1]).clone()
        full.scatter_(1, src_ids[..., None].expand_as(z), z)  # [B, N, Dd]
        valid = tokens.valid_mask()
        seen = valid & (~mask.masked | mask.targets)
        if bool(seen.all()):  # the decoder sees every token: no gather needed
            dec_ids, dec_valid = torch.arange(n, device=valid.device).expand(batch, -1), valid
            x, coords = full, tokens.coords
        else:
            dec_ids, dec_valid = select_ids(seen)
            x, coords = gather_tokens(full, dec_ids), gather_tokens(tokens.coords, dec_ids)
        extra = {}
        if dec.use_pos:
            pos = self.adapter.pos(coords, x.shape[-1]).to(x.dtype)
            x = x + pos
            extra = pos_kwargs(dec, pos)
        scored = scored_among(mask, dec_ids, dec_valid)  # [B, M]
        if getattr(dec, "predicts_rows", False) and not bool(scored.all()):
            # predictions only where they are scored: the last block and the head skip the rest
            rows, rows_valid = select_ids(scored)  # [B, S] places in M
            pred = dec(x, dec_valid, tokens, dec_ids, out_rows=rows, **extra)
            return pred, gather_tokens(dec_ids, rows), rows_valid
        return dec(x, dec_valid, tokens, dec_ids, **extra), dec_ids, dec_valid

    # ---- loss ----------------------------------------------------------------------------
    def score(self, pred, dec_ids, dec_valid, tokens: Tokens, mask: Mask):
        """Loss over the scored tokens: pred [B, M, T] for dec_ids [B, M] -> (mean loss [],
        token_loss [B, M], zero where not scored). The target is computed for the scored tokens
        only (gathered first, normalized after), and the loss runs on those rows only."""
        scored = scored_among(mask, dec_ids, dec_valid)  # [B, M]
        if bool(scored.all()):
            rows, rows_valid, scored_pred, scored_ids = None, None, pred, dec_ids
        else:
            rows, rows_valid = select_ids(scored)  # [B, S] places in M of the scored tokens
            scored_pred, scored_ids = gather_rows(pred, rows), gather_tokens(dec_ids, rows)  # [B, S, T], [B, S]
        values, weight = target_values(self.target, tokens, self.adapter, scored_ids)  # [B, S, T]
        row_loss = self.loss_fn(scored_pred, values.to(pred.dtype), weight)  # [B, S]
        if rows is None:
            return row_loss.sum() / max(1, scored.numel()), row_loss  # nothing scored: 0, not 0/0
        row_loss = row_loss * rows_valid
        token_loss = row_loss.new_zeros(scored.shape).scatter(1, rows, row_loss)  # [B, M]
        return row_loss.sum() / scored.sum().clamp(min=1), token_loss

    # ---- whole pipeline --------------------------------------------------------------------
    def forward(self, batch, progress: float = 0.0, generator=None, mask: Optional[Mask] = None,
                mask_only: bool = False) -> dict:
        """The whole pipeline -> {'loss', 'pred', 'dec_ids', 'mask', 'tokens', 'latent', 'token_loss', ...}.
        mask_only: stop once the mask is drawn -> {'tokens', 'mask'} (the trainer's fixed evaluation
        mask; drawn here, inside forward, so that wrappers such as FSDP gather a learned masker's weights)."""
        tokens = self.adapter.tokenize(batch)
        if mask is None:
            mask = self.make_mask(tokens, progress, generator)
        if mask_only:
            return {"tokens": tokens, "mask": mask}
        latent, src_ids, src_valid = self.encode(tokens, mask, generator)
        pred, dec_ids, dec_valid = self.decode(latent, src_ids, src_valid, tokens, mask)
        loss, token_loss = self.score(pred, dec_ids, dec_valid, tokens, mask)
        out = {"loss": loss, "pred": pred, "dec_ids": dec_ids, "mask": mask, "tokens": tokens,
               "latent": latent, "token_loss": token_loss}
        for i, objective in enumerate(self.aux_objectives):  # extra terms (edge reconstruction...)
            term = objective(out, src_ids, src_valid)
            out[f"aux_{i}_{type(objective).__name__}"] = term.detach()
            out["loss"] = out["loss"] + term
        if hasattr(self.masker, "aux_loss"):
            full_loss = torch.zeros(mask.masked.shape, device=loss.device).scatter(1, dec_ids, token_loss.detach().float())
            out["aux_loss"] = self.masker.aux_loss(mask, full_loss)
            out["loss"] = out["loss"] + out["aux_loss"]
        return out

    @torch.no_grad()
    def features(self, batch) -> tuple:
        """Frozen-encoder features with every token visible: (tokens [B, N, D], valid [B, N])."""
        tokens = self.adapter.tokenize(batch)
        valid = tokens.valid_mask()
        ids, keep_valid = select_ids(valid)
        x = self.adapter.embed(gather_rows(tokens.patches, ids), tokens, ids)
        return encode_with_pos(self.adapter, self.encoder, x, keep_valid, tokens, ids), keep_valid

    def after_step(self, progress: float):
        """Called by the trainer after every optimizer step (EMA teachers, masker curricula)."""
        self.target.after_step(progress)
        if hasattr(self.masker, "after_step"):
            self.masker.after_step(progress)

    def full_prediction(self, out: dict) -> torch.Tensor:
        """Scatter decoder predictions back to all tokens: [B, N, T] (zeros where not decoded)."""
        pred, dec_ids, tokens = out["pred"], out["dec_ids"], out["tokens"]
        full = torch.zeros(tokens.batch_size, tokens.num_tokens, pred.shape[-1], dtype=pred.dtype, device=pred.device)
        return full.scatter(1, dec_ids[..., None].expand_as(pred), pred)


def target_values(target, tokens: Tokens, adapter, ids: torch.Tensor):
    """(values [B, S, T], weight [B, S, T]|None) of the tokens `ids` [B, S]: the target's own
    `select` when it has one (per-token targets compute only those rows), else gathered."""
    if hasattr(target, "select"):
        return target.select(tokens, adapter, ids)
    values, weight = target(tokens, adapter)  # [B, N, T]
    return gather_tokens(values, ids), None if weight is None else gather_tokens(weight, ids)


def init_weights(module: nn.Module):
    """MAE's init: xavier-uniform linears, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
