"""A model from a weights file alone (`MaskedModel.from_checkpoint`): a unimask checkpoint
carries its gin config and rebuilds itself; any other layout needs gin files that describe the
model to load it into (a timm or MAE state dict says nothing about masking or the data)."""
from __future__ import annotations

import gin
import torch

from unimask.weights.layouts import canonical, unwrap
from unimask.weights.load import WeightsError, load_pretrained, read_file


def build_from_checkpoint(path: str, gin_files=(), gin_params=(), strict: bool = True, verbose: bool = False,
                          trust_pickle: bool = False):
    """-> the model of `path`'s config (+ files and bindings) with the file's weights loaded. The
    file is read weights-only unless trust_pickle, and its config may bind only the project's
    configurables (unimask/safe_config.py)."""
    from unimask.configurables import register_all
    from unimask.safe_config import check_stored_config, reset_safety_bindings

    register_all()
    obj = read_file(path, trust_pickle)
    config = obj.get("config") if isinstance(obj, dict) else None
    if not config and not gin_files:
        layout = canonical(unwrap(obj))[0]
        raise WeightsError(f"{path} is a {layout} state dict without a gin config: pass gin files that describe "
                           "the model to load it into")
    gin.clear_config()
    if config:
        check_stored_config(config, path)
        gin.parse_config(config)
        reset_safety_bindings(config)  # opt-ins and size limits come from the caller's own bindings only
    gin.parse_config_files_and_bindings(list(gin_files), list(gin_params))
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"train.model of {path} is not a model ({type(model).__name__})")
    load_pretrained(model, path, strict=strict, verbose=verbose, contents=obj)  # read once
    return model
