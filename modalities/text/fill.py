"""Fill-mask: the k best completions of a text with [MASK] places, by beam search.

Each '[MASK]' in the text stands for `mask_length` tokens (a byte model needs several for a
word: "The [MASK] sat" with mask_length=3 can become "cat"). The places are filled left to
right; after each, the model runs again with the filled token visible, so a multi-token fill
is a coherent guess, not k independent per-place argmaxes. With one place it is plain top-k.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np
import torch

from modalities.text.inference import content_logits, predict_logits

MASK_TEXT = "[MASK]"


@dataclass
class Fill:
    text: str        # the whole text, filled
    fill: List[str]  # the text of each filled token, in order
    logprob: float   # sum of the fills' log-probabilities


def encode_with_masks(tokenizer, text: str, mask_length: int = 1) -> tuple:
    """'a [MASK] b' -> (ids [N] with [CLS] ... [SEP], hidden [N] bool). Text between the masks is
    encoded piece by piece, so a mask never merges with its neighbours; where a word's token
    carries its leading space (byte-level BPE: " cat"), the space before a [MASK] goes to the fill."""
    if MASK_TEXT not in text:
        raise ValueError(f"the text holds no {MASK_TEXT} to fill: {text!r}")
    if mask_length < 1:
        raise ValueError(f"mask_length={mask_length} must be >= 1")
    ids, hidden = [tokenizer.cls_id], [False]
    pieces = text.split(MASK_TEXT)
    for i, piece in enumerate(pieces):
        if tokenizer.leading_space_words and i < len(pieces) - 1 and piece.endswith(" "):
            piece = piece[:-1]
        if i:
            ids += [tokenizer.mask_id] * mask_length
            hidden += [True] * mask_length
        if piece:
            piece_ids = tokenizer.encode(piece)[0].tolist()
            ids += piece_ids
            hidden += [False] * len(piece_ids)
    ids.append(tokenizer.sep_id)
    hidden.append(False)
    return torch.tensor(ids), torch.tensor(hidden)


@torch.no_grad()
def fill_mask(model, text: str, k: int = 5, mask_length: int = 1) -> List[Fill]:
    """-> the k best fills (highest summed log-probability first)."""
    tokenizer = model.adapter.tokenizer
    ids, hidden = encode_with_masks(tokenizer, text, mask_length)
    max_len = model.adapter.max_len if model.adapter.pos_embed is not None else None
    if max_len is not None and len(ids) > max_len:
        raise ValueError(f"the text is {len(ids)} tokens, longer than the model's {max_len} positions")
    places = torch.nonzero(hidden).squeeze(1).tolist()
    beams = [(ids, 0.0)]
    for step, place in enumerate(places):
        batch_ids = torch.stack([b for b, _ in beams])  # [beams, N]
        still = torch.zeros_like(batch_ids, dtype=torch.bool)
        still[:, places[step:]] = True
        logits = content_logits(predict_logits(model, batch_ids, still)[:, place], tokenizer)  # [beams, V]
        logprobs = torch.log_softmax(logits, -1).cpu()
        scores = torch.tensor([s for _, s in beams])[:, None] + logprobs  # [beams, V]
        top = torch.topk(scores.flatten(), min(k, int(torch.isfinite(scores).sum())))
        beams = []
        for flat, score in zip(top.indices.tolist(), top.values.tolist()):
            beam, token = divmod(flat, logprobs.shape[1])
            filled = batch_ids[beam].cpu().clone()
            filled[place] = token
            beams.append((filled, score))
    return [Fill(tokenizer.decode(b[1:-1].tolist()), [tokenizer.token_text(t) for t in b[places].tolist()], s)
            for b, s in beams]


def describe_fills(fills: List[Fill]) -> str:
    """One line a fill: the text, the filled tokens, the fill's probability (and log-probability)."""
    return "\n".join(f"{i + 1}. {f.text!r}  fill={''.join(f.fill)!r}  p={np.exp(f.logprob):.3g} "
                     f"(log {f.logprob:.3f})" for i, f in enumerate(fills))
