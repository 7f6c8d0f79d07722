"""VQTokenizer: a small VQ-VAE over any adapter's tokens, trained by the same trainer
(gin/vq_tokenizer.gin), whose codes TokenTarget predicts (BEiT v2-style targets). Its target is
the patches by default; with a teacher as the target and a cosine loss it is BEiT v2's VQ-KD
(gin/vq_kd.gin: the codes are trained to reconstruct a teacher's features).

    tokens --adapter.embed + pos--> encoder (every token visible) --Linear--> z [B, N, code_dim]
      --VectorQuantizer--> codes [B, N] / quantized z --decoder (mask-free MAE decoder)--> patches

It speaks the trainer's interface (forward -> {'loss', 'mask', 'tokens', 'pred', 'dec_ids',
'terms', 'stats'}, schedule, after_step, render), so checkpoints, resume and logging are the
usual ones; metrics.jsonl gets loss_recon, loss_commitment, perplexity and dead_codes.
"""
from __future__ import annotations

from typing import Optional

import gin
import torch
from torch import nn

from unimask.encoders import encode_ids, position_codes
from unimask.interfaces import PretrainingModel, StepOutput, Target
from unimask.masking.schedules import ConstantRatio
from unimask.models.masked import init_model_weights
from unimask.quantize import VectorQuantizer
from unimask.targets import PixelTarget
from unimask.tokens import Mask, Tokens

CODE_PARTS = ("adapter.", "encoder.", "to_code.", "quantizer.")  # what computes the codes (TokenTarget loads these)


@gin.configurable
class VQTokenizer(PretrainingModel):
    def __init__(self, adapter=gin.REQUIRED, encoder=gin.REQUIRED, decoder=gin.REQUIRED, num_codes: int = 512,
                 code_dim: int = 32, decay: float = 0.99, beta: float = 0.25, target: Optional[Target] = None,
                 loss=None):
        """target: what the decoder reconstructs from the codes (norm-pix patches by default; a
        teacher for VQ-KD); loss: per token, (pred, values, weight) -> [B, N] (default: the mean
        squared error; VQ-KD: SCELoss(alpha=1), one minus the cosine similarity)."""
        super().__init__()
        self.adapter, self.encoder, self.decoder = adapter, encoder, decoder
        self.to_code = nn.Linear(encoder.dim, code_dim)
        self.quantizer = VectorQuantizer(num_codes, code_dim, decay, beta)
        self.target = target if target is not None else PixelTarget(norm_pix=True)
        self.loss_fn = loss
        self.decoder.init_head(self.target.dim(adapter))
        self.schedule = ConstantRatio(0.0)  # nothing is masked; the trainer checkpoints a schedule
        init_model_weights(self, [self.target])  # a loaded teacher keeps its weights

    def encode_codes(self, tokens: Tokens) -> dict:
        """Every valid token -> the quantizer's output (codes [B, N], quantized [B, N, code_dim])."""
        ids = torch.arange(tokens.num_tokens, device=tokens.patches.device).expand(tokens.batch_size, -1)
        valid = tokens.valid_mask()
        z = self.to_code(encode_ids(self.adapter, self.encoder, tokens, ids, valid))
        return self.quantizer(z, valid)

    @torch.no_grad()
    def codes(self, tokens: Tokens) -> torch.Tensor:
        """[B, N] long code of every token (deterministic: the nearest code, no update)."""
        was_training = self.training
        self.eval()
        out = self.encode_codes(tokens)["codes"]
        self.train(was_training)
        return out

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor, tokens: Tokens) -> torch.Tensor:
        """codes [B, N] long at the places of `tokens` (their coords) -> the decoder's prediction
        [B, N, T] in the target's space (raw patches for a tokenizer trained on raw pixels): what
        generation turns back into a picture."""
        ids = torch.arange(tokens.num_tokens, device=codes.device).expand(tokens.batch_size, -1)
        z = self.decoder.embed(self.quantizer.codebook[codes])  # [B, N, dec dim]
        if self.decoder.spec.use_pos:
            z = z + position_codes(self.adapter, tokens, ids, z)
        return self.decoder(z, tokens.valid_mask(), tokens, ids)

    def forward(self, batch, progress: float = 0.0, generator=None, mask: Optional[Mask] = None,
                mask_only: bool = False) -> StepOutput:
        """-> StepOutput(loss = recon + commitment, terms, stats: perplexity and dead codes, pred [B, N, T])."""
        tokens = self.adapter.tokenize(batch)
        valid = tokens.valid_mask()
        mask = Mask.from_hidden(valid, valid, torch.zeros(tokens.batch_size))  # all reconstructed, none hidden
        if mask_only:
            return StepOutput(mask=mask, tokens=tokens)
        quantized = self.encode_codes(tokens)
        ids = torch.arange(tokens.num_tokens, device=valid.device).expand(tokens.batch_size, -1)
        z = self.decoder.embed(quantized["quantized"])
        if self.decoder.spec.use_pos:
            z = z + position_codes(self.adapter, tokens, ids, z)
        pred = self.decoder(z, valid, tokens, ids)  # [B, N, T]
        values, weight = self.target.select(tokens, self.adapter, ids)
        per_token = ((pred.float() - values) ** 2).mean(-1) if self.loss_fn is None else \
            self.loss_fn(pred.float(), values.float(), weight)  # [B, N]
        recon = (per_token * valid).sum() / valid.sum().clamp(min=1)
        loss = recon + quantized["commitment"]
        return StepOutput(loss=loss, mask=mask, pred=pred, tokens=tokens, extras={"dec_ids": ids},
                          terms={"recon": recon.detach(), "commitment": quantized["commitment"].detach()},
                          stats={"perplexity": quantized["perplexity"], "dead_codes": quantized["dead"]})

    def after_step(self, progress: float):
        """The codebook moves in forward (its EMA); nothing to do after the optimizer step."""

    def render(self, batch, out: StepOutput, path: str) -> str:
        pred = self.target.invert(out.pred, out.tokens, self.adapter)
        return self.adapter.render(out.tokens, pred, out.mask, path)

    @torch.no_grad()
    def features(self, batch) -> tuple:
        """The quantized vectors of every token, for probes: ([B, N, code_dim], valid)."""
        tokens = self.adapter.tokenize(batch)
        return self.encode_codes(tokens)["quantized"], tokens.valid_mask()
