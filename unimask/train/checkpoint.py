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
import torch.distributed as dist

from unimask.train import sharded
from unimask.train.durable import atomic_save, fsync_dir, is_intact, remove
from unimask.weights.layouts import clean_state_dict


class CheckpointError(RuntimeError):
    pass


def publish(new: str, folder: str, last_is_good: bool):
    """Make the complete checkpoint `new` (a temp file or folder) the folder's last.pt, keeping the
    old last.pt as prev.pt when it is known good (`last_is_good`: this process wrote it) or reads
    back intact; a damaged one is dropped, so prev.pt stays the last good checkpoint.

    A file is rotated through a hard link, so last.pt exists at every instant; a sharded folder is
    renamed twice, and a kill between the two renames leaves prev.pt, which find_latest takes."""
    last, prev = os.path.join(folder, "last.pt"), os.path.join(folder, "prev.pt")
    if os.path.exists(last):
        if last_is_good or (sharded.is_intact_sharded(last) if os.path.isdir(last) else is_intact(last)):
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
        if os.path.isdir(last) != os.path.isdir(new):  # another kind (a sharded run resumed by one process)
            remove(last)
    os.replace(new, last)
    fsync_dir(folder)


def save_checkpoint(obj, folder: str, step: int, keep: bool = False, last_is_good: bool = False) -> str:
    """last.pt (the previous one kept as prev.pt, see publish) and, with keep, a step_N.pt snapshot."""
    last = os.path.join(folder, "last.pt")
    tmp = f"{last}.new.{os.getpid()}"
    atomic_save(obj, tmp)
    publish(tmp, folder, last_is_good)
    if keep:
        atomic_save(obj, os.path.join(folder, f"step_{step}.pt"))
    return last


def save_sharded_checkpoint(tensors: dict, meta: dict, folder: str, step: int, keep: bool, last_is_good: bool,
                            is_main: bool) -> str:
    """The sharded counterpart of save_checkpoint (see unimask/train/sharded.py): every rank writes
    its shards into last.pt.tmp.<step>/, then rank 0 rotates and renames it to last.pt. A kill
    mid-write leaves the temp folder, never a half last.pt. Every rank calls this."""
    last, tmp = os.path.join(folder, "last.pt"), os.path.join(folder, f"last.pt.tmp.{step}")
    if is_main:
        os.makedirs(folder, exist_ok=True)
    sharded.write_sharded(tensors, meta, tmp, is_main)
    if is_main:
        publish(tmp, folder, last_is_good)
        if keep:
            snapshot = os.path.join(folder, f"step_{step}.pt")
            remove(snapshot)
            shutil.copytree(last, snapshot)
    if dist.is_initialized():
        dist.barrier()
    return last


def load_checkpoint(path: str, map_location="cpu", meta_only: bool = False) -> dict:
    """torch.load with a clear error for missing, truncated or corrupt files. A sharded checkpoint
    (a folder) comes back whole, or with meta_only=True without its tensors (an FSDP run loads
    those shard by shard itself)."""
    from unimask.train import sharded

    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if os.path.isdir(path):
            if not sharded.is_intact_sharded(path):
                raise CheckpointError(f"{path} is a folder but not a complete sharded checkpoint")
            return sharded.load_meta(path) if meta_only else sharded.load_full(path)
        return torch.load(path, map_location=map_location, weights_only=False)
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
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
