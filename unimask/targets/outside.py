"""Frozen teachers from the files users already keep: any timm model (ViTs, CLIP towers, CNNs)
and Hugging Face vision folders (CLIP, DINOv2). MaskDistill, MaskAlign, MR-MAE and DMAE learn
from such a teacher's features; the teacher needs no unimask checkpoint of its own.

What every outside teacher does the same way (OutsideTeacher):
- it reads the adapter's dense_input (the input in its natural units, [B, C, *S]), resizes it to
  its own input size, repeats a single channel to its three and normalizes with its own mean/std;
- its feature map [B, D, h, w] (a ViT's token grid, a CNN stage) is interpolated to the student's
  token grid, so patch 14 vs 16 or a stride-32 stage line up with the student's tokens;
- it runs frozen, in eval mode, under no_grad (bf16 autocast on CUDA);
- it is kept out of the student's state dict and optimizer: the network is held outside the
  module tree; only the sha256 of its weights file is a buffer, so a checkpoint records which
  teacher taught it, and loading one made with another file is an error naming both digests.
  Checkpoints do not grow with the teacher.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Optional, Sequence

import gin
import torch
import torch.nn.functional as F
from torch import nn

from unimask.interfaces import Target


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, or of every file of a folder in name order (a Hugging Face folder)."""
    digest = hashlib.sha256()
    paths = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    for name in paths:
        digest.update(os.path.relpath(name, path).encode() if name != path else b"")
        with open(name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def digest_tensor(hex_digest: str) -> torch.Tensor:
    """A 64-digit hex digest -> uint8 [32], storable as a buffer."""
    return torch.tensor(list(bytes.fromhex(hex_digest)), dtype=torch.uint8)


def digest_hex(digest: torch.Tensor) -> str:
    """digest_tensor's inverse: uint8 [32] -> 64 hex digits."""
    return bytes(digest.tolist()).hex()


def to_grid(features: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """A teacher's feature map [B, D, h, w] -> the student's token grid, row-major: [B, N, D]."""
    if tuple(features.shape[2:]) != tuple(grid):
        features = F.interpolate(features.float(), size=tuple(grid), mode="bilinear", align_corners=False)
    return features.flatten(2).transpose(1, 2)


class OutsideTeacher(Target):
    """Base of the teachers built from files outside unimask. A subclass builds the network and
    gives its feature maps (feature_maps); this class feeds it and lines its output up with the
    student's tokens. normalize: a layer norm of each feature map (MaskDistill's target);
    img_size, mean, std: the teacher's input (square side) and normalization."""

    def __init__(self, network: nn.Module, hex_digest: str, source: str, img_size: int, mean: Sequence[float],
                 std: Sequence[float], normalize: bool = True):
        super().__init__()
        object.__setattr__(self, "network", network.requires_grad_(False).eval())  # not a submodule
        self.source, self.img_size, self.normalize = source, int(img_size), normalize
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.register_buffer("teacher_sha256", digest_tensor(hex_digest))  # the one record of which file taught
        with torch.no_grad():  # the width, from one small pass
            probe = torch.rand(1, len(mean), self.img_size, self.img_size)
            self.latent_dim = sum(m.shape[1] for m in self.feature_maps(self.normalized(probe)))

    def feature_maps(self, x: torch.Tensor) -> list:
        """Normalized input [B, 3, H, W] -> the chosen layers' maps, each [B, D_i, h, w]."""
        raise NotImplementedError

    def dim(self, adapter) -> int:
        return self.latent_dim

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] in [0, 1] -> the teacher's input: its size, channels and normalization."""
        channels = self.mean.shape[0]
        if x.shape[1] == 1 and channels != 1:
            x = x.expand(-1, channels, -1, -1)
        if x.shape[1] != channels:
            raise ValueError(f"{type(self).__name__}({self.source}) reads {channels} channels, the input has {x.shape[1]}")
        if tuple(x.shape[2:]) != (self.img_size, self.img_size):
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bicubic", align_corners=False)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    @torch.no_grad()
    def forward(self, tokens, adapter):
        """-> (the teacher's features at every token [B, N, D] float, None)."""
        x = adapter.dense_input(tokens).float()  # [B, C, H, W] in [0, 1]
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} reads 2-D inputs [B, C, H, W]; {type(adapter).__name__} "
                             f"gives {list(x.shape)}")
        self.network.to(x.device)  # a no-op once there: the network is not moved with the model
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if x.is_cuda else torch.autocast("cpu", enabled=False)
        with autocast:
            maps = self.feature_maps(self.normalized(x))
        parts = [to_grid(m.float(), tokens.grid) for m in maps]  # each [B, N, D_i]
        if self.normalize:
            parts = [F.layer_norm(p, p.shape[-1:]) for p in parts]
        return torch.cat(parts, -1), None

    def train(self, mode: bool = True):
        """The teacher stays in eval mode (no dropout, frozen BatchNorm statistics)."""
        super().train(mode)
        self.network.eval()
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Resume and init refuse a checkpoint that another teacher file taught."""
        stored = state_dict.get(prefix + "teacher_sha256")
        if stored is not None and not torch.equal(stored.cpu(), self.teacher_sha256.cpu()):
            raise ValueError(f"this checkpoint was taught by a teacher with sha256 {digest_hex(stored)}, "
                             f"but {type(self).__name__} now reads {self.source} "
                             f"(sha256 {digest_hex(self.teacher_sha256)}): "
                             "resume with the same teacher file")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def invert(self, pred, tokens, adapter):
        raise NotImplementedError(f"{type(self).__name__} predicts teacher features: there is nothing to draw")


def read_weights(path: str) -> dict:
    """A state dict from a torch file (read weights-only) or a .safetensors file."""
    from unimask.weights.layouts import unwrap
    from unimask.weights.load import read_file

    return unwrap(read_file(path))


@gin.configurable
class TimmTeacher(OutsideTeacher):
    """Any timm model as a frozen teacher: `name` (timm's, e.g. 'vit_base_patch16_clip_224',
    'resnet50'), built without downloading (pretrained=False) and loaded from `checkpoint` (a
    state dict or .safetensors file in timm's names; a classifier head in the file is ignored, any
    other missing or unexpected key is an error naming it), or left at a seeded random init
    (checkpoint=None: dBOT's random teacher; init_seed makes it the same network every time).

    layers: which of timm's forward_intermediates outputs to read (blocks of a ViT, stages of a
    CNN; -1 the last), several concatenated along the width (MaskAlign's multi-level targets);
    final_norm: the model's final norm on them (True with layers=(-1,) gives a ViT's
    forward_features without its prefix tokens). img_size / mean / std default to the model's
    pretrained_cfg. model_kwargs go to timm.create_model (img_size, patch_size, in_chans...);
    norm_eps: the LayerNorm epsilon of a ViT's weights where it is not timm's 1e-6 (the encoders
    here use 1e-5: `tools/export.py` prints the kwargs of an exported unimask encoder)."""

    def __init__(self, name: str = gin.REQUIRED, checkpoint: Optional[str] = None, layers: Sequence[int] = (-1,),
                 final_norm: bool = True, normalize: bool = True, img_size: Optional[int] = None,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None, init_seed: int = 0,
                 model_kwargs: Optional[dict] = None, norm_eps: Optional[float] = None):
        import functools

        import timm

        model_kwargs = dict(model_kwargs or {})
        if norm_eps is not None:  # the LayerNorm epsilon the weights were trained with (this project's: 1e-5)
            model_kwargs["norm_layer"] = functools.partial(nn.LayerNorm, eps=norm_eps)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            network = timm.create_model(name, pretrained=False, num_classes=0, **model_kwargs)
        if checkpoint is not None:
            load_timm_weights(network, checkpoint)
            hex_digest, source = file_sha256(checkpoint), checkpoint
        else:
            spec = json.dumps([name, init_seed, sorted(model_kwargs.items()), norm_eps], default=str)
            hex_digest, source = hashlib.sha256(spec.encode()).hexdigest(), f"{name} (random init, seed {init_seed})"
        config = timm.data.resolve_model_data_config(network)
        size = img_size or model_kwargs.get("img_size") or config["input_size"][-1]
        channels = model_kwargs.get("in_chans", len(config["mean"]))
        self.layers, self.final_norm = [int(i) for i in layers], final_norm
        super().__init__(network, hex_digest, source, size, mean or per_channel(config["mean"], channels),
                         std or per_channel(config["std"], channels), normalize)

    def feature_maps(self, x: torch.Tensor) -> list:
        return self.network.forward_intermediates(x, indices=self.layers, norm=self.final_norm, output_fmt="NCHW",
                                                  intermediates_only=True)


def per_channel(values: Sequence[float], channels: int) -> tuple:
    """A pretrained_cfg's RGB mean/std for a model built with another channel count (in_chans=1:
    their average, what a grayscale copy of an RGB input would have)."""
    if len(values) == channels:
        return tuple(values)
    return (sum(values) / len(values),) * channels


def load_timm_weights(network: nn.Module, path: str):
    """A timm state dict into network, strictly but for the classifier head (the teacher has none)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"TimmTeacher.checkpoint: {path} does not exist")
    state = read_weights(path)
    result = network.load_state_dict(state, strict=False)
    head = ("head.", "fc.", "classifier.", "head_drop.")
    unexpected = [k for k in result.unexpected_keys if not k.startswith(head)]
    if result.missing_keys or unexpected:
        raise ValueError(f"TimmTeacher.checkpoint {path} does not fit the model: missing {result.missing_keys[:6]}, "
                         f"unexpected {unexpected[:6]}")


@gin.configurable
class HFTeacher(OutsideTeacher):
    """A Hugging Face vision folder as a frozen teacher (CLIP's vision tower, DINOv2, a ViT):
    `folder` holds config.json, model.safetensors and preprocessor_config.json (its size, mean
    and std), read offline. layers: hidden_states indices (-1 the last; with final_norm the last
    layer is last_hidden_state, after the model's final norm); the prefix tokens ([CLS],
    registers) are dropped and the patch tokens laid out on their grid."""

    def __init__(self, folder: str = gin.REQUIRED, layers: Sequence[int] = (-1,), final_norm: bool = True,
                 normalize: bool = True):
        from transformers import AutoConfig, AutoModel, CLIPVisionModel

        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise FileNotFoundError(f"HFTeacher.folder: {folder} holds no config.json")
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        loader = CLIPVisionModel if config.model_type in ("clip", "clip_vision_model") else AutoModel
        network = loader.from_pretrained(folder, local_files_only=True, use_safetensors=True)
        vision = config.vision_config if config.model_type == "clip" else config
        self.patch_size, self.layers, self.final_norm = vision.patch_size, [int(i) for i in layers], final_norm
        pre = preprocessor(folder, vision.image_size)
        super().__init__(network, file_sha256(folder), folder, pre["size"], pre["mean"], pre["std"], normalize)

    def feature_maps(self, x: torch.Tensor) -> list:
        out = self.network(pixel_values=x, output_hidden_states=True)
        side = x.shape[-1] // self.patch_size
        maps = []
        for index in self.layers:
            h = out.last_hidden_state if self.final_norm and index in (-1, len(out.hidden_states) - 1) \
                else out.hidden_states[index]
            h = h[:, -side * side:]  # the patch tokens, after [CLS] and any registers
            maps.append(h.transpose(1, 2).reshape(h.shape[0], h.shape[2], side, side))
        return maps


def preprocessor(folder: str, default_side: int) -> dict:
    """size, mean, std from a folder's preprocessor_config.json (the CLIP defaults without one);
    the keys are Hugging Face's."""
    path = os.path.join(folder, "preprocessor_config.json")
    conf = json.load(open(path)) if os.path.exists(path) else {}
    crop = conf.get("crop_size", default_side)
    side = crop.get("height", default_side) if isinstance(crop, dict) else crop
    return {"size": side or default_side, "mean": conf.get("image_mean", (0.4815, 0.4578, 0.4082)),
            "std": conf.get("image_std", (0.2686, 0.2613, 0.2758))}
