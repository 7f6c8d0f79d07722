"""Atomic checkpoints: write a temp file, fsync, os.replace; keep the previous one as prev.pt.

A kill at any moment leaves either the old or the new last.pt whole, never half of one, and a
file damaged on disk is detected on load with an error that names the fallback. FSDP runs
write sharded checkpoints (a last.pt folder, unimask/train/sharded.py); everything here reads
both kinds.
"""
from __future__ import annotations

import os
import random
import shutil
import warnings

import numpy as np
import torch

from unimask.safe_load import UnsafeFileError, torch_load
from unimask.train import sharded
from unimask.train.dcp_metadata import check_dcp_metadata
from unimask.train.durable import atomic_save, fsync_dir, is_intact, remove
from unimask.weights.layouts import clean_state_dict


class CheckpointError(RuntimeError):
    pass


def publish(new: str, folder: str, last_is_good: bool):
    """Make the complete checkpoint `new` (a temp file or folder) the folder's last.pt, keeping the
    old last.pt as prev.pt when it is known good (`last_is_good`: this process wrote it) or reads
    back intact; a damaged one is dropped, so prev.pt stays the last good checkpoint. A sharded
    last.pt is always verified against its recorded shard sizes (a stat per file), and its
    checksums too unless this process wrote it: prev.pt is only ever replaced by a checkpoint that
    verifies.

    A file is rotated through a hard link, so last.pt exists at every instant; a sharded folder is
    renamed twice, and a kill between the two renames leaves prev.pt, which find_latest takes."""
    last, prev = os.path.join(folder, "last.pt"), os.path.join(folder, "prev.pt")
    if os.path.exists(last):
        if (sharded.is_intact_sharded(last, checksums=not last_is_good) if os.path.isdir(last)
                else last_is_good or is_intact(last)):
            if os.path.isdir(last) or os.path.isdir(prev) or os.path.isdir(new):
                remove(prev)
                os.replace(last, prev)
            else:
                link = f"{prev}.tmp.{os.getpid()}"
                remove(link)
                os.link(last, link)
                os.replace(link, prev)
        else:
            warnings.warn(f"{last} is damaged: not kept as prev.pt (prev.pt stays the last good checkpoint)")
        # a folder cannot be replaced by a rename (a damaged sharded last.pt that was not rotated), nor
        # one kind by the other (a sharded run resumed by one process)
        if os.path.exists(last) and (os.path.isdir(last) or os.path.isdir(new)):
            remove(last)
    os.replace(new, last)
    fsync_dir(folder)


def save_checkpoint(obj, folder: str, step: int, keep: bool = False, last_is_good: bool = False) -> str:
    """last.pt (the previous one kept as prev.pt, see publish) and, with keep, a step_N.pt snapshot."""
    last = os.path.join(folder, "last.pt")
    tmp = f"{last}.new.{os.getpid()}"
    atomic_save(obj, tmp, shown=last)
    publish(tmp, folder, last_is_good)
    if keep:
        atomic_save(obj, os.path.join(folder, f"step_{step}.pt"))
    return last


def save_sharded_checkpoint(tensors: dict, meta: dict, folder: str, step: int, keep: bool, last_is_good: bool,
                            is_main: bool) -> str:
    """The sharded counterpart of save_checkpoint (see unimask/train/sharded.py): every rank writes
    its shards into last.pt.tmp.<step>/, then rank 0 rotates and renames it to last.pt. A kill
    mid-write leaves the temp folder, never a half last.pt. Every rank calls this, and every rank
    raises when a step failed on any rank (distributed.all_or_none): rank 0's publish failing must
    not leave the others waiting in a barrier. The step_N.pt snapshot is copied under a temp name
    and renamed, so a kill mid-copy never leaves a partial snapshot under the final name."""
    from unimask.train.distributed import all_or_none

    last, tmp = os.path.join(folder, "last.pt"), os.path.join(folder, f"last.pt.tmp.{step}")
    with all_or_none(f"creating the checkpoint folder {folder}"):
        if is_main:
            os.makedirs(folder, exist_ok=True)
    sharded.write_sharded(tensors, meta, tmp, is_main)
    with all_or_none(f"publishing the checkpoint {last}"):
        if is_main:
            publish(tmp, folder, last_is_good)
            if keep:
                snapshot = os.path.join(folder, f"step_{step}.pt")
                partial = f"{snapshot}.tmp.{os.getpid()}"
                remove(partial)
                shutil.copytree(last, partial)
                remove(snapshot)
                os.replace(partial, snapshot)
                fsync_dir(folder)
    return last


def load_checkpoint(path: str, map_location="cpu", meta_only: bool = False, trust_pickle: bool = False) -> dict:
    """torch.load, weights-only (unimask/safe_load.py), with a clear error for missing, truncated,
    corrupt or unsafe files. A sharded checkpoint (a folder) comes back whole, or with
    meta_only=True without its tensors (an FSDP run loads those shard by shard itself).
    trust_pickle=True (the tools' --trust-pickle) fully unpickles a file the safe reader refuses."""
    from unimask.train import sharded

    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if os.path.isdir(path):
            if not sharded.is_intact_sharded(path):
                raise CheckpointError(f"{path} is a folder but not a complete sharded checkpoint")
            if not trust_pickle:
                check_dcp_metadata(path)  # DCP itself unpickles it fully
            return sharded.load_meta(path) if meta_only else sharded.load_full(path, trust_pickle)
        return torch_load(path, opt_in="--trust-pickle", trust_pickle=trust_pickle, map_location=map_location)
    except UnsafeFileError as err:
        raise CheckpointError(str(err)) from err
    except Exception as err:
        prev = os.path.join(os.path.dirname(path), "prev.pt")
        hint = f"; the previous checkpoint {prev} may still load" if os.path.exists(prev) and path != prev else ""
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(err).__name__}: {err}){hint}") from err


def load_latest(folder: str) -> dict:
    """last.pt, or prev.pt with a warning when last.pt is damaged."""
    return find_latest(folder)[0]


def find_latest(folder: str, meta_only: bool = False) -> tuple:
    """-> (state, path): last.pt, or prev.pt with a warning when last.pt is damaged."""
    last = os.path.join(folder, "last.pt")
    try:
        return load_checkpoint(last, meta_only=meta_only), last
    except CheckpointError as err:
        prev = os.path.join(folder, "prev.pt")
        if not os.path.exists(prev):
            raise
        warnings.warn(f"{err}; resuming from {prev}")
        return load_checkpoint(prev, meta_only=meta_only), prev


def load_model_state(model: torch.nn.Module, state: dict, strict: bool = True):
    """Load with prefixes stripped; name missing/unexpected keys clearly."""
    result = model.load_state_dict(clean_state_dict(state), strict=False)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise CheckpointError(f"checkpoint does not match the model: missing keys {result.missing_keys[:10]}"
                              f"{'...' if len(result.missing_keys) > 10 else ''}, unexpected keys "
                              f"{result.unexpected_keys[:10]}{'...' if len(result.unexpected_keys) > 10 else ''}")
    return result


def is_id_keyed(optimizer_state: dict) -> bool:
    """torch's optimizer.state_dict() keys parameters by position; DCP's get_state_dict by name."""
    groups = optimizer_state.get("param_groups", [])
    return bool(groups) and all(isinstance(p, int) for g in groups for p in g.get("params", []))


def rng_state() -> dict:
    """Every generator's state as tensors, numbers and strings, so the checkpoint reads back with
    torch.load(weights_only=True): numpy's MT19937 key array becomes an int64 tensor."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    """The inverse of rng_state; also reads checkpoints of older versions (numpy's key as an array)."""
    random.setstate(state["python"])
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(key.numpy() if torch.is_tensor(key) else key, dtype=np.uint32), pos,
                         has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
