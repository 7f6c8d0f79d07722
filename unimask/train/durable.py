"""Durable writes: a file or folder either appears whole or not at all, and survives a crash.

torch.save into a temp file, fsync, os.replace, fsync the folder: a kill at any moment leaves the
old file or the new one, never half of one. The checks read a file back without unpickling it.
"""
from __future__ import annotations

import os
import shutil
import zipfile

import torch


def fsync_dir(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj, path: str):
    """torch.save(obj, path), atomically and durably."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(folder)


def is_intact(path: str) -> bool:
    """Does a torch.save file read back whole? Its zip directory opens and every member's CRC
    matches: catches truncation and flipped bits without unpickling (about a second per GB)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError):
        return False


def remove(path: str):
    """A file or a folder, if it is there."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
