"""Probe rows that may not fit in memory: streamed to memory-mapped files, resumable, sharded.

Why: a linear or kNN probe on a large labeled set (ImageNet's 1.28M rows x 768 floats = 3.9 GB)
should neither hold every feature in RAM nor start over when an extraction hours long is killed.
Rows are kept in memory up to a budget; past it they go to three flat files per split and rank
(`<prefix>.x.f32` [rows, D] float32, `<prefix>.y.i64` [rows], `<prefix>.key.i64` [rows]) plus a
small JSON sidecar `<prefix>.json` saying how many rows and loader batches are complete. The
sidecar is rewritten (atomically) only after the rows it counts are flushed, so after a crash the
files may hold a partial batch past the count, which resuming cuts off; the batches counted are
then skipped without being loaded. A sidecar whose `meta` (what was extracted, from which weights)
differs from the current one is not resumed: the extraction starts over.

Row keys put rows from any rank or run back in one-process order: key = item * ITEM_STRIDE +
token position (0 for a pooled row), item being the dataset index. Each rank extracts the items
rank, rank + world, ... (a DistributedSampler split without padding, so no duplicates).
"""
from __future__ import annotations

import json
import os
from typing import Callable, Optional, Sequence

import numpy as np
import torch

ITEM_STRIDE = 1 << 20  # token positions per item in a row key
PARTS = (("x", np.float32), ("y", np.int64), ("key", np.int64))


def shard_items(items: Sequence[int], rank: int, world: int) -> list:
    """This rank's items: every world-th from position rank (no padding, no duplicates)."""
    return list(items)[rank::world]


class FeatureStore:
    """One split's rows on disk for one rank: append, count in the sidecar, read back memory-mapped."""

    def __init__(self, prefix: str, meta: dict):
        self.prefix, self.meta = prefix, meta
        self.rows = self.batches = 0
        self.dim: Optional[int] = None
        self.done, self.fresh = False, True

    def path(self, part: str) -> str:
        return f"{self.prefix}.{part}" + ({"x": ".f32"}.get(part, ".i64") if part != "json" else "")

    def resume(self) -> int:
        """Pick up a previous extraction of the same meta -> batches already complete (0: fresh start).
        Bytes past the counted rows (a batch cut off mid-write) are truncated away."""
        try:
            with open(self.path("json")) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = None
        if state is None or state.get("meta") != self.meta:
            self.fresh = True  # files are (re)made at the first append: a run kept in memory leaves none
            return 0
        self.rows, self.batches, self.dim, self.done = state["rows"], state["batches"], state["dim"], state["done"]
        self.fresh = False
        for part, dtype in PARTS:
            width = (self.dim or 0) if part == "x" else 1
            with open(self.path(part), "ab") as f:
                f.truncate(self.rows * width * np.dtype(dtype).itemsize)
        return self.batches

    def reset(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.prefix)), exist_ok=True)
        for part, _ in PARTS:
            open(self.path(part), "wb").close()
        self.rows = self.batches = 0
        self.dim, self.done, self.fresh = None, False, False
        self.write_state()

    def write_state(self):
        state = {"rows": self.rows, "batches": self.batches, "dim": self.dim, "done": self.done, "meta": self.meta}
        tmp = self.path("json") + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.path("json"))

    def append(self, x: torch.Tensor, y: torch.Tensor, key: torch.Tensor, batches: int):
        """Rows x [R, D], y [R], key [R] after `batches` more loader batches; durable before counted."""
        if self.fresh:
            self.reset()
        if self.dim is None:
            self.dim = int(x.shape[1])
        for (part, dtype), value in zip(PARTS, (x, y, key)):
            with open(self.path(part), "ab") as f:
                f.write(np.ascontiguousarray(value.numpy(), dtype=dtype).tobytes())
                f.flush()
                os.fsync(f.fileno())
        self.rows += len(y)
        self.batches += batches
        self.write_state()

    def finish(self):
        if self.fresh:  # nothing was appended (no labeled rows on this rank): an empty, finished store
            self.reset()
        self.done = True
        self.write_state()

    def arrays(self) -> tuple:
        """(x np.memmap [rows, D] read-only, y [rows] long, key [rows] long)."""
        if self.rows == 0:
            return np.zeros((0, self.dim or 0), np.float32), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        x = np.memmap(self.path("x"), np.float32, "r", shape=(self.rows, self.dim))
        y, key = (torch.from_numpy(np.fromfile(self.path(p), np.int64, count=self.rows)) for p in ("y", "key"))
        return x, y, key


class RowSink:
    """Rows in memory until they pass `budget_bytes`, then in `store` (given or None: memory only)."""

    def __init__(self, budget_bytes: float, store: Optional[FeatureStore] = None):
        self.budget, self.store = budget_bytes, store
        self.parts: list = []
        self.pending = 0  # batches held in memory, not yet counted by the store
        self.spilled = store is not None and store.rows > 0

    def add(self, x, y, key):
        if self.spilled:
            self.store.append(x, y, key, 1)
            return
        self.parts.append((x, y, key))
        self.pending += 1
        if self.store is not None and sum(p[0].numel() * 4 for p in self.parts) > self.budget:
            self.spill()

    def spill(self):
        x, y, key = (torch.cat(p) for p in zip(*self.parts))
        self.store.append(x, y, key, self.pending)
        self.parts, self.pending, self.spilled = [], 0, True

    def result(self) -> tuple:
        """(x [M, D] tensor or memmap, y [M], key [M]); a store is marked done. A budget of 0 means
        every row on disk, so the store is finished even when it holds none (another rank reads it)."""
        if self.spilled or (self.store is not None and self.budget <= 0):
            if self.parts:
                self.spill()
            self.store.finish()
            return self.store.arrays()
        if not self.parts:
            return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        return tuple(torch.cat(p) for p in zip(*self.parts))


def extract_rows(rows_fn: Callable, dataset, items: Sequence[int], batch_size: int, num_workers: int = 0,
                 store: Optional[FeatureStore] = None, budget_mb: float = float("inf"), rank: int = 0,
                 world: int = 1) -> tuple:
    """This rank's share of `items`, through rows_fn(loader) (feature_batches / raw_batches bound to
    a model: yields (x, y, origin) per batch) -> (x [M, D] tensor or np.memmap, y [M], key [M]).

    Rows stay in memory up to budget_mb, then stream to `store`; a store holding a previous,
    unfinished extraction of the same meta is resumed (its complete batches are not loaded again)."""
    from unimask.probe.data import make_loader

    mine = shard_items(items, rank, world)
    skip = store.resume() if store is not None else 0
    if store is not None and store.done:
        return store.arrays()
    sink = RowSink(budget_mb * 2 ** 20, store)
    loader = make_loader(dataset, mine[skip * batch_size:], batch_size, num_workers)
    chunks = (mine[start:start + batch_size] for start in range(skip * batch_size, len(mine), batch_size))
    for (x, y, origin), chunk in zip(rows_fn(loader), chunks):
        owners = torch.tensor(chunk, dtype=torch.long)[origin[:, 0]] if len(origin) else origin[:, 0]
        sink.add(x, y, owners * ITEM_STRIDE + origin[:, 1])
    return sink.result()
