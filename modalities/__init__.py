"""Modality adapters: each file turns one kind of raw batch into unimask Tokens.

Importing this package registers every adapter and dataset with gin.
"""
import importlib

ADAPTER_MODULES = ["image", "video"]

for _name in ADAPTER_MODULES:
    importlib.import_module(f"modalities.{_name}")
