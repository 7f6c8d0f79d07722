"""TokenTarget (BEiT v2-style, simplified): the discrete code of every token under a frozen VQ
tokenizer (unimask/models/vq.py, trained by gin/vq_tokenizer.gin), predicted with cross-entropy.

The tokenizer is built by gin (so any size), the weights that compute its codes (adapter,
encoder, projection, codebook) loaded strictly from its checkpoint, the rest where it fits: a
VQ-KD tokenizer's feature decoder and teacher are not needed for codes and are not rebuilt. It gets no gradient, is left out of the optimizer and is saved with the model. Codes
are the nearest codebook entries, so the same tokens always give the same codes.
"""
from __future__ import annotations

import gin
import torch

from unimask.interfaces import Target
from unimask.tokens import gather_tokens


@gin.configurable
class TokenTarget(Target):
    def __init__(self, tokenizer=gin.REQUIRED, checkpoint=gin.REQUIRED):
        super().__init__()
        from unimask.models.vq import CODE_PARTS
        from unimask.train.checkpoint import clean_state_dict, load_checkpoint, load_model_state

        self.tokenizer = tokenizer
        if checkpoint is not None:
            state = clean_state_dict(load_checkpoint(checkpoint)["model"])
            own = tokenizer.state_dict()
            fits = {k: v for k, v in state.items()  # the codes' parts, and the rest where it fits (a pixel decoder)
                    if k.startswith(CODE_PARTS) or (k in own and own[k].shape == v.shape)}
            result = load_model_state(self.tokenizer, fits, strict=False)
            missing = [k for k in result.missing_keys if k.startswith(CODE_PARTS)]
            if missing or result.unexpected_keys:
                raise ValueError(f"TokenTarget.checkpoint {checkpoint} does not fit the tokenizer: missing {missing[:6]}, "
                                 f"unexpected {result.unexpected_keys[:6]}")
        self.tokenizer.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: no codebook update, no dropout
        return self

    def dim(self, adapter) -> int:
        return self.tokenizer.quantizer.num_codes

    @torch.no_grad()
    def forward(self, tokens, adapter):
        return self.tokenizer.codes(tokens)[..., None], None  # [B, N, 1] long

    def select(self, tokens, adapter, ids):
        codes, _ = self(tokens, adapter)
        return gather_tokens(codes, ids), None

    def invert(self, pred, tokens, adapter):
        raise NotImplementedError("TokenTarget predicts codebook indices: there is no picture to draw")
