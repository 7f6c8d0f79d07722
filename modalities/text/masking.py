"""Whole-word masking (BERT's wwm models): a word is hidden with all of its tokens or not at all.

The adapter puts each token's word index into Tokens.extras[WORD_IDS] ([B, N] long, -1 where a
token belongs to no word: [CLS], [SEP], padding); the dataset computed them from the tokenizer's
word starts. The unit of the counting rule is the word: exactly round(ratio * words) words of a
sample are hidden, words counted over the tokens that may be hidden.
"""
from __future__ import annotations

import gin
import torch

from unimask.interfaces import Masker
from unimask.masking.base import hide_random_units

WORD_IDS = "word_ids"  # Tokens.extras key: [B, N] long word index of each token, -1 for none


def word_ids_of(tokens) -> torch.Tensor:
    words = tokens.extras.get(WORD_IDS)
    if words is None:
        raise ValueError(f"WholeWordMasker needs Tokens.extras[{WORD_IDS!r}] ([B, N] word index per token), "
                         "which TextAdapter fills from the batch's 'word_ids' (TextDataset yields them)")
    if words.shape != tokens.patches.shape[:2]:
        raise ValueError(f"Tokens.extras[{WORD_IDS!r}] must be [B, N] = {tuple(tokens.patches.shape[:2])}, "
                         f"got {tuple(words.shape)}")
    return words.to(tokens.patches.device).long()


@gin.configurable
class WholeWordMasker(Masker):
    """Hide whole words at random: round(ratio * words) of them per sample."""

    def hide(self, tokens, ratio, generator):
        valid = tokens.valid_mask()  # [B, N]: the tokens that may be hidden (the base class narrowed it)
        words = word_ids_of(tokens)
        in_word = valid & (words >= 0)
        n_words = int(words.max()) + 1 if words.numel() else 0
        if n_words == 0:
            return torch.zeros_like(valid)
        slot = torch.where(in_word, words, n_words)  # tokens outside any word land in a spare column
        word_valid = torch.zeros(valid.shape[0], n_words + 1, dtype=torch.bool, device=valid.device)
        word_valid.scatter_reduce_(1, slot, in_word, "amax")
        hidden_words = hide_random_units(word_valid[:, :n_words], ratio, generator)  # [B, W]
        hidden = torch.gather(torch.nn.functional.pad(hidden_words, (0, 1)), 1, slot)
        return hidden & in_word
