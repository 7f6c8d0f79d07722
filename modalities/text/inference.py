"""Predictions at chosen places of a text: the common step of fill-mask, sampling and evaluation.

`predict_logits` hides exactly the given places (a Mask built from them, not the masker) and
puts [MASK] on every one of them, whatever 80/10/10 split the model was trained with: a model
in replace mode would otherwise feed 10% of them as random tokens and 10% as themselves.
"""
from __future__ import annotations

from typing import Optional

import torch

from unimask.generation import all_hidden_as_mask
from unimask.tokens import Mask


def device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict_logits(model, ids: torch.Tensor, hidden: torch.Tensor, word_ids: Optional[torch.Tensor] = None,
                   ratio: Optional[torch.Tensor] = None) -> torch.Tensor:
    """ids [B, N] long, hidden [B, N] bool (the places to predict) -> logits [B, N, V] (fp32;
    zeros where not hidden). Hidden places may hold any id (their input is [MASK])."""
    device = device_of(model)
    ids, hidden = ids.to(device), hidden.to(device)
    batch = {"ids": ids, **({"word_ids": word_ids.to(device)} if word_ids is not None else {})}
    tokens = model.adapter.tokenize(batch)
    if ratio is None:
        ratio = hidden.sum(1).double() / tokens.maskable_mask().sum(1).clamp(min=1)
    mask = Mask.from_hidden(hidden & tokens.valid_mask(), tokens.valid_mask(), ratio.clamp(max=0.999))
    with all_hidden_as_mask(model):
        out = model(batch, mask=mask, generator=torch.Generator(device="cpu").manual_seed(0))
    return model.full_prediction(out).float()


def content_logits(logits: torch.Tensor, tokenizer) -> torch.Tensor:
    """[..., V] -> the same with every special id at -inf: fills and samples are real text."""
    logits = logits.clone()
    logits[..., list(tokenizer.special_ids)] = float("-inf")
    return logits
