"""Modality adapters: each module (or package) here turns one kind of raw batch into Tokens.

Importing this package imports every module and sub-package in it, which registers their
adapters and datasets with gin: a new modality is one file here plus one gin recipe, with no
list to edit. A module whose optional dependency is missing fails loudly, naming it.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
