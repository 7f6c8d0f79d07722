"""A byte-level BPE tokenizer from the `tokenizers` package, trained offline on the user's corpus.

Byte-level (GPT-2 / RoBERTa style): every UTF-8 string encodes, so [UNK] is never produced, and
words are what the ByteLevel pre-tokenizer splits (" cat"), which gives whole-word masking its
words. The special tokens come first: [PAD] 0, [CLS] 1, [SEP] 2, [MASK] 3, [UNK] 4. A JSON
written elsewhere (a downloaded tokenizer.json) also loads when it has those specials, under
these names or RoBERTa's (<pad>, <s>, </s>, <mask>, <unk>).
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

import numpy as np

from modalities.text.tokenizer import SPECIAL_NAMES, SPECIAL_TOKENS, TextTokenizer

ALIASES = {"pad": ("[PAD]", "<pad>"), "cls": ("[CLS]", "<s>", "[BOS]", "<bos>"),
           "sep": ("[SEP]", "</s>", "[EOS]", "<eos>"), "mask": ("[MASK]", "<mask>"), "unk": ("[UNK]", "<unk>")}


def require_tokenizers():
    try:
        import tokenizers
    except ImportError as err:  # the package is optional until a recipe asks for BPE
        raise ImportError("the BPE tokenizer needs the `tokenizers` package: pip install tokenizers") from err
    return tokenizers


class BPETokenizer(TextTokenizer):
    """A `tokenizers.Tokenizer` behind the TextTokenizer interface. path: where its JSON lives
    (kept in the state, so a checkpoint says which file it came from)."""

    kind = "bpe"
    leading_space_words = True

    def __init__(self, tokenizer, path: Optional[str] = None):
        self.path = None if path is None else os.path.abspath(os.path.expanduser(str(path)))
        self.set_tokenizer(tokenizer)

    def set_tokenizer(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        ids = {}
        for name in SPECIAL_NAMES:
            found = [tokenizer.token_to_id(t) for t in ALIASES[name] if tokenizer.token_to_id(t) is not None]
            ids[name] = found[0] if found else None
        missing = [SPECIAL_TOKENS[n] for n in ("pad", "cls", "sep", "mask") if ids[n] is None]
        if missing:
            raise ValueError(f"tokenizer{' ' + self.path if self.path else ''} lacks the special tokens {missing} "
                             "(train one with tools/train_tokenizer.py)")
        self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.unk_id = (ids[n] for n in SPECIAL_NAMES)

    @classmethod
    def from_file(cls, path: str) -> "BPETokenizer":
        tokenizers = require_tokenizers()
        full = os.path.expanduser(str(path))
        if not os.path.isfile(full):
            raise FileNotFoundError(f"tokenizer file {path} does not exist (tools/train_tokenizer.py writes one; "
                                    "tools/fill_mask.py rebuilds a checkpoint's own copy)")
        try:
            return cls(tokenizers.Tokenizer.from_file(full), full)
        except Exception as err:
            raise ValueError(f"{path}: not a `tokenizers` JSON ({err})") from err

    @classmethod
    def from_state(cls, state: dict) -> "BPETokenizer":
        tokenizers = require_tokenizers()
        return cls(tokenizers.Tokenizer.from_str(state["tokenizer"]), state.get("path"))

    def encode(self, text):
        return self.from_encoding(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_batch(self, texts):
        return [self.from_encoding(e) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    @staticmethod
    def from_encoding(encoding):
        """-> (ids [T] int64, word_starts [T] bool): a word starts where the pre-token index changes."""
        ids = np.asarray(encoding.ids, dtype=np.int64)
        words = np.asarray([-1 if w is None else w for w in encoding.word_ids], dtype=np.int64)
        starts = np.ones(len(ids), dtype=bool)
        starts[1:] = words[1:] != words[:-1]
        return ids, starts

    def decode(self, ids):
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_text(self, token_id):
        token_id = int(token_id)
        if token_id in self.special_ids:
            return self.tokenizer.id_to_token(token_id)
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def state(self):
        return {"kind": self.kind, "vocab_size": self.vocab_size, "path": self.path,
                "tokenizer": self.tokenizer.to_str()}

    def load_state(self, state):
        if state.get("kind") != self.kind:
            raise ValueError(f"the checkpoint's tokenizer is {state.get('kind')!r}, this one is 'bpe'")
        tokenizers = require_tokenizers()
        self.set_tokenizer(tokenizers.Tokenizer.from_str(state["tokenizer"]))
        self.path = state.get("path") or self.path

    def save(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        self.tokenizer.save(path)
        self.path = os.path.abspath(path)


def train_bpe(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> BPETokenizer:
    """Byte-level BPE on an iterable of documents -> BPETokenizer with the specials first."""
    tokenizers = require_tokenizers()
    from tokenizers import decoders, models, pre_tokenizers, trainers

    specials = [SPECIAL_TOKENS[n] for n in SPECIAL_NAMES]
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size={vocab_size}: a byte-level BPE needs at least {256 + len(specials)} "
                         "(256 bytes + the special tokens)")
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tokenizer)
