"""Durable writes: a file or folder either appears whole or not at all, and survives a crash.

torch.save into a temp file, fsync, os.replace, fsync the folder: a kill at any moment leaves the
old file or the new one, never half of one. The checks read a file back without unpickling it.
"""
from __future__ import annotations

import errno
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


class SaveError(OSError):
    """A checkpoint could not be written (most often: no space left); the previous one is intact."""


def atomic_save(obj, path: str, shown: str = None):
    """torch.save(obj, path), atomically and durably. A failed write (a full disk, a file size
    limit) removes its temp file and raises SaveError naming the path (or `shown`, the file it
    becomes) and the free space; the file that was at `path` before is untouched."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as err:  # torch's writer says "file write failed", without errno
        remove(tmp)
        raise SaveError(write_failure(shown or path, folder, err)) from err
    os.replace(tmp, path)
    fsync_dir(folder)


def write_failure(path: str, folder: str, err: Exception) -> str:
    """Why a write failed, in the words a user can act on: space, quota or file size limit."""
    free = shutil.disk_usage(folder).free
    space = (f"out of space writing {path} ({free / 2**20:.0f} MiB free on its file system; "
             "a quota or a file size limit gives the same failure)")
    if isinstance(err, OSError) and err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"could not write {path}: {err}"
    kept = "the previous one is kept" if os.path.exists(path) else "there is no earlier one"
    return f"{space}; {kept} ({type(err).__name__}: {str(err).splitlines()[0][:200]})"


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
