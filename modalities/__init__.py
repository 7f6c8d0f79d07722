"""Modality adapters: each file turns one kind of raw batch into unimask Tokens.

Importing this package registers every adapter and dataset with gin. A new modality is
one file here (plus its name below) and one gin recipe.
"""
import importlib
import os

ADAPTER_MODULES = ["image", "video", "points", "graph"]

_here = os.path.dirname(os.path.abspath(__file__))
for _name in ADAPTER_MODULES:
    if os.path.exists(os.path.join(_here, f"{_name}.py")):
        importlib.import_module(f"modalities.{_name}")
