"""Sharded checkpoints for FSDP runs, through torch.distributed.checkpoint (DCP).

Every rank writes its own shards of the model, optimizer and EMA weights; nothing is gathered
on rank 0. The checkpoint keeps the run directory's names: `checkpoints/last.pt` is then a
folder (DCP's `.metadata` and `*.distcp` files, plus `meta.pt` with everything that is not a
tensor: step, RNG, data position, gin config). DCP re-shards on load, so a run saved by N
processes resumes with M, and tools that read `last.pt` (eval, export, visualize) get the full
state dict back in one process.

    write_sharded(tensors, meta, path, is_main)     collective: every rank calls it
    load_sharded_into(tensors, path)                 collective: fills this run's (sharded) tensors
    load_full(path)                                  one process: the whole checkpoint as a dict
"""
from __future__ import annotations

import io
import os

import torch
import torch.distributed as dist

from unimask.train.durable import atomic_save, fsync_dir, is_intact, remove

META = "meta.pt"
TENSOR_KEYS = ("model", "optimizer", "ema")


def is_sharded(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, ".metadata"))


def is_intact_sharded(path: str) -> bool:
    """DCP's metadata and our meta.pt are written last: both present and readable = complete."""
    return is_sharded(path) and is_intact(os.path.join(path, META))


def write_sharded(tensors: dict, meta: dict, path: str, is_main: bool):
    """Write `tensors` (model / optimizer / EMA state dicts, DTensor shards allowed) with DCP and
    `meta` beside them into the folder `path`. Every rank calls this (a collective)."""
    import torch.distributed.checkpoint as dcp

    if is_main:
        remove(path)
    if dist.is_initialized():
        dist.barrier()
    dcp.save(tensors, checkpoint_id=path)
    if is_main:
        atomic_save(meta, os.path.join(path, META))
        fsync_dir(path)
    if dist.is_initialized():
        dist.barrier()


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
