"""Scoring a labeled split during training (`train.eval_dataset`): fine-tuning's top-1.

Every process scores its share of the split (rank r takes items r, r + world, ...), padded to
the same number of batches, because under FSDP every forward all-gathers weights and the
processes must pair up; the padding rows are not counted. The model says what it scores:
`score_batch(batch, keep [B] bool) -> {name: (sum, count)}`; the result is 100 x sum / count.
"""
from __future__ import annotations

import math

import torch

from unimask.data import to_device
from unimask.train.distributed import all_reduce_mean
from unimask.train.precision import autocast
from unimask.train.workers import close_loader, ignore_stop_signals


@torch.no_grad()
def score_split(model, dataset, batch_size: int, device, dist, precision: str, num_workers: int = 0,
                collate=None) -> dict:
    """-> {'eval_<name>': percent} over the whole dataset (all processes together)."""
    if not model.can_score:
        raise TypeError(f"train.eval_dataset needs a model with score_batch (a Classifier), got {type(model).__name__}")
    n = len(dataset)
    if n == 0:
        raise ValueError("train.eval_dataset is empty")
    mine = list(range(dist.rank, n, dist.world))
    counted = len(mine)
    mine += [0] * (math.ceil(n / dist.world) - counted)  # padding rows: run, not counted
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, mine), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=collate, worker_init_fn=ignore_stop_signals if num_workers else None)
    totals, seen = {}, 0
    was_training = model.training
    model.eval()
    iterator = iter(loader)
    try:
        for batch in iterator:
            batch = to_device(batch, device)
            size = len(next(v for v in batch.values() if torch.is_tensor(v))) if isinstance(batch, dict) else len(batch)
            keep = torch.arange(seen, seen + size, device=device) < counted
            seen += size
            with autocast(precision, device):
                scores = model.score_batch(batch, keep)
            for name, (total, count) in scores.items():
                pair = torch.stack([torch.as_tensor(total, device=device).float(),
                                    torch.as_tensor(count, device=device).float()])
                totals[name] = totals.get(name, 0) + pair
    finally:
        close_loader(iterator)
        model.train(was_training)
    out = {}
    for name, pair in totals.items():
        pair = all_reduce_mean(pair, dist) * dist.world  # sums over processes
        out[f"eval_{name}"] = float(100.0 * pair[0] / pair[1].clamp(min=1))
    return out
