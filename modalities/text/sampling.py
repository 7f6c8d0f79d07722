"""Text from a masked-diffusion model by iterative unmasking (MDLM / MD4 sampling), on the
core's sampler (unimask/generation/sampler.py, shared with image and audio codes).

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
from unimask.generation import ORDERS, iterative_unmask


@torch.no_grad()
def sample_ids(model, length: int, steps: Optional[int] = None, order: str = "random", temperature: float = 1.0,
               prompt: str = "", num: int = 1, seed: int = 0) -> torch.Tensor:
    """-> generated ids [num, length] (the prompt and [CLS]/[SEP] left out); no [MASK] left."""
    if order not in ORDERS:
        raise ValueError(f"order={order!r}: use one of {ORDERS}")
    if length < 1:
        raise ValueError(f"length={length} must be >= 1")
    steps = length if steps is None else steps
    tokenizer = model.adapter.tokenizer
    head = [tokenizer.cls_id] + (tokenizer.encode(prompt)[0].tolist() if prompt else [])
    ids = torch.tensor(head + [tokenizer.mask_id] * length + [tokenizer.sep_id]).repeat(num, 1)  # [num, N]
    if model.adapter.pos_embed is not None and ids.shape[1] > model.adapter.max_len:
        raise ValueError(f"prompt + length = {ids.shape[1]} tokens exceed the model's "
                         f"{model.adapter.max_len} positions")
    places = slice(len(head), len(head) + length)

    def predict(window: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:  # [num, L] x2 -> [num, L, V]
        full, masked = ids.clone(), torch.zeros_like(ids, dtype=torch.bool)
        full[:, places], masked[:, places] = window, hidden
        return content_logits(predict_logits(model, full, masked)[:, places].cpu(), tokenizer)

    generator = torch.Generator().manual_seed(seed)
    window = ids[:, places]
    return iterative_unmask(predict, window, torch.ones_like(window, dtype=torch.bool), steps, order=order,
                            schedule="linear", temperature=temperature, generator=generator)


def sample_text(model, length: int, **kwargs) -> List[str]:
    """sample_ids, decoded."""
    return [model.adapter.tokenizer.decode(row.tolist()) for row in sample_ids(model, length, **kwargs)]
