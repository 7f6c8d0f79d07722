"""Sharded checkpoints for FSDP runs, through torch.distributed.checkpoint (DCP).

Every rank writes its own shards of the model, optimizer and EMA weights; nothing is gathered
on rank 0. The checkpoint keeps the run directory's names: `checkpoints/last.pt` is then a
folder (DCP's `.metadata` and `*.distcp` files, plus `meta.pt` with everything that is not a
tensor: step, RNG, data position, gin config). DCP re-shards on load, so a run saved by N
processes resumes with M, and tools that read `last.pt` (eval, export, visualize) get the full
state dict back in one process. meta.pt also records each DCP file's size and crc32
(`shard_files`), so a truncated or damaged shard is caught before the checkpoint counts as intact.

    write_sharded(tensors, meta, path, is_main)     collective: every rank calls it
    load_sharded_into(tensors, path)                 collective: fills this run's (sharded) tensors
    load_full(path)                                  one process: the whole checkpoint as a dict
"""
from __future__ import annotations

import contextlib
import os
import zlib


from unimask.train.distributed import all_or_none
from unimask.train.durable import atomic_save, fsync_dir, is_intact, remove

META = "meta.pt"
TENSOR_KEYS = ("model", "optimizer", "ema")


def is_sharded(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, ".metadata"))


class ShardedCheckpointError(RuntimeError):
    """A sharded checkpoint that DCP could not read (DCP's own CheckpointException is a
    BaseException, which `except Exception` fallbacks such as find_latest's would not catch)."""


def dcp_files(path: str) -> list:
    """The files DCP wrote into the folder: `.metadata` and the `*.distcp` shards."""
    return sorted(name for name in os.listdir(path) if name == ".metadata" or name.endswith(".distcp"))


def file_checksum(path: str, chunk: int = 1 << 24) -> int:
    """zlib.crc32 of a file, streamed (the check zip uses for meta.pt; about a second per GB)."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def shard_manifest(path: str) -> dict:
    """{file name: [size, crc32]} for every DCP file of the folder, recorded in meta.pt."""
    return {name: [os.path.getsize(os.path.join(path, name)), file_checksum(os.path.join(path, name))]
            for name in dcp_files(path)}


def is_intact_sharded(path: str, checksums: bool = True) -> bool:
    """DCP's metadata and our meta.pt are written last: both present and readable = complete; and
    every DCP file has the size (cheap, catches truncation) and, with checksums, the crc32 that
    meta.pt recorded at save time. A checkpoint from before the record (or a meta.pt this version
    refuses to unpickle: its zip CRC is fine, so it is not damaged) is judged by the first rule."""
    if not (is_sharded(path) and is_intact(os.path.join(path, META))):
        return False
    try:
        recorded = load_meta(path).get("shard_files")
    except Exception:
        recorded = None
    if not recorded:
        return True
    if set(recorded) != set(dcp_files(path)):
        return False
    files = {name: os.path.join(path, name) for name in recorded}
    if any(os.path.getsize(files[name]) != size for name, (size, _) in recorded.items()):
        return False
    return not checksums or all(file_checksum(files[name]) == crc for name, (_, crc) in recorded.items())


def write_sharded(tensors: dict, meta: dict, path: str, is_main: bool):
    """Write `tensors` (model / optimizer / EMA state dicts, DTensor shards allowed) with DCP and
    `meta` beside them into the folder `path`. Every rank calls this (a collective), and every
    rank raises when any rank failed (all_or_none), so none is left waiting in a barrier.

    Rank 0 records each DCP file's size and crc32 in meta.pt once dcp.save has returned (DCP's
    coordinator writes `.metadata` only after every rank's shards are written)."""
    import torch.distributed.checkpoint as dcp

    with all_or_none(f"preparing the sharded checkpoint {path}"):
        if is_main:
            remove(path)
    with all_or_none(f"writing the sharded checkpoint {path}"):
        dcp.save(tensors, checkpoint_id=path)
        if is_main:
            atomic_save({**meta, "shard_files": shard_manifest(path)}, os.path.join(path, META))
            fsync_dir(path)


def load_meta(path: str) -> dict:
    from unimask.safe_load import torch_load

    return torch_load(os.path.join(path, META), opt_in="--trust-pickle")


def data_only(planner_class, path: str, trust_pickle: bool = False):
    """A DCP load planner of `planner_class` that reads the checkpoint's bytes items (optimizer
    settings and other non-tensor values) as data. DCP's own planner torch.load()s each of them
    with weights_only=False, so a crafted shard could run code: here each one must first pass the
    weights-only reader (unimask/safe_load.py) before DCP reads the same bytes."""
    from unimask.safe_load import torch_load

    class DataOnly(planner_class):
        def load_bytes(self, read_item, value):
            if not trust_pickle:
                torch_load(value, opt_in="--trust-pickle", name=f"{path} (item {read_item.dest_index.fqn})")
                value.seek(0)
            super().load_bytes(read_item, value)

    return DataOnly()


def load_sharded_into(tensors: dict, path: str):
    """Fill this run's state dicts in place from a sharded checkpoint saved at any world size."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    with readable(path):
        dcp.load(tensors, checkpoint_id=path, planner=data_only(DefaultLoadPlanner, path))


@contextlib.contextmanager
def readable(path: str):
    """DCP's read errors (CheckpointException, a BaseException) -> ShardedCheckpointError naming
    `path`, which the fallback to prev.pt catches; an interrupt or exit still passes through."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # noqa: B036 - CheckpointException
        from torch.distributed.checkpoint.api import CheckpointException

        from unimask.safe_load import UnsafeFileError

        failures = err.failures.values() if isinstance(err, CheckpointException) else ()
        for failure, _ in failures:  # a refused bytes item (data_only) is the news, not a damaged file
            if isinstance(failure, UnsafeFileError):
                raise failure from None
        raise ShardedCheckpointError(f"sharded checkpoint {path} could not be read "
                                     f"({type(err).__name__}: {err})") from err


def load_full(path: str, trust_pickle: bool = False) -> dict:
    """One process, no process group: meta + the full (unsharded) model / optimizer / EMA (what
    torch's dcp_to_torch_save reads, through the data-only planner)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    tensors = {}
    with readable(path):
        _load_state_dict(tensors, storage_reader=FileSystemReader(path), no_dist=True,
                         planner=data_only(_EmptyStateDictLoadPlanner, path, trust_pickle))
    state = load_meta(path)
    state.update(tensors)
    return state
