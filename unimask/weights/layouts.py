"""Published checkpoint layouts, translated to one set of names (timm's ViT plus MAE's decoder).

The canonical names, which unimask/weights/load.py maps onto a model:

    patch_embed.proj.weight  [D, C, *patch]  the patch embedding as a convolution
    patch_embed.proj.bias    [D]
    cls_token                [1, 1, D]       (optional)
    pos_embed                [1, P + N, D]   (optional; P = 1 when it has a [CLS] row)
    blocks.<i>.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.{weight, bias}
    norm.{weight, bias}                      the encoder's final norm
    fc_norm, head                            a classifier (fine-tuned checkpoints)
    decoder_embed, mask_token, decoder_pos_embed, decoder_blocks.<i>.*, decoder_norm, decoder_pred

Layouts read here (detected from the keys, never from the file name):

    unimask   this project's checkpoints (adapter.*, encoder.*, decoder.*): used as they are
    timm      timm's VisionTransformer state dict (what tools/export.py writes): canonical already
    mae       facebookresearch/mae models_mae.py (pretraining) or models_vit.py (fine-tuned):
              canonical already, under a 'model' key
    videomae  MCG-NJU/VideoMAE: encoder.* / encoder_to_decoder / decoder.blocks, and q_bias /
              v_bias instead of a qkv bias
    hf        Hugging Face ViTMAE* / VideoMAE* (embeddings.*, encoder.layer.<i>.attention.*,
              with or without the vit. / videomae. prefix of the *For* models)

A key bias is never stored by VideoMAE / HF (`q_bias`, `v_bias` only): it is zero here, which is
exact, since a bias on the keys adds the same amount to every score of a query and softmax
ignores it.
"""
from __future__ import annotations

import re
from typing import Dict, Tuple

import torch

HF_BLOCK = {  # Hugging Face's names inside encoder.layer.<i> / decoder.decoder_layers.<i> (hub files)
    "layernorm_before": "norm1", "attention.output.dense": "attn.proj", "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
}
HF5_BLOCK = {"attention.o_proj": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}  # transformers 5 ViTMAE
HF_ATTENTION = r"(?:attention\.attention\.(query|key|value|q_bias|v_bias)|attention\.(q_proj|k_proj|v_proj))"


def unwrap(obj) -> dict:
    """A loaded file -> its state dict: the 'model' / 'module' / 'state_dict' entry of a training
    checkpoint, or the dict itself; `module.` and `_orig_mod.` stripped from every key."""
    state = obj
    for key in ("model", "module", "state_dict", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError("not a state dict: expected tensors by name (or a checkpoint with a 'model' entry)")
    return clean_state_dict(state)


STRIP_PREFIXES = ("module.", "_orig_mod.")


def clean_state_dict(state: dict) -> dict:
    """Strip DDP's `module.` and torch.compile's `_orig_mod.` wherever they appear in a key."""
    out = {}
    for key, value in state.items():
        for prefix in STRIP_PREFIXES:
            key = key.replace(prefix, "")
        out[key] = value
    return out


def detect(state: dict) -> str:
    keys = set(state)
    if any(k.startswith(("adapter.", "encoder.blocks.0.norm1")) for k in keys) and not any(
            k.startswith("encoder.patch_embed") for k in keys):
        return "unimask"
    if any(".attention.attention.query.weight" in k for k in keys):
        return "hf"
    if any(k.startswith("encoder.patch_embed.") for k in keys) or any(k.endswith("attn.q_bias") for k in keys):
        return "videomae"
    if "patch_embed.proj.weight" in keys and any(k.startswith("blocks.") for k in keys):
        return "mae" if any(k.startswith(("decoder_", "mask_token")) for k in keys) else "timm"
    raise ValueError(f"unknown checkpoint layout (first keys: {sorted(keys)[:6]}): expected a unimask, timm, "
                     "MAE, VideoMAE or Hugging Face ViTMAE/VideoMAE state dict")


def canonical(state: dict) -> Tuple[str, Dict[str, torch.Tensor]]:
    """state (unwrapped) -> (layout, state in the canonical names; unimask checkpoints unchanged)."""
    layout = detect(state)
    if layout in ("unimask", "timm", "mae"):
        return layout, dict(state)
    if layout == "videomae":
        return layout, fuse_qkv_bias(from_videomae(state))
    return layout, fuse_qkv_bias(from_hf(state))


def from_videomae(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        if key.startswith("encoder."):
            key = key[len("encoder."):]  # encoder.blocks.0... -> blocks.0...
        elif key.startswith("decoder.blocks."):
            key = "decoder_blocks." + key[len("decoder.blocks."):]
        elif key.startswith("decoder.norm."):
            key = "decoder_norm." + key[len("decoder.norm."):]
        elif key.startswith("decoder.head."):
            key = "decoder_pred." + key[len("decoder.head."):]
        elif key.startswith("encoder_to_decoder."):
            key = "decoder_embed." + key[len("encoder_to_decoder."):]
        out[key] = value
    return out


def from_hf(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        key = re.sub(r"^(vit|videomae)\.", "", key)
        block = re.match(r"^(encoder\.layer|layers|decoder\.decoder_layers)\.(\d+)\.(.*)$", key)
        if block:
            where, index, rest = block.groups()
            prefix = "decoder_blocks" if where.startswith("decoder") else "blocks"
            attn = re.match(HF_ATTENTION + r"(?:\.(weight|bias))?$", rest)
            if attn:
                old, new, kind = attn.groups()
                part = old or {"q_proj": "query", "k_proj": "key", "v_proj": "value"}[new]
                key = f"{prefix}.{index}.attn.{part}" + (f".{kind}" if kind else "")
            else:
                name, _, kind = rest.rpartition(".")
                parts = {**HF_BLOCK, **HF5_BLOCK}
                if name not in parts:
                    raise ValueError(f"Hugging Face key {key!r}: unknown block part {name!r}")
                key = f"{prefix}.{index}.{parts[name]}.{kind}"
        else:
            key = {"embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
                   "embeddings.mask_token": "mask_token", "decoder.mask_token": "mask_token",
                   "decoder.decoder_pos_embed": "decoder_pos_embed"}.get(key, key)
            key = re.sub(r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj.", key)
            key = re.sub(r"^(layernorm|encoder\.layernorm)\.", "norm.", key)
            key = re.sub(r"^fc_norm\.", "fc_norm.", key)
            key = re.sub(r"^classifier\.", "head.", key)
            key = re.sub(r"^(decoder\.decoder_embed|encoder_to_decoder)\.", "decoder_embed.", key)
            key = re.sub(r"^decoder\.decoder_norm\.", "decoder_norm.", key)
            key = re.sub(r"^decoder\.norm\.", "decoder_norm.", key)
            key = re.sub(r"^decoder\.(decoder_pred|head)\.", "decoder_pred.", key)
        out[key] = value
    return join_qkv(out)


def join_qkv(state: dict) -> dict:
    """HF's separate query / key / value projections -> timm's one qkv (weights [3D, D], biases [3D])."""
    out = {k: v for k, v in state.items() if not re.search(r"\.attn\.(query|key|value)\.", k)}
    for key in state:
        found = re.match(r"^(.*\.attn)\.query\.(weight|bias)$", key)
        if found:
            stem, kind = found.groups()
            parts = [state.get(f"{stem}.{name}.{kind}") for name in ("query", "key", "value")]
            if kind == "bias" and parts[1] is None:
                parts[1] = torch.zeros_like(parts[0])
            if any(p is None for p in parts):
                raise ValueError(f"{stem}: query/key/value {kind} incomplete in the checkpoint")
            out[f"{stem}.qkv.{kind}"] = torch.cat(parts, 0)
    return out


def fuse_qkv_bias(state: dict) -> dict:
    """VideoMAE's q_bias / v_bias (no key bias) -> one qkv bias [q, 0, v]."""
    out = {k: v for k, v in state.items() if not re.search(r"\.attn\.(q_bias|v_bias)$", k)}
    for key, value in state.items():
        if key.endswith(".attn.q_bias"):
            stem = key[: -len(".q_bias")]
            v_bias = state.get(stem + ".v_bias", torch.zeros_like(value))
            out[stem + ".qkv.bias"] = torch.cat([value, torch.zeros_like(value), v_bias], 0)
    return out
