"""Weights out: the encoder in timm's names, in Hugging Face's ViTMAE / VideoMAE names, or as a
bare module that torch.export / torch.jit can trace (tools/export.py is the command).

canonical_encoder is the inverse of load.to_model_names: the adapter's linear patch projection
as a convolution, its position codes as a table (with a zero [CLS] row when the encoder has a
[CLS] token, whose own position is folded into the token), the blocks and the final norm.
"""
from __future__ import annotations

import re
from typing import Dict

import torch
from torch import nn

from unimask.weights.layouts import HF_BLOCK


def canonical_encoder(model) -> Dict[str, torch.Tensor]:
    """-> timm-named state of the model's adapter + encoder (needs a grid adapter and a ViT)."""
    adapter, encoder = model.adapter, model.encoder
    needs = (f"export needs a patch (grid) adapter and a ViT encoder, got {type(adapter).__name__} / "
             f"{type(encoder).__name__}")
    if not encoder.vit_layout:
        raise ValueError(needs)
    try:
        weight, bias = adapter.conv_from_linear()
    except NotImplementedError as err:  # the ModalityAdapter default: no patch embedding
        raise ValueError(needs) from err
    coords = adapter.grid_positions()
    if coords is None:
        raise ValueError(f"{type(adapter).__name__} takes inputs of any size: export needs a fixed one")
    pos = adapter.pos(coords, encoder.dim).detach()[None]  # [1, N, D]
    state = {"patch_embed.proj.weight": weight, "patch_embed.proj.bias": bias}
    cls_token = encoder.learned_cls_token()
    if cls_token is not None:
        state["cls_token"] = cls_token.detach().clone()
        pos = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], 1)
    state["pos_embed"] = pos
    for key, value in encoder.state_dict().items():
        if key != "cls_token":
            state[key] = value.detach().clone()
    return state


def to_hf(state: Dict[str, torch.Tensor], tubelets: bool) -> Dict[str, torch.Tensor]:
    """Canonical encoder state -> Hugging Face ViTMAEModel (2-D patches) or VideoMAEModel (3-D
    tubelets, tubelets=True) names.
    VideoMAE has no key bias and no stored position table (its 1-D sinusoid is computed)."""
    to_hf_block = {ours: theirs for theirs, ours in HF_BLOCK.items()}
    out = {"embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
           "layernorm.weight": state["norm.weight"], "layernorm.bias": state["norm.bias"]}
    if not tubelets:
        dim = state["pos_embed"].shape[-1]
        if "cls_token" in state:
            out["embeddings.cls_token"], out["embeddings.position_embeddings"] = state["cls_token"], state["pos_embed"]
        else:  # ViTMAE always has a [CLS] token: an inert zero one (it still joins attention there)
            out["embeddings.cls_token"] = torch.zeros(1, 1, dim)
            out["embeddings.position_embeddings"] = torch.cat([torch.zeros(1, 1, dim), state["pos_embed"]], 1)
    for key, value in state.items():
        found = re.match(r"^blocks\.(\d+)\.(.*)\.(weight|bias)$", key)
        if not found:
            continue
        index, part, kind = found.groups()
        stem = f"encoder.layer.{index}"
        if part == "attn.qkv":
            query, key_, value_ = value.chunk(3, 0)
            if kind == "weight":
                for name, piece in (("query", query), ("key", key_), ("value", value_)):
                    out[f"{stem}.attention.attention.{name}.weight"] = piece
            elif tubelets:  # VideoMAE: q_bias and v_bias only (the key bias changes no attention weight)
                out[f"{stem}.attention.attention.q_bias"], out[f"{stem}.attention.attention.v_bias"] = query, value_
            else:
                for name, piece in (("query", query), ("key", key_), ("value", value_)):
                    out[f"{stem}.attention.attention.{name}.bias"] = piece
        else:
            out[f"{stem}.{to_hf_block[part]}.{kind}"] = value
    return {k: v.contiguous() for k, v in out.items()}


def hf_config(model, tubelets: bool):
    """The transformers config that matches the encoder (ViTMAEConfig / VideoMAEConfig)."""
    import transformers

    adapter, encoder = model.adapter, model.encoder
    size = [g * p for g, p in zip(adapter.token_grid, adapter.patch)]  # the input size, per grid axis
    block = encoder.blocks[0]
    common = dict(hidden_size=encoder.dim, num_hidden_layers=len(encoder.blocks),
                  num_attention_heads=block.attn.num_heads, intermediate_size=block.mlp.fc1.out_features,
                  hidden_act="gelu", qkv_bias=block.attn.qkv.bias is not None, layer_norm_eps=encoder.norm.eps,
                  image_size=size[-1], patch_size=adapter.patch[-1], num_channels=adapter.in_chans)
    if tubelets:
        return transformers.VideoMAEConfig(num_frames=size[0], tubelet_size=adapter.patch[0],
                                           use_mean_pooling=False, **common)
    return transformers.ViTMAEConfig(mask_ratio=0.0, **common)


def save_hf(model, folder: str) -> str:
    """Write a folder (config.json + model.safetensors, in the hub's names, which transformers 4
    reads as they are and 5 converts on load) and check that from_pretrained takes it strictly."""
    import os

    import transformers
    from safetensors.torch import save_file

    tubelets = len(model.adapter.patch) == 3
    config = hf_config(model, tubelets)
    os.makedirs(folder, exist_ok=True)
    config.save_pretrained(folder)
    save_file(to_hf(canonical_encoder(model), tubelets), os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    cls = transformers.VideoMAEModel if tubelets else transformers.ViTMAEModel
    _, info = cls.from_pretrained(folder, output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"]:
        raise ValueError(f"{cls.__name__} does not take the export in {folder}: missing {sorted(info['missing_keys'])[:6]}, "
                         f"unexpected {sorted(info['unexpected_keys'])[:6]}")
    return cls.__name__


class BareEncoder(nn.Module):
    """input [B, C, *S] -> every token's feature [B, N, D]: the adapter's patchify, projection and
    position codes and the encoder, with no masking, Tokens or gin (for torch.export / jit /
    ONNX). coords [N, d]: the token positions of the one input size it takes, for an adapter
    without a fixed token grid (default: the adapter's grid)."""

    def __init__(self, adapter, encoder, coords: torch.Tensor = None):
        super().__init__()
        from unimask.patches import patchify

        self.patchify, self.patch = patchify, adapter.patch
        self.proj, self.encoder = adapter.proj, encoder
        coords = adapter.grid_positions() if coords is None else coords
        self.register_buffer("pos", adapter.pos(coords, encoder.dim).detach().clone()[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(self.patchify(x, self.patch)) + self.pos  # [B, N, D]
        return self.encoder(tokens)
