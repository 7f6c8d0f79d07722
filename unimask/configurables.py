"""Import every module that defines gin configurables, so a saved gin config (a checkpoint's)
can be parsed: all of the core's modules, then every adapter package installed for unimask.

The core never names its adapters (layers point down: `unimask/` imports neither `modalities`
nor `tools`). Adapter packages announce themselves through the `unimask.modalities` entry-point
group (this repository's `modalities` package does so in pyproject.toml; an adapter package
written elsewhere adds one line to its own), and the CLIs in tools/ also import `modalities`
directly, so a source checkout that was never pip-installed works too. Walking the packages
means there is no list to keep in step."""
from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata

ENTRY_POINT_GROUP = "unimask.modalities"


def register_all(extra_modules=()):
    """Import the core, every installed adapter package (entry points) and `extra_modules`."""
    import unimask

    for module in pkgutil.walk_packages(unimask.__path__, "unimask."):
        importlib.import_module(module.name)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry.load()  # an adapter's own missing dependency is an error worth seeing
    for name in extra_modules:
        importlib.import_module(name)
