"""A sharded checkpoint's `.metadata` is read as data before torch DCP reads it.

torch.distributed.checkpoint's FileSystemReader reads `.metadata` with a plain `pickle.load`,
so a crafted sharded checkpoint (a folder someone sends) could run code the moment it is
resumed or evaluated. DCP writes only its own metadata dataclasses, torch sizes, dtypes and
layouts, and paths there; this unpickler builds exactly those and refuses any other global, so
a file that passes it is safe for DCP's own load.
"""
from __future__ import annotations

import importlib
import os
import pickle

import torch

from unimask.safe_load import UnsafeFileError

CLASS_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem",
                 "torch.distributed.checkpoint.planner")
NAMED = {("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
         ("collections", "OrderedDict")}


class _DataOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if module in CLASS_MODULES:
            obj = getattr(importlib.import_module(module), name, None)  # torch: DCP's classes
            if isinstance(obj, type):  # DCP's dataclasses and enums
                return obj
        elif module == "torch":
            obj = getattr(torch, name, None)  # torch: dtypes, layouts
            if obj is torch.Size or isinstance(obj, (torch.dtype, torch.layout, torch.memory_format)):
                return obj
        elif (module, name) in NAMED:
            return getattr(importlib.import_module(module), name)  # torch: the NAMED few
        raise pickle.UnpicklingError(f"global {module}.{name} is not part of DCP's metadata")


def check_dcp_metadata(folder: str):
    """Raise UnsafeFileError naming `folder`/.metadata unless it holds DCP metadata only."""
    path = os.path.join(folder, ".metadata")
    try:
        with open(path, "rb") as f:
            _DataOnly(f).load()
    except pickle.UnpicklingError as err:
        raise UnsafeFileError(f"{path} holds Python objects beyond DCP's metadata ({err}); reading it would run a "
                              "full unpickle, which can run code, so it is refused. If you trust this checkpoint, "
                              "allow it with --trust-pickle") from err
