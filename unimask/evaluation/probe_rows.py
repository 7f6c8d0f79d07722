"""The linear and kNN probes' rows at any size: extracted by every torchrun rank (its share of the
items), kept in memory up to a budget and streamed past it to memory-mapped files in the run
directory (`<run>/features/<tag>/`), where an interrupted extraction resumes. The files and their
resume rule are unimask/probe/store.py; this module names them and picks which rows each split gets.

Why here and not in protocols.py: it is the part of a probe that knows about ranks and disk, and
protocols.py stays the one-screen account of what a probe does.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

LARGE_ROWS = 100_000  # past this, L-BFGS on every row in memory is the wrong tool: a recipe linear probe
RECIPE_PROBE = "gin/linprobe_mae.gin"


@dataclass
class Rows:
    """One split's rows on this rank: x [M, D] (tensor or np.memmap), y [M], key [M] (one-process order)."""
    x: object
    y: object
    key: object
    items: Optional[int] = None  # the split's item count over all ranks (part of its stores' meta)


def feature_dir(options) -> Optional[str]:
    """--feature-dir, else <run>/features beside the checkpoint's run; None: rows stay in memory."""
    if options.feature_dir:
        return options.feature_dir
    if options.checkpoint:
        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(options.checkpoint))), "features")
    return None


def store_meta(options, world: int) -> dict:
    """What the rows depend on: a store whose meta differs is not resumed."""
    given = vars(options)  # the tool's argparse namespace
    meta = {name: given[name] for name in ("checkpoint", "random_init", "features", "pool", "layer", "modality",
                                           "seed", "norm_stats", "gin", "gin_param", "test_root", "batch_size")}
    if options.checkpoint and os.path.exists(options.checkpoint):
        stat = os.stat(options.checkpoint)
        meta["checkpoint_file"] = [os.path.abspath(options.checkpoint), stat.st_size, int(stat.st_mtime)]
    meta["world"] = world
    return meta


def store_for(options, split: str, rank: int, world: int, n_items: Optional[int] = None):
    """The FeatureStore of one split on one rank, or None without a feature directory. n_items: the
    split's item count, part of the meta (data added to the folder is not resumed over)."""
    from unimask.probe.store import FeatureStore

    where = feature_dir(options)
    if where is None:
        return None
    meta = dict(store_meta(options, world), split=split, **({"items": n_items} if n_items is not None else {}))
    tag = hashlib.sha1(json.dumps(store_meta(options, world), sort_keys=True, default=str).encode()).hexdigest()[:10]
    return FeatureStore(os.path.join(where, tag, f"{split}.r{rank}of{world}"), meta)


def split_rows(model, data, options, device, rank: int = 0, world: int = 1) -> tuple:
    """(train Rows, test Rows) of this rank for the linear / kNN probes."""
    import functools

    from unimask.evaluation.probe_data import TEST_FRACTION, loaders
    from unimask.probe import holdout_mask, no_labels_error, recompute_norm_stats
    from unimask.probe.features import feature_batches, raw_batches
    from unimask.probe.store import extract_rows

    side_by_side = options.features == "raw" or options.modality == "all"
    pool = options.pool or ("flatten" if side_by_side else "mean")
    if options.features == "raw":
        if options.layer is not None:
            raise ValueError("--layer picks an encoder block; --features raw has none")
        rows_fn = functools.partial(raw_batches, model, device=device, pool=pool)
    else:
        rows_fn = functools.partial(feature_batches, model, device=device, pool=pool, layer=options.layer)
    if options.norm_stats == "recompute" and options.features == "encoder":
        train_loader = loaders(data, options.batch_size, options.num_workers, options.seed)[0]
        print(f"norm stats: {recompute_norm_stats(model, train_loader, device)} BatchNorm layers recomputed "
              "on the train split", flush=True)
    # the linear probe fits once, on every rank's rows: under torchrun they all go to disk for rank 0 to read
    budget = 0.0 if world > 1 and options.protocol == "linear" else options.feature_budget_mb
    if world > 1 and options.protocol == "linear" and feature_dir(options) is None:
        raise ValueError("a linear probe under torchrun collects the ranks' rows on disk: give --feature-dir")

    def extract(dataset, items, split):
        items = range(len(dataset)) if items is None else items
        store = store_for(options, split, rank, world, len(items))
        x, y, key = extract_rows(rows_fn, dataset, items, options.batch_size, options.num_workers, store, budget,
                                 rank, world)
        return Rows(x, y, key, len(items))

    if data.rows_holdout:  # per-token labels, split by labeled row in loader order: one process
        if world > 1:
            raise ValueError("per-token labels without a test split are held out row by row in loader order; "
                             "run this probe in one process")
        rows = extract(data.train, data.train_items, "all")
        if len(rows.y) == 0:
            raise no_labels_error(model)
        test = holdout_mask(len(rows.y), TEST_FRACTION, options.seed)
        x = in_memory(rows.x)
        return Rows(x[~test], rows.y[~test], rows.key[~test]), Rows(x[test], rows.y[test], rows.key[test])
    train = extract(data.train, data.train_items, "train")
    test = extract(data.test, data.test_items, "test")
    if world == 1 and (len(train.y) == 0 or len(test.y) == 0):
        raise no_labels_error(model)
    return train, test


def in_memory(x):
    """A tensor of rows (a memmap is read into memory: the L-BFGS fit needs every row at once)."""
    import torch

    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))


def all_rows(options, split: str, world: int, mine: Rows) -> Rows:
    """Every rank's rows of a split, in one-process order, read from the ranks' stores on the shared
    disk (after a barrier); one process: its own rows. For the linear probe's single fit."""
    import torch

    if world == 1:
        return mine
    parts = []
    for rank in range(world):
        store = store_for(options, split, rank, world, mine.items)
        store.resume()
        if not store.done:
            raise RuntimeError(f"rank {rank}'s {split} rows are not complete in {store.prefix}")
        x, y, key = store.arrays()
        if len(y):
            parts.append((in_memory(x), y, key))
    x, y, key = (torch.cat(p) for p in zip(*parts))
    order = key.argsort()
    return Rows(x[order], y[order], key[order])


def large_data_note(n_rows: int) -> Optional[str]:
    """The line that says when the L-BFGS probe is past its size, or None."""
    if n_rows <= LARGE_ROWS:
        return None
    return (f"note: {n_rows} train rows (> {LARGE_ROWS}): the L-BFGS probe holds them all in memory and fits full "
            f"batch; at this size the recipe linear probe ({RECIPE_PROBE}: MAE's BatchNorm + LARS, trained as a run "
            "with python tools/train.py) is the protocol to use")

