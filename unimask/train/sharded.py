"""Sharded checkpoints for FSDP runs, through torch.distributed.checkpoint (DCP).

Every rank writes its own shards of the model, optimizer and EMA weights; nothing is gathered
on rank 0. The checkpoint keeps the run directory's names: `checkpoints/last.pt` is then a
folder (DCP's `.metadata` and `*.distcp` files, plus `meta.pt` with everything that is not a
tensor: step, RNG, data position, gin config). DCP re-shards on load, so a run saved by N
processes resumes with M, and tools that read `last.pt` (eval, export, visualize) get the full
state dict back in one process.

    save_sharded(tensors, meta, folder, step, ...)   collective: every rank calls it
    load_sharded_into(tensors, path)                 collective: fills this run's (sharded) tensors
    load_full(path)                                  one process: the whole checkpoint as a dict
"""
from __future__ import annotations

import io
import os
import shutil

import torch
import torch.distributed as dist

META = "meta.pt"
TENSOR_KEYS = ("model", "optimizer", "ema")


def is_sharded(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, ".metadata"))


def is_intact_sharded(path: str) -> bool:
    """DCP's metadata and our meta.pt are written last: both present and readable = complete."""
    from unimask.train.checkpoint import is_intact

    return is_sharded(path) and is_intact(os.path.join(path, META))


def fsync_dir(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: str):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def save_sharded(tensors: dict, meta: dict, folder: str, step: int, keep: bool, last_is_good: bool,
                 is_main: bool) -> str:
    """Write `tensors` (model / optimizer / EMA state dicts, DTensor shards allowed) with DCP and
    `meta` beside them into folder/last.pt/, keeping the previous good one as prev.pt. Every rank
    calls this; rank 0 renames. A kill mid-write leaves last.pt.tmp, never a half last.pt."""
    import torch.distributed.checkpoint as dcp

    from unimask.train.checkpoint import atomic_save, rotate

    last, tmp = os.path.join(folder, "last.pt"), os.path.join(folder, f"last.pt.tmp.{step}")
    if is_main:
        os.makedirs(folder, exist_ok=True)
        remove(tmp)
    if dist.is_initialized():
        dist.barrier()
    dcp.save(tensors, checkpoint_id=tmp)
    if is_main:
        atomic_save(meta, os.path.join(tmp, META))
        fsync_dir(tmp)
        rotate(folder, last_is_good)
        os.replace(tmp, last)
        fsync_dir(folder)
        if keep:
            snapshot = os.path.join(folder, f"step_{step}.pt")
            remove(snapshot)
            shutil.copytree(last, snapshot)
    if dist.is_initialized():
        dist.barrier()
    return last


def load_meta(path: str) -> dict:
    return torch.load(os.path.join(path, META), map_location="cpu", weights_only=False)


def load_sharded_into(tensors: dict, path: str):
    """Fill this run's state dicts in place from a sharded checkpoint saved at any world size."""
    import torch.distributed.checkpoint as dcp

    dcp.load(tensors, checkpoint_id=path)


def load_full(path: str) -> dict:
    """One process, no process group: meta + the full (unsharded) model / optimizer / EMA."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    buffer = io.BytesIO()
    dcp_to_torch_save(path, buffer)
    buffer.seek(0)
    state = load_meta(path)
    state.update(torch.load(buffer, map_location="cpu", weights_only=False))
    return state
