"""Import every module that defines gin configurables, so a saved gin config (a checkpoint's)
can be parsed: all of the core's modules, then the adapters' (which register themselves on
import). Found by walking the packages, as modalities/__init__.py does for adapters: there is
no list to keep in step, and this module depends on none of what it registers (so the model
can offer from_checkpoint without an import cycle)."""
from __future__ import annotations

import importlib
import pkgutil


def register_all():
    import unimask

    for module in pkgutil.walk_packages(unimask.__path__, "unimask."):
        importlib.import_module(module.name)
    try:  # the adapters live beside the core, in the modalities package
        importlib.import_module("modalities")
    except ModuleNotFoundError as err:
        if err.name != "modalities":
            raise  # an adapter's own missing dependency is an error worth seeing
