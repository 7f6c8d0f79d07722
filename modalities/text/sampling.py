"""Generation from a masked-diffusion model by iterative unmasking (MDLM / MD4 sampling).

Start from `length` [MASK] tokens (after an optional prompt) at time t = 1 and take `steps`
steps t -> s = t - 1/steps. At each step the model predicts every still-masked place and a token
is drawn there (special tokens excluded); then
    order='random'      (MDLM's ancestral rule) each masked place is unmasked with probability
                        (t - s) / t, so at s = 0 every place is;
    order='confidence'  (MaskGIT-style) the places whose drawn token is most probable are
                        unmasked, as many as leave round(length * s) masked.
Unmasked tokens are kept to the end (MDLM's carry-over): a place is decided once.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from modalities.text.inference import content_logits, predict_logits

ORDERS = ("random", "confidence")


def draw(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> tuple:
    """logits [B, L, V] -> (tokens [B, L], their probabilities [B, L]); temperature 0 = argmax."""
    probs = torch.softmax(logits / max(temperature, 1e-6), -1) if temperature > 0 else torch.softmax(logits, -1)
    if temperature > 0:
        tokens = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:2])
    else:
        tokens = probs.argmax(-1)
    return tokens, torch.gather(probs, 2, tokens[..., None])[..., 0]


@torch.no_grad()
def sample_ids(model, length: int, steps: Optional[int] = None, order: str = "random", temperature: float = 1.0,
               prompt: str = "", num: int = 1, seed: int = 0) -> torch.Tensor:
    """-> generated ids [num, length] (the prompt and [CLS]/[SEP] left out); no [MASK] left."""
    if order not in ORDERS:
        raise ValueError(f"order={order!r}: use one of {ORDERS}")
    if length < 1:
        raise ValueError(f"length={length} must be >= 1")
    steps = length if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    tokenizer = model.adapter.tokenizer
    generator = torch.Generator().manual_seed(seed)
    head = [tokenizer.cls_id] + (tokenizer.encode(prompt)[0].tolist() if prompt else [])
    ids = torch.tensor(head + [tokenizer.mask_id] * length + [tokenizer.sep_id]).repeat(num, 1)  # [num, N]
    if model.adapter.pos_embed is not None and ids.shape[1] > model.adapter.max_len:
        raise ValueError(f"prompt + length = {ids.shape[1]} tokens exceed the model's "
                         f"{model.adapter.max_len} positions")
    places = slice(len(head), len(head) + length)
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[:, places] = True
    for step in range(steps):
        t, s = 1.0 - step / steps, 1.0 - (step + 1) / steps
        logits = content_logits(predict_logits(model, ids, masked)[:, places].cpu(), tokenizer)  # [num, L, V]
        tokens, confidence = draw(logits, temperature, generator)
        still = masked[:, places]
        if order == "random":
            reveal = still & (torch.rand(still.shape, generator=generator) < (t - s) / t)
        else:
            n_reveal = still.sum(1) - round(length * s)  # [num]
            score = torch.where(still, confidence, torch.full_like(confidence, -1.0))
            rank = torch.argsort(torch.argsort(score, 1, descending=True), 1)
            reveal = still & (rank < n_reveal[:, None])
        window = ids[:, places]
        ids[:, places] = torch.where(reveal, tokens, window)
        masked[:, places] = still & ~reveal
    return ids[:, places]


def sample_text(model, length: int, **kwargs) -> List[str]:
    """sample_ids, decoded."""
    return [model.adapter.tokenizer.decode(row.tolist()) for row in sample_ids(model, length, **kwargs)]
