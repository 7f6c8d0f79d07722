"""Tokenizers that work offline: bytes by default, a BPE trained on the user's corpus (bpe.py).

Both speak one small interface (`TextTokenizer`), the only thing the dataset and the adapter ask
of a tokenizer: `encode(text) -> (ids, word_starts)`, `decode(ids)`, the special ids, and a JSON
state. The JSON state travels inside the adapter's checkpoint (TextAdapter.get_extra_state), so a
checkpoint alone rebuilds its tokenizer: `remember_checkpoint_tokenizers` lets `text_tokenizer`
find the copy when the file it was trained into is gone.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np


SPECIAL_NAMES = ("pad", "cls", "sep", "mask", "unk")  # unk only where a vocabulary can miss a symbol
SPECIAL_TOKENS = {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]", "unk": "[UNK]"}
WHITESPACE_BYTES = np.array([9, 10, 11, 12, 13, 32], dtype=np.uint8)


def word_starts_from_bytes(data: np.ndarray) -> np.ndarray:
    """[T] uint8 -> [T] bool: where a word begins. A word is a run of whitespace followed by a run
    of other bytes (" cat", as a byte-level BPE pre-tokenizes), so multi-byte characters never
    split and whole-word masking hides a word with the space before it."""
    space = np.isin(data, WHITESPACE_BYTES)
    starts = np.zeros(len(data), dtype=bool)
    if len(data):
        starts[0] = True
        starts[1:] = space[1:] & ~space[:-1]
    return starts


class TextTokenizer:
    """What the dataset and the adapter need: ids of a text, word boundaries, special ids.

    pad_id, cls_id, sep_id, mask_id (and unk_id, or None) are ids inside [0, vocab_size).
    `content_ids` are every other id: what BERT's 10% random replacement and the sampler draw."""

    kind = "base"
    leading_space_words = False  # a word's token carries the space before it (" cat"), as byte-level BPE's do
    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: Optional[int] = None

    def encode(self, text: str) -> Tuple[np.ndarray, np.ndarray]:
        """text -> (ids [T] int64, word_starts [T] bool), no special tokens added."""
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> List[Tuple[np.ndarray, np.ndarray]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """ids -> text; special ids are left out."""
        raise NotImplementedError

    def token_text(self, token_id: int) -> str:
        """One id as readable text (a special's name, a byte's character or <0xNN>)."""
        raise NotImplementedError

    def state(self) -> dict:
        """JSON-able state that rebuilds this tokenizer exactly (kept in checkpoints)."""
        raise NotImplementedError

    def load_state(self, state: dict):
        """Become the tokenizer `state` describes (in place: the dataset and the adapter share one)."""
        raise NotImplementedError

    @property
    def special_ids(self) -> Tuple[int, ...]:
        return tuple(i for i in (self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.unk_id) if i is not None)

    @property
    def content_ids(self) -> np.ndarray:
        """[V - specials] int64: the ids of real text."""
        keep = np.ones(self.vocab_size, dtype=bool)
        keep[list(self.special_ids)] = False
        return np.nonzero(keep)[0]


class ByteTokenizer(TextTokenizer):
    """UTF-8 bytes 0..255, then [PAD] 256, [CLS] 257, [SEP] 258, [MASK] 259: 260 ids, no
    vocabulary file, and every string round-trips (there is no [UNK])."""

    kind = "byte"

    def __init__(self):
        self.vocab_size, self.pad_id, self.cls_id, self.sep_id, self.mask_id = 260, 256, 257, 258, 259
        self.unk_id = None

    def encode(self, text):
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        return data.astype(np.int64), word_starts_from_bytes(data)

    def decode(self, ids):
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def token_text(self, token_id):
        token_id = int(token_id)
        names = {self.pad_id: "[PAD]", self.cls_id: "[CLS]", self.sep_id: "[SEP]", self.mask_id: "[MASK]"}
        if token_id in names:
            return names[token_id]
        return chr(token_id) if 32 <= token_id < 127 else f"<0x{token_id:02X}>"

    def state(self):
        return {"kind": self.kind, "vocab_size": self.vocab_size}

    def load_state(self, state):
        if state.get("kind") != self.kind:
            raise ValueError(f"the checkpoint's tokenizer is {state.get('kind')!r}, this one is 'byte'")
