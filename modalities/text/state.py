"""A tokenizer's JSON state as a uint8 tensor: the form an adapter's `get_extra_state` returns.

A tensor, not a string, because everything that walks a state dict expects tensors: the
trainer's EMA of weights clones and copies every entry, distributed checkpoints shard them.
"""
from __future__ import annotations

import json
from typing import Optional

import torch

MAGIC = "unimask-text-tokenizer"


def encode_state(state: dict) -> torch.Tensor:
    """dict -> [bytes] uint8 tensor holding its JSON."""
    data = json.dumps({"format": MAGIC, **state}, sort_keys=True).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def decode_state(value) -> Optional[dict]:
    """A state dict entry -> the tokenizer state, or None when it is not one."""
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.dim() != 1:
        return None
    try:
        state = json.loads(value.cpu().numpy().tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(state, dict) or state.pop("format", None) != MAGIC:
        return None
    return state
