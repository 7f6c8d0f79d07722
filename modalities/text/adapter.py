"""TextAdapter: token ids [B, N] -> Tokens on a 1-D grid, with learned positions and the
tokenizer kept in the checkpoint.

Tokens: patches [B, N, 1] long ids, coords [B, N, 1] positions, valid = not [PAD], maskable =
not a special token ([CLS], [SEP], ...), grid (N,), extras[WORD_IDS] word indices when the batch
has them (whole-word masking). The encoder sees token_embed(ids) + pos_embed[position]; the
decoder's head is tied to token_embed by TokenIdTarget (objective.py).
"""
from __future__ import annotations

from typing import Optional

import gin
import torch
from torch import nn

from modalities.text.masking import WORD_IDS
from modalities.text.objective import TokenCrossEntropy
from modalities.text.state import decode_state, encode_state
from modalities.text.tokenizer import ByteTokenizer, TextTokenizer
from unimask.interfaces import ModalityAdapter
from unimask.pos import sincos_pos
from unimask.tokens import Tokens

POSITIONS = ("learned", "sincos", "rotary")


@gin.configurable
class TextAdapter(ModalityAdapter):
    """tokenizer: the dataset's (a gin singleton in the recipes); None = bytes. dim: the encoder
    width. max_len: positions the learned table holds (>= TextDataset.seq_len). pos: 'learned'
    (BERT), 'sincos', or 'rotary' (no code added here: the encoder rotates queries and keys by
    position, ViTEncoder.rope=True, as RoFormer / ModernBERT); at any other width than dim (a
    decoder asking at its own width) the codes are sin-cos."""

    batch_key = "ids"
    loss = TokenCrossEntropy()

    def __init__(self, tokenizer: Optional[TextTokenizer] = None, dim: int = 768, max_len: int = 512,
                 pos: str = "learned"):
        super().__init__()
        if pos not in POSITIONS:
            raise ValueError(f"TextAdapter.pos={pos!r}: use one of {POSITIONS}")
        self.tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()
        self.dim, self.max_len, self.pos_kind = dim, max_len, pos
        self.target_dim = self.tokenizer.vocab_size
        self.token_embed = nn.Embedding(self.tokenizer.vocab_size, dim)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.pos_embed = nn.Parameter(torch.zeros(max_len, dim)) if pos == "learned" else None
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.register_buffer("special_ids", torch.tensor(self.tokenizer.special_ids, dtype=torch.long),
                             persistent=False)
        self.register_buffer("content_ids", torch.from_numpy(self.tokenizer.content_ids).long(), persistent=False)

    # ---- tokens -------------------------------------------------------------------------------
    def tokenize(self, batch) -> Tokens:
        """{'ids': [B, N] long, 'word_ids': [B, N] (optional)} or ids [B, N] -> Tokens."""
        ids = batch[self.batch_key] if isinstance(batch, dict) else batch
        if ids.dim() != 2 or ids.dtype.is_floating_point:
            raise ValueError(f"TextAdapter expects token ids [B, N] (integers), got {tuple(ids.shape)} {ids.dtype}")
        ids = ids.long()
        batch_size, n = ids.shape
        if self.pos_embed is not None and n > self.max_len:
            raise ValueError(f"sequences of {n} tokens exceed TextAdapter.max_len={self.max_len} learned positions")
        if bool(((ids < 0) | (ids >= self.tokenizer.vocab_size)).any()):
            raise ValueError(f"token ids outside the vocabulary [0, {self.tokenizer.vocab_size}): the data was "
                             "tokenized with another tokenizer than the adapter's")
        coords = torch.arange(n, device=ids.device, dtype=torch.float32).view(1, n, 1).expand(batch_size, n, 1)
        valid = ids != self.tokenizer.pad_id
        maskable = valid & ~torch.isin(ids, self.special_ids.to(ids.device))
        extras = {}
        if isinstance(batch, dict) and WORD_IDS in batch:
            extras[WORD_IDS] = batch[WORD_IDS].to(ids.device).long()
        return Tokens(ids[..., None], coords, valid, grid=(n,), patch_shape=(1,), extras=extras, maskable=maskable)

    def embed(self, patches, tokens, ids):
        """patches [B, K, 1] ids -> [B, K, dim]."""
        return self.token_embed(patches[..., 0].long())

    def pos(self, coords, dim):
        """coords [..., 1] positions -> [..., dim]: the learned table at the encoder width."""
        if self.pos_kind == "rotary" and dim == self.dim:
            return coords.new_zeros(*coords.shape[:-1], dim)  # positions enter through the encoder's rotations
        if self.pos_embed is None or dim != self.dim:
            return sincos_pos(coords, dim)
        return self.pos_embed[coords[..., 0].long()]

    def target(self, tokens):
        return tokens.patches

    RAW_BUCKETS = 4096  # raw_features' width: one column per id, hashed above this many ids

    def raw_features(self, tokens):
        """One-hot ids [B, N, min(V, 4096)]: mean-pooled, the bag-of-tokens baseline (ids as numbers
        would mean nothing to a linear probe). Larger vocabularies share columns (id mod 4096)."""
        width = min(self.tokenizer.vocab_size, self.RAW_BUCKETS)
        return torch.nn.functional.one_hot(tokens.patches[..., 0].long() % width, width).float()

    def random_patches(self, like, generator=None):
        """BERT's 10% random tokens: uniform over the content ids (never a special). like [B, N, 1]."""
        device = generator.device if generator is not None else like.device
        pick = torch.randint(len(self.content_ids), like.shape, generator=generator, device=device)
        return self.content_ids.to(like.device)[pick.to(like.device)]

    # ---- the tokenizer inside the checkpoint ---------------------------------------------------
    def get_extra_state(self):
        return encode_state(self.tokenizer.state())

    def set_extra_state(self, state):
        state = decode_state(state)
        if state is None:
            raise ValueError("the checkpoint's text adapter state holds no tokenizer")
        if state.get("vocab_size") != self.tokenizer.vocab_size:
            raise ValueError(f"the checkpoint's tokenizer has {state.get('vocab_size')} ids, this adapter's "
                             f"{self.tokenizer.vocab_size}: the recipe names another tokenizer than the one it "
                             "was trained with")
        if state != self.tokenizer.state():
            self.tokenizer.load_state(state)  # in place: the dataset shares this tokenizer
