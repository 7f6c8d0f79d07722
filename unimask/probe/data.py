"""Probe data: deterministic batches of chosen items, seeded 80/20 hold-outs, and per-token labels
split row by row (one big sample's labeled tokens)."""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from unimask.data import SampleDataset


class IndexBatches(torch.utils.data.Sampler):
    """Batches of dataset indices in a fixed order (or a seeded shuffle per pass).

    Items of a SampleDataset are requested as (index, seed) so that random parts of decoding
    (a random crop or start offset) are the same on every pass and every run.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, seeded: bool, shuffle: bool = False, seed: int = 0):
        self.indices, self.batch_size, self.seeded = list(indices), batch_size, seeded
        self.shuffle, self.seed, self.passes = shuffle, seed, 0

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self):
        order = self.indices
        if self.shuffle:
            perm = torch.randperm(len(order), generator=torch.Generator().manual_seed(self.seed + self.passes))
            order = [order[i] for i in perm.tolist()]
        self.passes += 1
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            yield [(i, 1_000_003 * self.seed + i) for i in chunk] if self.seeded else chunk


def make_loader(dataset, indices: Optional[Sequence[int]] = None, batch_size: int = 256, num_workers: int = 0,
                shuffle: bool = False, seed: int = 0):
    """DataLoader over `indices` of `dataset` (all by default), using the dataset's own collate."""
    indices = range(len(dataset)) if indices is None else indices
    sampler = IndexBatches(indices, batch_size, isinstance(dataset, SampleDataset), shuffle, seed)
    collate = SampleDataset.declared(dataset).collate
    kwargs = {"collate_fn": collate} if collate is not None else {}
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, **kwargs)


def holdout_mask(n: int, fraction: float = 0.2, seed: int = 0) -> torch.Tensor:
    """[n] bool, exactly round(fraction * n) True at seeded positions: a deterministic test split."""
    test = torch.zeros(n, dtype=torch.bool)
    test[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: int(round(fraction * n))]] = True
    return test


class HoldOutLabels:
    """Per-token labels with a row-level split: rows on the other side become -1 (unlabeled).

    For data with per-token labels and no test split (one big sample whose labeled tokens are the examples). Rows are
    the labeled tokens in loader order, row-major over [B, N]; the loader must be unshuffled
    and the counter wraps after `len(test_rows)` rows, so every pass sees the same split.
    """

    def __init__(self, labels_fn: Callable, test_rows: torch.Tensor, side: str):
        if side not in ("train", "test"):
            raise ValueError(f"side must be 'train' or 'test', got {side!r}")
        self.labels_fn, self.test_rows, self.side, self.seen = labels_fn, test_rows, side, 0

    def __call__(self, batch):
        labels = self.labels_fn(batch)  # [B, N]
        if labels is None or labels.dim() != 2:
            raise ValueError("HoldOutLabels needs per-token labels [B, N]")
        flat = labels.flatten().clone()
        rows = torch.nonzero(flat >= 0).squeeze(1)
        positions = (self.seen + torch.arange(len(rows))) % len(self.test_rows)
        is_test = self.test_rows[positions].to(flat.device)
        flat[rows[~is_test if self.side == "test" else is_test]] = -1
        self.seen = (self.seen + len(rows)) % len(self.test_rows)
        return flat.view_as(labels)
