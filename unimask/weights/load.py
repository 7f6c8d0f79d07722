"""Start a model from published or earlier weights: `train.init_from=PATH`, `load_pretrained`.

The file is read (torch or safetensors), unwrapped and translated to canonical names
(layouts.py), then mapped onto the model: encoder blocks and norms by name, the patch
convolution through the adapter (`linear_from_conv`), the position table through the adapter
(resampled to its grid), a [CLS] row of the table folded into the encoder's [CLS] token, MAE's
decoder into MAEDecoder. Every key ends in one list of the printed report:

    loaded     copied as it is
    converted  changed in form, not in meaning (conv -> linear patch embedding, qkv fused)
    reshaped   resampled to another grid (position tables)
    checked    a fixed table in the file that equals what the model computes itself
    dropped    in the file, for a part this model does not have on purpose (a classifier loading
               a pretraining checkpoint drops the decoder)
    new        in the model, not in the file, for a part the file cannot have (a fine-tuning head)
    missing / unexpected / mismatched: the rest, an error naming them unless strict=False

A model says which parts are optional through `init_from_fresh` (may be new) and
`init_from_drop` (may be dropped): tuples of key prefixes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List

import torch

from unimask.safe_load import UnsafeFileError, torch_load
from unimask.weights.layouts import canonical, unwrap

# the one-line include that sets each foreign layout's model shape ([CLS] token, positions, LayerNorm
# eps): a file cannot say its epsilon, and a wrong one loads without an error but shifts the features
LAYOUT_INCLUDES = {"timm": "gin/layouts/timm_vit.gin", "mae": "gin/layouts/mae_vit.gin",
                   "videomae": "gin/layouts/videomae_vit.gin"}
LAYOUT_EPS = 1e-6  # timm's, MAE's and VideoMAE's LayerNorm epsilon
DECODER_NAMES = (("decoder_embed.", "decoder.embed."), ("mask_token", "decoder.mask_token"),
                 ("decoder_blocks.", "decoder.body.blocks."), ("decoder_norm.", "decoder.body.norm."),
                 ("decoder_pred.", "decoder.head."))


class WeightsError(ValueError):
    """The file's keys do not fit the model; the message names them."""


@dataclass
class LoadReport:
    path: str
    layout: str
    loaded: List[str] = field(default_factory=list)
    converted: List[str] = field(default_factory=list)
    reshaped: List[str] = field(default_factory=list)
    checked: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    new: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def problems(self) -> List[str]:
        return ([f"missing {k}" for k in self.missing] + [f"unexpected {k}" for k in self.unexpected]
                + [f"mismatched {k}" for k in self.mismatched])

    def summary(self) -> str:
        lines = [f"init_from {self.path} ({self.layout} layout): {len(self.loaded)} loaded"]
        for name, keys in (("converted", self.converted), ("reshaped", self.reshaped), ("checked", self.checked),
                           ("dropped", self.dropped), ("new", self.new), ("missing", self.missing),
                           ("unexpected", self.unexpected), ("mismatched", self.mismatched)):
            if keys:
                lines.append(f"  {name} ({len(keys)}): {short_list(keys)}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def short_list(keys: List[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def read_file(path: str, trust_pickle: bool = False) -> dict:
    """A state dict from a torch file or a .safetensors file (a folder: its model file). Torch
    files are read weights-only (unimask/safe_load.py); a file that needs a full unpickle is
    refused unless trust_pickle (train.init_trust_pickle=True)."""
    if os.path.isdir(path):
        for name in ("model.safetensors", "pytorch_model.bin", "checkpoints/last.pt"):
            if os.path.exists(os.path.join(path, name)):
                return read_file(os.path.join(path, name), trust_pickle)
        raise FileNotFoundError(f"init_from: {path} holds no model.safetensors, pytorch_model.bin or checkpoints/last.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"init_from: {path} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        return torch_load(path, opt_in="train.init_trust_pickle=True (or --trust-pickle in the tools)",
                          trust_pickle=trust_pickle)
    except UnsafeFileError as err:
        raise WeightsError(f"init_from: {err}") from err
    except Exception as err:  # noqa: BLE001  truncated, not a torch file, ...
        raise WeightsError(f"init_from: cannot read {path}: {type(err).__name__}: {err}") from err


def load_pretrained(model: torch.nn.Module, path: str, strict: bool = True, verbose: bool = True,
                    contents=None, trust_pickle: bool = False) -> LoadReport:
    """Load the weights in `path` into `model` (in place) -> the report; WeightsError when a key
    does not fit and strict. Works for unimask, timm, MAE, VideoMAE and Hugging Face files.
    contents: what read_file(path) gave, when the caller has read it already."""
    try:
        state = unwrap(read_file(path, trust_pickle) if contents is None else contents)
        layout, state = canonical(state)
    except ValueError as err:
        raise WeightsError(f"init_from {path}: {err}") from err
    report = LoadReport(path, layout)
    hint = layout_hint(model, layout, report)
    own = model.state_dict()
    mapped = dict(state) if layout == "unimask" else to_model_names(model, state, layout, report, own)
    if "adapter.pos_table" in mapped and "adapter.pos_table" in own and \
            mapped["adapter.pos_table"].shape != own["adapter.pos_table"].shape:
        mapped["adapter.pos_table"] = model.adapter.resample_pos_table(mapped["adapter.pos_table"])
        report.reshaped.append("adapter.pos_table")
    fresh = tuple(model.init_from_fresh)
    if layout == "unimask" and "adapter.pos_table" in own and "adapter.pos_table" not in mapped:
        fresh += ("adapter.pos_table",)  # a learned table starts as the fixed codes the file's model computed
        report.notes.append("adapter.pos_table starts as the sin-cos codes the checkpoint's model used")
    drop = tuple(model.init_from_drop)
    final = {}
    for key, value in mapped.items():
        if key not in own:
            (report.dropped if key.startswith(drop) else report.unexpected).append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(f"{key}: file {list(value.shape)}, model {list(own[key].shape)}")
        else:
            final[key] = value
            if key not in report.converted + report.reshaped:
                report.loaded.append(key)
    for key in own:
        if key not in mapped:
            (report.new if key.startswith(fresh) else report.missing).append(key)
    if strict and report.problems:
        raise WeightsError(f"init_from {path} ({layout} layout) does not fit {type(model).__name__}: "
                           f"{short_list(report.problems, 12)} (train.init_strict=False loads the keys that fit)" + hint)
    model.load_state_dict(final, strict=False)
    if verbose:
        print(report.summary(), flush=True)
    return report


def layout_hint(model, layout: str, report: LoadReport) -> str:
    """-> '; include ...' naming the layout's gin include ('' for layouts without one); notes an
    encoder LayerNorm eps other than the layout's, which would load silently with shifted features."""
    include = LAYOUT_INCLUDES.get(layout)
    if include is None:
        return ""
    hint = (f"; include '{include}' in the recipe: it sets the {layout} layout's [CLS] token, positions and "
            f"LayerNorm eps {LAYOUT_EPS:g}")
    norm = model.encoder.norm if model.encoder.vit_layout else None
    eps = norm.eps if isinstance(norm, torch.nn.LayerNorm) else LAYOUT_EPS  # depth 0: no final norm
    if eps != LAYOUT_EPS:
        report.notes.append(f"the encoder's LayerNorm eps is {eps:g}, {layout} files are trained with {LAYOUT_EPS:g}: "
                            f"the weights load but every feature is slightly off{hint}")
    return hint


def to_model_names(model, state: Dict[str, torch.Tensor], layout: str, report: LoadReport, own: dict) -> dict:
    """Canonical names (timm + MAE decoder) -> this model's names (adapter.*, encoder.*, decoder.*);
    own: the model's state dict."""
    adapter, encoder = model.adapter, model.encoder
    state = dict(state)
    out = {}
    weight, bias = state.pop("patch_embed.proj.weight", None), state.pop("patch_embed.proj.bias", None)
    if weight is not None:
        try:
            converted = adapter.linear_from_conv(weight, bias)
        except NotImplementedError as err:  # the ModalityAdapter default: no patch embedding
            raise WeightsError(f"{type(adapter).__name__} has no patch embedding to load patch_embed.proj into") from err
        except ValueError as err:  # another width, patch or channel count
            converted = {}
            report.mismatched.append(str(err))
        for key, value in converted.items():
            out[f"adapter.{key}"] = value
            report.converted.append(f"adapter.{key}")
    cls_token, pos = state.pop("cls_token", None), state.pop("pos_embed", None)
    prefix = 1 if cls_token is not None and pos is not None else 0
    if cls_token is not None:
        if encoder.learned_cls_token() is None:
            report.unexpected.append("cls_token (this encoder has none: ViTEncoder.class_token=True keeps it)")
        else:
            out["encoder.cls_token"] = cls_token + (pos[:, :1] if prefix else 0)
            report.converted.append("encoder.cls_token")
    if pos is not None:
        place_table(adapter, pos[0, prefix:], "pos_embed", "adapter.pos_table", out, report)
    elif layout in ("videomae", "hf"):  # VideoMAE's table is computed, never stored (ViTMAE's is stored)
        table = adapter.learned_pos_table()
        if table is not None:
            out["adapter.pos_table"] = sinusoid_table(table.shape[0], table.shape[1])
            report.converted.append("adapter.pos_table")
            report.notes.append("positions: VideoMAE's fixed 1-D sinusoid table (not stored in the file)")
        else:
            report.notes.append("the file was trained with VideoMAE's 1-D sinusoid positions, this adapter uses "
                                "fixed sin-cos codes: set <Adapter>.pos_embed='learned' to start from VideoMAE's")
            report.missing.append("pos_embed (VideoMAE's table needs <Adapter>.pos_embed='learned')")
    decoder_pos = state.pop("decoder_pos_embed", None)
    if decoder_pos is not None and any(key.startswith("decoder.") for key in own):
        positions = adapter.grid_positions()
        rows = decoder_pos[0, decoder_pos.shape[1] - (len(positions) if positions is not None else 0):]
        if close_to_own_codes(adapter, rows, decoder_pos.shape[-1]):
            report.checked.append("decoder_pos_embed")
        else:
            report.notes.append("decoder_pos_embed differs from the decoder's sin-cos codes (axis order?): the "
                                "decoder uses its own")
            report.mismatched.append("decoder_pos_embed (the decoder computes its positions; see the note)")
    elif decoder_pos is not None:
        report.dropped.append("decoder_pos_embed")  # a model without a decoder (fine-tuning)
    for key, value in state.items():
        out[model_name(key)] = value
    return out


def model_name(key: str) -> str:
    for theirs, ours in DECODER_NAMES:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    if key.startswith(("blocks.", "norm.")):
        return "encoder." + key
    return key  # fc_norm.*, head.*: a classifier's own names


def place_table(adapter, rows: torch.Tensor, source: str, key: str, out: dict, report: LoadReport):
    """A position table from the file [N', D] -> the adapter's learned table (resampled), or a
    check that it equals the adapter's fixed codes."""
    if adapter.learned_pos_table() is not None:
        out[key] = rows.detach().clone()
        report.converted.append(key)
        return
    if close_to_own_codes(adapter, rows, rows.shape[-1]):
        report.checked.append(source)
        return
    hint = ""
    if adapter.pos_axes is not None and close_to_own_codes(adapter, rows, rows.shape[-1], flip=True):
        hint = f" (it is the same sin-cos with the axes swapped, as MAE writes it: set {type(adapter).__name__}" \
               ".pos_axes='xy')"
    report.notes.append(f"{source}: the file's position table is not this adapter's fixed sin-cos codes{hint}; "
                        f"{type(adapter).__name__}.pos_embed='learned' loads it as a learned table")
    report.mismatched.append(f"{source} (fixed positions differ; see the note)")


def close_to_own_codes(adapter, rows: torch.Tensor, dim: int, flip: bool = False) -> bool:
    """Whether rows [N, dim] equal the adapter's own fixed position codes on its token grid (flip:
    with the other axis order)."""
    coords = adapter.grid_positions()  # [N, d]
    if coords is None or coords.shape[0] != rows.shape[0]:
        return False
    own = adapter.sincos(coords.flip(-1) if flip else coords, dim).float()
    return bool(torch.allclose(own, rows.float(), atol=1e-4))


def sinusoid_table(n: int, dim: int) -> torch.Tensor:
    """VideoMAE's get_sinusoid_encoding_table: [n, dim], position / 10000^(2(j//2)/dim), sin on even j, cos on odd."""
    position = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None]
    angle = position / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()
