"""Cosine kNN with DINO's temperature-weighted vote (eval_knn.py's knn_classifier: the k most
similar train rows vote for their class with weight exp(sim / T)), in one process or with the
train rows sharded over the ranks of a torchrun job.

Why one candidate routine for both: the sharded probe must give exactly the predictions of the
single-process one, so both score and rank the same way:
  * similarities are computed in float64 and rounded to float32, so a summation order that
    differs with the matmul's shape (a shard, a chunk) moves a value by ~1e-16, which the
    rounding absorbs, instead of by a float32 ulp, which could reorder neighbours;
  * candidates are ranked by (-sim, global train index), so ties (duplicate train rows) go to
    the lower index whatever the shard or chunk layout; topk alone leaves tie order unspecified;
  * votes add up in that rank order.
Memory is bounded by the chunk sizes: one [test_chunk, train_chunk] block of similarities at a
time, plus the running top-k, never the full [T, N] matrix. Train rows may be any sliceable
array (a torch tensor or a numpy memmap from the feature store), read a chunk at a time.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

VOTES = ("weighted", "majority")


def as_tensor(rows) -> torch.Tensor:
    """A torch tensor of a chunk of rows (numpy memmaps are copied out of the file here)."""
    return rows if isinstance(rows, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(rows))


def unit_rows(x) -> torch.Tensor:
    """[n, D] -> the rows scaled to unit length, float64 (zero rows stay zero)."""
    return F.normalize(as_tensor(x).double(), dim=1)


def merge_topk(sims: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, k: int) -> tuple:
    """The k best candidates per test row, ranked by (-sim, id): deterministic for ties.

    sims [t, m] float32, ids [t, m] long (global train indices), labels [t, m] long
    -> (sims [t, k'], ids [t, k'], labels [t, k']) with k' = min(k, m), best first."""
    by_id = ids.argsort(dim=1, stable=True)  # [t, m]
    sims, ids, labels = sims.gather(1, by_id), ids.gather(1, by_id), labels.gather(1, by_id)
    order = sims.sort(dim=1, descending=True, stable=True).indices[:, :k]  # equal sims keep id order
    return sims.gather(1, order), ids.gather(1, order), labels.gather(1, order)


def chunk_candidates(sims: torch.Tensor, k: int) -> tuple:
    """The columns of sims [t, c] that can still be among a row's k best: (sims [t, w], cols [t, w]).

    Every column at least as similar as the row's k-th best, ties included (w is the widest row's
    count, so a row may carry a few weaker extras, which the merge drops). Why: sorting only these
    few instead of the whole chunk keeps the exact tie rule at about the cost of one topk."""
    if sims.shape[1] <= k:
        return sims, torch.arange(sims.shape[1], device=sims.device)[None].expand_as(sims)
    top = sims.topk(k, dim=1)
    width = int((sims >= top.values[:, -1:]).sum(1).max())
    if width > k:
        top = sims.topk(width, dim=1)
    return top.values, top.indices


def local_candidates(test_unit: torch.Tensor, train_x, train_y: torch.Tensor, train_ids: torch.Tensor, k: int,
                     train_chunk: int = 8192) -> tuple:
    """Top-k of these test rows among these train rows, chunk by chunk over the train rows.

    test_unit [t, D] float64 unit rows; train_x [n, D] (tensor or memmap), train_y [n], train_ids [n]
    global indices -> (sims [t, k'], ids [t, k'], labels [t, k']) with k' = min(k, n)."""
    t = len(test_unit)
    best = (torch.empty(t, 0), torch.empty(t, 0, dtype=torch.long), torch.empty(t, 0, dtype=torch.long))
    for start in range(0, len(train_y), train_chunk):
        block = unit_rows(train_x[start:start + train_chunk]).to(test_unit.device)
        sims, cols = chunk_candidates((test_unit @ block.T).float(), k)  # [t, w], w >= k (ties kept)
        ids = train_ids[start:start + len(block)].to(sims.device)[cols]
        labels = train_y[start:start + len(block)].to(sims.device)[cols]
        best = merge_topk(torch.cat([best[0].to(sims.device), sims], 1), torch.cat([best[1].to(sims.device), ids], 1),
                          torch.cat([best[2].to(sims.device), labels], 1), k)
    return best


def cast_votes(sims: torch.Tensor, labels: torch.Tensor, num_classes: int, temperature: float, how: str) -> torch.Tensor:
    """Candidates [t, k] (best first) -> predicted class [t]: sum of exp(sim / T) or of 1 per class."""
    weight = (sims / temperature).exp() if how == "weighted" else torch.ones_like(sims)
    votes = torch.zeros(len(sims), num_classes, device=sims.device, dtype=weight.dtype)
    votes.scatter_add_(1, labels, weight)  # [t, C]
    return votes.argmax(1)


def check_vote(how: str):
    if how not in VOTES:
        raise ValueError(f"vote must be one of {VOTES}, got {how!r}")


@torch.no_grad()
def knn_predict(train_x, train_y, test_x, k: int = 20, temperature: float = 0.07, vote: str = "weighted",
                num_classes: Optional[int] = None, chunk: int = 1024, train_chunk: int = 8192) -> torch.Tensor:
    """Cosine kNN (DINO) in one process: [N, D], [N], [T, D] -> predictions [T].

    The k most similar train rows vote with weight exp(sim / T) ('weighted') or 1 ('majority');
    ties in similarity go to the lower train index. chunk / train_chunk bound memory
    ([chunk, train_chunk] similarities at a time) and do not change the result."""
    check_vote(vote)
    train_y = as_tensor(train_y).long()
    num_classes = num_classes or int(train_y.max()) + 1
    ids = torch.arange(len(train_y))
    preds = []
    for start in range(0, len(test_x), chunk):
        test_unit = unit_rows(test_x[start:start + chunk])
        sims, _, labels = local_candidates(test_unit, train_x, train_y, ids, k, train_chunk)
        preds.append(cast_votes(sims, labels, num_classes, temperature, vote))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def knn_probe(train_x, train_y, test_x, test_y, k: int = 20, temperature: float = 0.07,
              vote: str = "weighted") -> dict:
    """-> {'top1_acc', 'k'}: top-1 accuracy in percent of the kNN classifier above."""
    from unimask.probe.classifiers import accuracy

    test_y = as_tensor(test_y).long()
    num_classes = int(max(as_tensor(train_y).max(), test_y.max())) + 1
    pred = knn_predict(train_x, train_y, test_x, k, temperature, vote, num_classes)
    return {"top1_acc": accuracy(pred, test_y), "k": k}


# ---- train rows sharded over ranks ---------------------------------------------------------------
def comm_device() -> torch.device:
    """Where collective tensors live: the current GPU under NCCL, the CPU under gloo."""
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_rows(x: torch.Tensor, world: int) -> list:
    """all_gather of tensors whose first dimension differs by rank -> one tensor per rank."""
    import torch.distributed as dist

    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(x)], device=x.device))
    top = max(int(s) for s in sizes)
    padded = torch.zeros((top,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:len(x)] = x
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return [o[:int(s)] for o, s in zip(out, sizes)]


@torch.no_grad()
def knn_predict_sharded(train_x, train_y, test_x, k: int = 20, temperature: float = 0.07, vote: str = "weighted",
                        num_classes: Optional[int] = None, chunk: int = 1024, train_chunk: int = 8192,
                        train_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """kNN with the train rows sharded over the ranks of an initialized process group (gloo: CPU).

    Each rank passes its shard of train rows (train_x [n_r, D], train_y [n_r]) and its own test
    rows (test_x [t_r, D]) and gets the predictions [t_r] of its test rows, equal to
    knn_predict(all train rows, ...) with the shards concatenated in rank order (or, with
    train_ids [n_r], the global index of each local row: a strided DistributedSampler split).
    Per step every rank adds a chunk of its test rows to a shared block (all_gather), scores the
    block against its train shard (local top-k), and all ranks exchange their candidates
    (all_gather of [block, k] sims, ids, labels); each merges the global top-k of its own rows.
    Memory per rank: the block [world * chunk, D], [world * chunk, train_chunk] similarities and
    world x [world * chunk, k] candidates. Every rank must call it (it is a collective)."""
    import torch.distributed as dist

    check_vote(vote)
    world, rank, device = dist.get_world_size(), dist.get_rank(), comm_device()
    train_y = as_tensor(train_y).long()
    sizes = torch.zeros(world, dtype=torch.long, device=device)
    sizes[rank] = len(train_y)
    dist.all_reduce(sizes)
    if train_ids is None:
        train_ids = int(sizes[:rank].sum()) + torch.arange(len(train_y))
    width = max((int(x.shape[1]) for x in (train_x, test_x) if len(x) and x.ndim == 2), default=0)
    top = torch.tensor([int(train_y.max()) if len(train_y) else -1, len(test_x), width], device=device)
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    num_classes, width = num_classes or int(top[0]) + 1, int(top[2])
    steps = -(-int(top[1]) // chunk)
    k = min(k, int(sizes.sum()))
    preds = []
    for step in range(steps):
        mine = as_tensor(test_x[step * chunk:(step + 1) * chunk]).double().to(device).reshape(-1, width)  # [t_r, D]
        blocks = gather_rows(mine, world)  # world x [t_r, D]
        offsets = np.cumsum([0] + [len(b) for b in blocks])
        block = unit_rows(torch.cat(blocks))  # [sum t_r, D]
        local = local_candidates(block, train_x, train_y, as_tensor(train_ids).long(), k, train_chunk)
        if local[0].shape[1] < k:  # a shard with fewer than k rows: pad with candidates that never win
            pad = k - local[0].shape[1]
            local = (torch.cat([local[0], torch.full((len(block), pad), -float("inf"), device=device)], 1),
                     torch.cat([local[1], torch.full((len(block), pad), torch.iinfo(torch.long).max, device=device)], 1),
                     torch.cat([local[2], torch.zeros(len(block), pad, dtype=torch.long, device=device)], 1))
        everyone = [[torch.empty_like(part) for _ in range(world)] for part in local]
        for out, part in zip(everyone, local):
            dist.all_gather(out, part.contiguous())
        rows = slice(int(offsets[rank]), int(offsets[rank + 1]))
        sims, _, labels = merge_topk(*(torch.cat([c[rows] for c in parts], 1) for parts in everyone), k)
        preds.append(cast_votes(sims, labels, num_classes, temperature, vote))
    return torch.cat(preds).cpu() if preds else torch.empty(0, dtype=torch.long)


def knn_probe_sharded(train_x, train_y, test_x, test_y, k: int = 20, temperature: float = 0.07,
                      vote: str = "weighted", train_ids: Optional[torch.Tensor] = None, chunk: int = 1024) -> dict:
    """knn_probe over shards: each rank its train and test rows -> the same {'top1_acc', 'k', 'n_test'}
    on every rank (correct counts summed over ranks)."""
    import torch.distributed as dist

    test_y, device = as_tensor(test_y).long(), comm_device()
    top = torch.tensor([int(as_tensor(train_y).max()) if len(train_y) else -1, int(test_y.max()) if len(test_y) else -1],
                       device=device)
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    pred = knn_predict_sharded(train_x, train_y, test_x, k, temperature, vote, int(top.max()) + 1, chunk=chunk,
                               train_ids=train_ids)
    counts = torch.tensor([int((pred == test_y).sum()), len(test_y)], device=device)
    dist.all_reduce(counts)
    return {"top1_acc": 100.0 * int(counts[0]) / max(1, int(counts[1])), "k": k, "n_test": int(counts[1])}
