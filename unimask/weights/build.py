"""The one way from a file to a model, used by every tool and by `MaskedModel.from_checkpoint`.

A unimask checkpoint carries its gin config and rebuilds itself (the caller's files and
bindings on top); any other layout (timm, MAE, VideoMAE, Hugging Face) needs gin files that
describe the model to load it into, since a state dict says nothing about masking or the data."""
from __future__ import annotations

import os

import gin
import torch

from unimask.weights.layouts import canonical, unwrap
from unimask.weights.load import WeightsError, load_pretrained, read_file


def read_any(path: str, trust_pickle: bool = False):
    """A unimask checkpoint (a file, or a sharded folder) through the checkpoint reader, anything
    else (.safetensors, a Hugging Face folder) through the weights reader; both read data only."""
    from unimask.train import sharded
    from unimask.train.checkpoint import load_checkpoint

    if path.endswith(".safetensors") or (os.path.isdir(path) and not sharded.is_intact_sharded(path)):
        return read_file(path, trust_pickle)
    return load_checkpoint(path, trust_pickle=trust_pickle)


def is_unimask_checkpoint(contents) -> bool:
    return isinstance(contents, dict) and isinstance(contents.get("config"), str) and "model" in contents


def model_from_checkpoint(path: str, gin_files=(), gin_params=(), load_weights: bool = True,
                          trust_pickle: bool = False, strict: bool = True, verbose: bool = False) -> tuple:
    """-> (model, the file's contents): the model of `path`'s stored config (+ gin files and
    bindings), or of the gin files alone for a foreign layout, with the file's weights loaded
    (none with load_weights=False: a random-init baseline of the same shape). The file is read
    weights-only unless trust_pickle (--trust-pickle), and its config may bind only the
    project's configurables (unimask/safe_config.py)."""
    from unimask.cli import parse_gin
    from unimask.train.checkpoint import load_model_state

    contents = read_any(path, trust_pickle)
    own = is_unimask_checkpoint(contents)
    if not own and not gin_files:
        layout = canonical(unwrap(contents))[0] if isinstance(contents, dict) else type(contents).__name__
        raise WeightsError(f"{path} is a {layout} state dict without a gin config: pass gin files that describe "
                           "the model to load it into (or use it as train.init_from in a recipe)")
    parse_gin(gin_files, gin_params, config_str=contents["config"] if own else None, config_source=path)
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"train.model of {path} is not a model ({type(model).__name__})")
    if load_weights and own:
        load_model_state(model, contents["model"], strict=strict)
    elif load_weights:
        load_pretrained(model, path, strict=strict, verbose=verbose, contents=contents)  # read once
    return model, contents
