"""What every command in tools/ shares: gin parsing (a stored config read as data), the seed
before gin builds a model, the --trust-pickle flag, the errors a bad file gives, --json output.

The tools are argument parsing plus calls into the library; this module is the library side of
their edge. Gin names are registered here, at that edge: `register_all` imports the core and
every adapter package installed for unimask (entry-point group `unimask.modalities`), so the
core itself never names an adapter."""
from __future__ import annotations

import json
import os
import sys
from typing import Optional

import gin

# The checkout's root when unimask runs from a source tree (pip install -e .): recipes include
# one another as 'gin/<name>.gin', found from any working directory.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_gin(files=(), params=(), config_str: str = None, config_source: str = "the checkpoint"):
    """Checkpoint config first (if any), then files, then bindings; unknown names raise. The
    checkpoint's config is data (unimask/safe_config.py): only bindings of the project's
    configurables; the user's own files and bindings keep all of gin."""
    from unimask.configurables import register_all
    from unimask.safe_config import check_stored_config, reset_safety_bindings

    register_all()
    gin.clear_config()
    if os.path.isdir(os.path.join(REPO_ROOT, "gin")):
        gin.add_config_file_search_path(REPO_ROOT)
    if config_str:
        check_stored_config(config_str, config_source)
        gin.parse_config(config_str)
        for key in reset_safety_bindings(config_str):
            print(f"note: {config_source} sets {key}; a stored config may not open a file to a full unpickle or "
                  f"move a size limit, so it is back at its default (pass --gin_param yourself to set it)",
                  file=sys.stderr)
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


def add_trust_pickle(parser):
    """--trust-pickle: the opt-in that lets a tool fully unpickle a checkpoint the weights-only
    reader refuses (a full unpickle can run code: only for files you trust)."""
    parser.add_argument("--trust-pickle", action="store_true",
                        help="fully unpickle a checkpoint the safe, weights-only reader refuses (it can run code: "
                             "only for files you trust)")


def load_errors() -> tuple:
    """The errors a bad or unsafe file gives: a tool prints them as 'error: ...' and exits 2."""
    from unimask.safe_config import UnsafeConfigError
    from unimask.safe_load import UnsafeFileError
    from unimask.train.checkpoint import CheckpointError
    from unimask.weights.load import WeightsError

    return (CheckpointError, UnsafeConfigError, UnsafeFileError, WeightsError, FileNotFoundError)


def write_json(path: Optional[str], result: dict) -> None:
    """The tools' --json: the result dict, in a folder made on the way; nothing without a path."""
    if path is None:
        return
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


def tool_main(run):
    """The main(argv) of a tool whose run(argv) raises the user's mistakes as ValueError or TypeError
    (or a bad file's errors): 0, or 2 after the message (exit_code)."""
    def main(argv=None) -> int:
        return exit_code(run, argv, (ValueError, TypeError, *load_errors()))

    return main
