#!/usr/bin/env python
"""Export the encoder alone as a timm-compatible ViT state dict.

    python tools/export.py --checkpoint runs/x/checkpoints/last.pt --out encoder.pth

For 2-D patch adapters the file loads strictly into the timm model printed at the end
(`timm.create_model(name, pretrained=False, **kwargs).load_state_dict(torch.load(...))`):
patch embedding as timm's conv, sin-cos positions as `pos_embed`, transformer blocks and
final norm. The printed kwargs reproduce the encoder: no class token (MAE-style pretraining
never trains one, and an untrained token attended to shifts every feature), mean pooling,
final norm before pooling, so `forward_features` equals the encoder's output on all tokens.
Tubelet (3-D) adapters export the same names with a Conv3d `patch_embed.proj.weight`
[D, C, t, p, p] as VideoMAE's ViT uses; timm has no video ViT to load it into, so no timm
line is printed for them.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import model_from_checkpoint  # noqa: E402

from modalities.grid import grid_coords  # noqa: E402

TIMM_NAMES = {(192, 12): "vit_tiny_patch16_224", (384, 12): "vit_small_patch16_224", (768, 12): "vit_base_patch16_224",
              (1024, 24): "vit_large_patch16_224"}


def encoder_state(model) -> tuple:
    """-> (timm-named state dict, timm create_model kwargs, timm name)."""
    adapter, encoder = model.adapter, model.encoder
    if not hasattr(adapter, "proj") or not hasattr(adapter, "patch") or not hasattr(encoder, "blocks"):
        raise ValueError(f"export needs a patch adapter and a ViT encoder, got {type(adapter).__name__} / "
                         f"{type(encoder).__name__}")
    dim, patch, chans = encoder.dim, adapter.patch, adapter.in_chans
    weight = adapter.proj.weight.detach().view(dim, *patch, chans)  # (p q c) order of patchify
    weight = weight.permute(0, len(patch) + 1, *range(1, len(patch) + 1)).contiguous()  # [D, C, *patch]
    state = {"patch_embed.proj.weight": weight, "patch_embed.proj.bias": adapter.proj.bias.detach().clone()}
    size = getattr(adapter, "img_size", None)
    grid = tuple(s // p for s, p in zip(((adapter.num_frames,) if len(patch) == 3 else ()) + (size, size), patch))
    state["pos_embed"] = adapter.pos(grid_coords(grid, 1, weight.device), dim).detach()  # [1, N, D]
    for key, value in encoder.state_dict().items():
        state[key] = value.detach().clone()
    depth, heads = len(encoder.blocks), encoder.blocks[0].attn.num_heads
    kwargs = dict(img_size=size, patch_size=patch[-1], in_chans=chans, embed_dim=dim, depth=depth, num_heads=heads,
                  class_token=False, global_pool="avg", fc_norm=False)
    name = TIMM_NAMES.get((dim, depth), "vit_base_patch16_224")
    return state, kwargs, name


def load_into_timm(state: dict, name: str, kwargs: dict):
    """Build the timm model and load strictly; the classifier head keeps timm's own init."""
    import timm

    model = timm.create_model(name, pretrained=False, **kwargs)
    full = model.state_dict()
    full.update(state)
    model.load_state_dict(full, strict=True)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--gin", action="append", default=[])
    parser.add_argument("--gin_param", action="append", default=[])
    args = parser.parse_args(argv)
    model, _ = model_from_checkpoint(args.checkpoint, args.gin, args.gin_param)
    state, kwargs, name = encoder_state(model)
    if len(model.adapter.patch) == 2:
        timm_model = load_into_timm(state, name, kwargs)
        state = {k: v for k, v in timm_model.state_dict().items()}
    torch.save(state, args.out)
    print(f"wrote {args.out}: {len(state)} tensors")
    if len(model.adapter.patch) == 2:
        print(f"load with: timm.create_model({name!r}, pretrained=False, **{kwargs})"
              f".load_state_dict(torch.load({args.out!r}))")
    else:
        print("a video ViT (Conv3d tubelet embedding, VideoMAE layout); timm has no model to load it into")
    return 0


if __name__ == "__main__":
    sys.exit(main())
