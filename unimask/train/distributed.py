"""torchrun support: process group from the environment (gloo on CPU, nccl on GPU)."""
from __future__ import annotations

import os
from dataclasses import dataclass

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


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; no-op for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        if restart == 0:
            dist.init_process_group(backend)
        else:  # see restart_store
            dist.init_process_group(backend, store=restart_store(rank, world, restart), rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank)


def restart_store(rank: int, world: int, restart: int):
    """The rendezvous store of a restarted worker group, under a prefix of its own.

    torchrun --max-restarts keeps its store across restarts, and the peer addresses the previous
    group published there are still in it: a new worker can read a dead peer's address before the
    new peer overwrites it, and gloo then fails with "connection refused". A prefix per restart
    leaves only this group's keys in view."""
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "False") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_store and rank == 0, use_libuv=True)
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
