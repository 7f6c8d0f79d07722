"""Files from outside are data, never code: every torch file is read by torch's weights-only
unpickler, and a file that needs a full unpickle is refused with an error that names it and the
opt-in that would read it anyway.

A full unpickle runs whatever the file says (`os.system` included), so a downloaded `.pth`, a
colleague's checkpoint or a dataset's `.pt` must never get one by default. The weights-only
unpickler builds tensors, containers, numbers and strings, plus the few classes allowed here:

- `argparse.Namespace`: MAE's and VideoMAE's published checkpoints pickle their command-line
  arguments beside the weights (`checkpoint['args']`);
- numpy's array and dtype reconstructors: checkpoints written by unimask before v3 stored
  numpy's RNG state as an array (v3 stores it as a tensor).

None of them calls anything but a constructor of plain data.
"""
from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from collections.abc import Mapping

import numpy as np
import torch


class UnsafeFileError(ValueError):
    """A file that only a full unpickle (which can run code) could read."""


def allowed_globals() -> list:
    """The classes a weights-only load may build besides torch's own (see the module docstring)."""
    classes = [argparse.Namespace, np.ndarray, np.dtype]
    try:
        classes.append(np._core.multiarray._reconstruct)  # numpy >= 2
    except AttributeError:
        classes.append(np.core.multiarray._reconstruct)
    classes.append(np.dtype(np.uint32).__class__)  # numpy.dtypes.UInt32DType: the MT19937 key
    return classes


def torch_load(path, opt_in: str, trust_pickle: bool = False, map_location="cpu", name: str = None):
    """torch.load(path) as data: weights_only=True with the allowed globals. A file that needs
    more raises UnsafeFileError naming `path` and `opt_in` (the binding or flag that allows a full
    unpickle); with trust_pickle=True (the user said they trust this file) it gets one.
    `path` may also be a file object (named in errors by `name`)."""
    name = name or (path if isinstance(path, (str, os.PathLike)) else "a buffer")
    if isinstance(path, (str, os.PathLike)):
        check_expansion(path)
    if trust_pickle:
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeFileError(
            f"{name} holds Python objects that only a full unpickle can read, and a full unpickle can run "
            f"code, so it is refused ({first_line(err)}). If you trust this file, allow it with {opt_in}") from err
    check_views(obj, name)
    return obj


def check_views(obj, name) -> None:
    """Refuse a tensor that claims more elements than its storage holds (a stride-0 expand of a
    few bytes into gigabytes): torch.save writes views as they are, and the first copy of such a
    tensor (a dtype cast, a concatenation) allocates its full extent. Real checkpoints hold
    tensors whose extent fits their storage."""
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            extent = item.numel() * item.element_size()
            if extent > item.untyped_storage().nbytes() and item.numel() > 0:
                raise UnsafeFileError(f"{name} holds a tensor of shape {tuple(item.shape)} ({extent / 2**30:.2f} GiB) "
                                      f"over a storage of {item.untyped_storage().nbytes()} bytes (a broadcast view: "
                                      "a memory bomb, not a saved checkpoint); refused")
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif not isinstance(item, (str, bytes, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)):
            stack.extend(vars(item).values() if "__dict__" in dir(item) else ())  # Namespace, PyG Data


def check_expansion(path, slack: int = 64 * 2**20):
    """torch.save stores its zip members uncompressed, so a torch file unpacks to about its own size;
    one whose members declare far more (deflated zeros) is a decompression bomb: refused before
    torch.load allocates it. Files that are not zip archives (legacy torch format) pass through."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return
    on_disk = os.path.getsize(path)
    if declared > 2 * on_disk + slack:
        raise UnsafeFileError(f"{path} declares {declared / 2**30:.1f} GiB of contents in a {on_disk / 2**20:.1f} MiB "
                              "file (compressed members: a decompression bomb, not a torch.save file); refused")


def first_line(err: Exception) -> str:
    """torch's weights-only error is a page long; its first sentence names what was refused."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "nsupported" in line or "WeightsUnpickler" in line]
    text = (named or lines or [type(err).__name__])[0]
    return text.replace("WeightsUnpickler error: ", "")[:300]
