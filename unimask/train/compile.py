"""train.compile=True: torch.compile every Encoder and Decoder of a model, in place.

Why not `module.compile()` alone: whether a batch pads anything (`key_valid` all True) is a
question about the data, and asked inside the compiled code (transformer.key_padding_mask's
fast path) it splits the trace in two (a dynamo break). Here it is asked once, eagerly, before
the compiled forward: an unpadded batch passes key_valid=None (SDPA without a mask, the flash
kernel on CUDA), a padded one its mask; each is traced whole. Adapters and maskers stay eager.
The modules keep their parameters and names, so checkpoints carry no `_orig_mod.` prefixes.
"""
from __future__ import annotations

import functools

import torch
from torch import nn


def compile_padding_aware(module: nn.Module) -> None:
    """Replace module.forward(x, key_valid, ...) by: key_valid -> None when it pads nothing,
    then the compiled forward."""
    compiled = torch.compile(module.forward)

    @functools.wraps(module.forward)
    def forward(x, key_valid=None, *args, **kwargs):
        if key_valid is not None and bool(key_valid.all()):
            key_valid = None
        return compiled(x, key_valid, *args, **kwargs)

    module.forward = forward


def compile_stacks(model: nn.Module) -> int:
    """Compile every Encoder and Decoder of `model` (teachers' too) -> how many."""
    from unimask.interfaces import Decoder, Encoder

    stacks = [module for module in model.modules() if isinstance(module, (Encoder, Decoder))]
    for module in stacks:
        compile_padding_aware(module)
    return len(stacks)
