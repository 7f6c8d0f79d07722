"""Which tokenizer a recipe or a checkpoint means: `text_tokenizer` (the gin entry point: bytes,
or a `tokenizers` JSON) and the copies of tokenizers stored in checkpoints, so a run's
tokenizer can be rebuilt when its file is gone. Here rather than in tokenizer.py because it
chooses between the byte tokenizer (tokenizer.py) and BPE (bpe.py), which builds on it."""
from __future__ import annotations

import os
from typing import Dict, Optional

import gin

from modalities.text.bpe import BPETokenizer
from modalities.text.state import decode_state
from modalities.text.tokenizer import ByteTokenizer, TextTokenizer

CHECKPOINT_TOKENIZERS: Dict[str, dict] = {}  # tokenizer file path -> its state, read from a checkpoint


def remember_checkpoint_tokenizers(model_state: dict) -> int:
    """Note the tokenizer states stored in a checkpoint's model state dict (the adapters'
    `_extra_state`), so `text_tokenizer(path)` rebuilds them when `path` is gone. -> how many."""
    found = 0
    for key, value in model_state.items():
        if key.endswith("_extra_state"):
            state = decode_state(value)
            if state is not None and state.get("path"):
                CHECKPOINT_TOKENIZERS[os.path.abspath(state["path"])] = state
                found += 1
    return found


def tokenizer_from_state(state: dict) -> TextTokenizer:
    if state.get("kind") == "byte":
        return ByteTokenizer()
    if state.get("kind") == "bpe":
        return BPETokenizer.from_state(state)
    raise ValueError(f"unknown tokenizer state of kind {state.get('kind')!r}")


@gin.configurable
def text_tokenizer(path: Optional[str] = None) -> TextTokenizer:
    """None: the byte tokenizer. A path: a `tokenizers` JSON (tools/train_tokenizer.py writes one
    into the run directory; a downloaded tokenizer.json with [PAD]/[CLS]/[SEP]/[MASK] works too).
    A file that is gone is rebuilt from a checkpoint that remember_checkpoint_tokenizers read."""
    if path is None:
        return ByteTokenizer()
    key = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.isfile(key) and key in CHECKPOINT_TOKENIZERS:
        return tokenizer_from_state(CHECKPOINT_TOKENIZERS[key])
    return BPETokenizer.from_file(path)
