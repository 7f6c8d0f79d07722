"""torchrun support: process group from the environment (gloo on CPU, nccl on GPU).

Fault rules: every collective has an explicit timeout (`train.collective_timeout_s`), so a lost
or stuck rank ends the job instead of hanging it for torch's default 10-30 minutes; a decision
that changes which collectives come next (stop, skip, a failed save) is agreed by all ranks
through a collective, never taken by one rank alone.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device, timeout_s: float = 300) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; no-op for one process. timeout_s
    bounds every collective (and the restart store's waits)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        restart, timeout = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")), timedelta(seconds=timeout_s)
        if restart == 0:
            dist.init_process_group(backend, timeout=timeout)
        else:  # see restart_store
            dist.init_process_group(backend, store=restart_store(rank, world, restart, timeout), rank=rank,
                                    world_size=world, timeout=timeout)
    return DistInfo(rank, world, local_rank)


def restart_store(rank: int, world: int, restart: int, timeout: timedelta = timedelta(seconds=300)):
    """The rendezvous store of a restarted worker group, under a prefix of its own.

    torchrun --max-restarts keeps its store across restarts, and the peer addresses the previous
    group published there are still in it: a new worker can read a dead peer's address before the
    new peer overwrites it, and gloo then fails with "connection refused". A prefix per restart
    leaves only this group's keys in view."""
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "False") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_store and rank == 0, timeout=timeout, use_libuv=True)
    return dist.PrefixStore(f"unimask/restart_{restart}", store)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= info.world
    return value


def barrier(info: DistInfo):
    if info.world > 1:
        dist.barrier()


def _flag_device() -> torch.device:
    """Where a collective's tensor must live: the current GPU under NCCL, the CPU under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def any_rank(flags: list, info: DistInfo, device: torch.device) -> list:
    """flags[i] is True on some rank -> True on every rank: one MAX all-reduce of a small tensor.
    The per-step agreement (skip a non-finite step, stop for a signal) rides on this, so that every
    rank takes the same branch and meets the others in the same collectives."""
    if info.world <= 1:
        return [bool(f) for f in flags]
    values = torch.tensor([float(bool(f)) for f in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def failed_ranks(failed: bool) -> list:
    """The ranks on which `failed` is True, known to every rank (one all-reduce; no-op for one
    process, where it is [0] or [])."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [0] if failed else []
    flags = torch.zeros(dist.get_world_size(), device=_flag_device())
    flags[dist.get_rank()] = float(failed)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return [rank for rank, flag in enumerate(flags.tolist()) if flag]


class RankFailedError(RuntimeError):
    """Another rank failed a step that every rank must finish (a save): this one stops too."""


@contextlib.contextmanager
def all_or_none(what: str):
    """Run the block on every rank (it may do work on rank 0 only), then agree whether it
    succeeded everywhere: a rank whose block raised re-raises its own error, the others raise
    RankFailedError naming the failed ranks. Without this, a save that fails on rank 0 leaves the
    other ranks waiting in the next collective until the timeout. Every rank must enter it; it
    also acts as a barrier. One process: the block's own error, unchanged."""
    error = None
    try:
        yield
    except BaseException as err:  # noqa: B036 - DCP's CheckpointException is a BaseException
        error = err
    try:
        ranks = failed_ranks(error is not None)
    except Exception:  # the process group itself broke (a lost peer): the block's error is the news
        if error is None:
            raise
        ranks = []
    if error is not None:
        raise error
    if ranks:
        raise RankFailedError(f"{what} failed on rank(s) {ranks} (their log has the error); stopping this rank too")
