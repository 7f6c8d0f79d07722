"""Shared by the tools: register every configurable, parse gin, rebuild models from checkpoints."""
from __future__ import annotations

import os
import sys

import gin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def register_all():
    """Import every module that defines gin configurables (the core and all adapters)."""
    from unimask.configurables import register_all as register

    register()


def parse_gin(files=(), params=(), config_str: str = None):
    """Checkpoint config first (if any), then files, then bindings; unknown names raise."""
    register_all()
    gin.clear_config()
    gin.add_config_file_search_path(ROOT)
    if config_str:
        gin.parse_config(config_str)
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"gin file {path} does not exist")
    gin.parse_config_files_and_bindings(list(files), list(params))


def seed_for_init():
    """Seed torch from train.seed before gin builds the model, so initial weights are reproducible."""
    import torch

    try:
        seed = gin.query_parameter("train.seed")
    except ValueError:
        seed = 0
    torch.manual_seed(seed)


def model_from_checkpoint(path: str, files=(), params=(), load_weights: bool = True):
    """Rebuild the model (MaskedModel, MultiModalModel, VQTokenizer...) from the checkpoint's own
    gin config (+ overrides) and load weights."""
    import torch

    from unimask.train.checkpoint import load_checkpoint, load_model_state

    state = load_checkpoint(path)
    parse_gin(files, params, config_str=state["config"])
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"train.model in {path} is not a model ({type(model).__name__})")
    if load_weights:
        load_model_state(model, state["model"])
    return model, state


def write_json(path: str, result: dict) -> None:
    """The tools' --json: the result dict, in a folder made on the way."""
    import json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


def exit_code(run, argv, errors) -> int:
    """run(argv) -> 0, or 2 after printing one of the expected `errors` as 'error: ...' (a user's
    mistake gets its message, not a traceback)."""
    try:
        run(argv)
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
