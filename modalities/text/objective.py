"""What a text model predicts and how it is scored: token ids, cross-entropy, tied embeddings.

TokenIdTarget hands the loss each scored token's id as two base-256 digits (high, low): the core
casts targets to the prediction's dtype (score_decoded: values.to(pred.dtype)), and bf16 holds
integers exactly only up to 256, so a 30k-id target would be silently rounded under bf16
autocast; two digits in 0..255 survive any float dtype. TokenCrossEntropy reads them back.

Tied input/output embedding (BERT, MDLM): TokenIdTarget.attach, which the model calls once its
weights are initialized, makes the decoder's linear head share the adapter's token embedding
(head.weight [V, D] is token_embed.weight), so logits = h @ E^T + b. It needs the head to read
the embedding width: MAEDecoder(dim = TextAdapter.dim), depth 0 for BERT's linear head.
"""
from __future__ import annotations

import gin
import torch
import torch.nn.functional as F

from unimask.interfaces import Target
from unimask.tokens import gather_rows

DIGIT = 256


def ids_to_digits(ids: torch.Tensor) -> torch.Tensor:
    """[...] long -> [..., 2] float (id // 256, id % 256)."""
    return torch.stack([torch.div(ids, DIGIT, rounding_mode="floor"), ids % DIGIT], -1).float()


def digits_to_ids(digits: torch.Tensor) -> torch.Tensor:
    """[..., 2] float (any dtype) -> [...] long."""
    digits = digits.float().round().long()
    return digits[..., 0] * DIGIT + digits[..., 1]


@gin.configurable
class TokenIdTarget(Target):
    """The ids of the scored tokens, as (high, low) digits [B, S, 2]; tie_embeddings: share the
    decoder head's weight with the adapter's token embedding."""

    def __init__(self, tie_embeddings: bool = True):
        super().__init__()
        self.tie_embeddings = tie_embeddings

    def forward(self, tokens, adapter):
        return ids_to_digits(tokens.patches[..., 0].long()), None

    def select(self, tokens, adapter, ids):
        return ids_to_digits(gather_rows(tokens.patches, ids)[..., 0].long()), None

    def attach(self, model):
        if not self.tie_embeddings:
            return
        from unimask.decoders import MAEDecoder

        embedding = model.adapter.token_embed.weight  # [V, D]
        head = model.decoder.head if isinstance(model.decoder, MAEDecoder) else None
        if head is None or head.weight.shape != embedding.shape:
            raise ValueError(f"TokenIdTarget.tie_embeddings needs an MAEDecoder whose head maps the embedding width "
                             f"to the vocabulary ([V, D] = {tuple(embedding.shape)}): set MAEDecoder.dim = "
                             f"TextAdapter.dim, or TokenIdTarget.tie_embeddings = False")
        head.weight = embedding


@gin.configurable
class TokenCrossEntropy:
    """Cross-entropy per token: pred [B, S, V] logits, target [B, S, 2] digits (TokenIdTarget) or
    [B, S, 1] ids -> [B, S], in fp32. label_smoothing as torch's."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, pred, target, weight=None):
        b, s, v = pred.shape
        ids = digits_to_ids(target) if target.shape[-1] == 2 else target[..., 0].round().long()
        return F.cross_entropy(pred.float().reshape(b * s, v), ids.reshape(b * s), reduction="none",
                               label_smoothing=self.label_smoothing).view(b, s)
