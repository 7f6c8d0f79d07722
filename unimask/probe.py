"""Probes: how much do the encoder's features know about labels it never saw?

Features come from `model.features(batch)` (every token visible) and labels from
`model.adapter.labels(batch)`, so the same code probes any adapter: [B] labels give one
row per sample (tokens pooled), [B, N] labels (-1 = unlabeled) give one row per labeled
token. Probes are deterministic (fixed seeds, full-batch L-BFGS by default), so two
checkpoints are compared on one number that does not move between reruns.

    extract_features  frozen features  -> (x [M, D], y [M])
    extract_raw       the input itself -> (x [M, P'], y [M]), the no-learning baseline
    linear_probe      standardized multinomial logistic regression (L-BFGS or AdamW)
    knn_probe         cosine kNN, DINO's temperature-weighted vote or a plain majority
    finetune          a few epochs of encoder + linear head, end to end
"""
from __future__ import annotations

import copy
import inspect
import math
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from unimask.data import SampleDataset, to_device
from unimask.tokens import gather_tokens, select_ids
from unimask.train.optim import lr_at, param_groups

POOLS = ("mean", "cls", "tokens")


class NoLabelsError(ValueError):
    """The data carries no labels (None, or every label is -1): nothing to probe against."""


# ---- data ------------------------------------------------------------------------------------
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
    kwargs = {"collate_fn": dataset.collate} if getattr(dataset, "collate", None) is not None else {}
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


# ---- features --------------------------------------------------------------------------------
def encode_all(model, batch, grad: bool = False):
    """model.features(batch): (features [B, M, D], valid [B, M]); with grad, the same function
    unwrapped from its no_grad decorator, so fine-tuning trains exactly what probes read."""
    if not grad:
        return model.features(batch)
    return inspect.unwrap(type(model).features)(model, batch)


def pool_rows(feats: torch.Tensor, valid: torch.Tensor, pool: str) -> tuple:
    """[B, M, D], [B, M] -> per-sample rows [B, D] ('mean' over valid tokens, 'cls' = first token)
    or per-token rows [B, M, D] ('tokens', rows where valid)."""
    if pool == "mean":
        w = valid.to(feats.dtype)[..., None]
        return (feats * w).sum(1) / w.sum(1).clamp(min=1)
    if pool == "cls":
        return feats[:, 0]
    if pool == "tokens":
        return feats
    raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")


def token_labels_for(model, batch, labels: torch.Tensor, m: int) -> torch.Tensor:
    """Per-token labels [B, N] -> [B, M] aligned with model.features' token order (the valid
    tokens, in order, padded with -1), which is the order `select_ids` gives."""
    valid = model.adapter.tokenize(batch).valid_mask()
    if bool(valid.all()) and labels.shape[1] == m:
        return labels
    ids, keep = select_ids(valid)
    return torch.where(keep, gather_tokens(labels.to(ids.device), ids), torch.full_like(ids, -1))


def rows_and_labels(model, batch, feats, valid, labels, pool: str) -> tuple:
    """One batch -> (rows [R, D], labels [R]) for the labeled rows only."""
    labels = labels.to(feats.device).long()
    if labels.dim() == 2:  # per-token labels: one row per labeled token, whatever `pool` says
        labels = token_labels_for(model, batch, labels, feats.shape[1])
        keep = valid & (labels >= 0)
        return feats[keep], labels[keep]
    if labels.dim() != 1:
        raise ValueError(f"adapter.labels must be [B] or [B, N], got shape {tuple(labels.shape)}")
    if pool == "tokens":  # every valid token inherits its sample's label
        labels = labels[:, None].expand(valid.shape)
        keep = valid & (labels >= 0)
        return feats[keep], labels[keep]
    rows = pool_rows(feats, valid, pool)
    keep = labels >= 0
    return rows[keep], labels[keep]


def no_labels_error(model) -> NoLabelsError:
    return NoLabelsError(
        f"the data has no labels ({type(model.adapter).__name__}.labels gave None or only -1 for every item): "
        "a probe needs labeled data; set the dataset to a labeled split (class sub-folders, y_<split> "
        "arrays, a list file with labels) or use a label-free evaluation")


def labeled_batches(model, loader, device, labels_fn: Optional[Callable] = None):
    """Yield (batch on device, labels) for every batch; data without labels is an error."""
    labels_fn = labels_fn or model.adapter.labels
    for batch in loader:
        batch = to_device(batch, device)
        labels = labels_fn(batch)
        if labels is None:
            raise no_labels_error(model)
        yield batch, labels


@torch.no_grad()
def extract_features(model, loader, device, pool: str = "mean", labels_fn: Optional[Callable] = None) -> tuple:
    """Frozen features of every labeled row: (x [M, D] float32 on CPU, y [M] long on CPU).

    pool 'mean' averages the valid tokens of a sample, 'cls' takes the first token, 'tokens'
    gives one row per token; per-token labels always give per-token rows.
    """
    model.eval().to(device)
    xs, ys = [], []
    for batch, labels in labeled_batches(model, loader, device, labels_fn):
        feats, valid = encode_all(model, batch)
        x, y = rows_and_labels(model, batch, feats.float(), valid, labels, pool)
        xs.append(x.cpu())
        ys.append(y.cpu())
    if not ys or sum(len(y) for y in ys) == 0:
        raise no_labels_error(model)
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def extract_raw(model, loader, device, pool: str = "flatten", labels_fn: Optional[Callable] = None) -> tuple:
    """The input as features, the baseline a learned encoder must beat: (x [M, P'], y [M]).

    Each token is its raw patch plus its coordinates (a token's position may carry the shape).
    pool 'flatten' concatenates all tokens of a sample (the whole raw input for a dense grid; needs the same
    unpadded token count everywhere), other pools as in extract_features.
    """
    xs, ys = [], []
    for batch, labels in labeled_batches(model, loader, device, labels_fn):
        tokens = model.adapter.tokenize(batch)
        ids, valid = select_ids(tokens.valid_mask())
        raw = torch.cat([tokens.patches.float(), tokens.coords.float()], -1)
        raw = gather_tokens(raw, ids)  # [B, M, P + C], same token order as model.features
        if pool == "flatten" and labels.dim() == 1:
            if not bool(valid.all()) or (xs and xs[0].shape[1] != raw.flatten(1).shape[1]):
                raise ValueError("raw pool 'flatten' needs the same unpadded token count in every sample; "
                                 "use pool='mean'")
            keep = labels.to(raw.device) >= 0
            x, y = raw.flatten(1)[keep], labels.to(raw.device).long()[keep]
        else:
            x, y = rows_and_labels(model, batch, raw, valid, labels, "mean" if pool == "flatten" else pool)
        xs.append(x.cpu())
        ys.append(y.cpu())
    if not ys or sum(len(y) for y in ys) == 0:
        raise no_labels_error(model)
    return torch.cat(xs), torch.cat(ys)


# ---- linear probe ------------------------------------------------------------------------------
def standardize(train_x: torch.Tensor, *others: torch.Tensor) -> tuple:
    """Zero mean, unit variance per feature with the train statistics (constant features -> 0)."""
    mean, std = train_x.mean(0), train_x.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return tuple((x - mean) / std for x in (train_x,) + others)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, wd: float, epochs: int = 100,
                 lr: float = 1.0, optimizer: str = "lbfgs", batch_size: int = 256, seed: int = 0) -> nn.Linear:
    """Multinomial logistic regression, loss = CE + wd/2 * |W|^2. x [M, D], y [M] -> Linear(D, C).

    'lbfgs': full batch, `epochs` L-BFGS iterations (strong Wolfe line search, so `lr` = 1 is
    right); 'adamw': `epochs` passes of seeded mini-batches with a cosine learning rate.
    """
    torch.manual_seed(seed)
    head = nn.Linear(x.shape[1], num_classes).to(x.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)

    def objective(xb, yb):
        return F.cross_entropy(head(xb), yb) + 0.5 * wd * head.weight.pow(2).sum()

    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(head.parameters(), lr=lr, max_iter=epochs, history_size=20,
                                tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = objective(x, y)
            loss.backward()
            return loss

        opt.step(closure)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(seed)
        steps_per_epoch, step = math.ceil(len(x) / batch_size), 0
        total = epochs * steps_per_epoch
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=gen).to(x.device)
            for start in range(0, len(x), batch_size):
                rows = perm[start:start + batch_size]
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total, lr, 0)
                opt.zero_grad()
                objective(x[rows], y[rows]).backward()
                opt.step()
                step += 1
    else:
        raise ValueError(f"optimizer must be 'lbfgs' or 'adamw', got {optimizer!r}")
    return head.eval()


def accuracy(logits_or_pred: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent; takes logits [M, C] or predictions [M]."""
    pred = logits_or_pred.argmax(-1) if logits_or_pred.dim() == 2 else logits_or_pred
    return 100.0 * float((pred == y).float().mean()) if len(y) else float("nan")


def choose_wd(x: torch.Tensor, y: torch.Tensor, num_classes: int, wds: Sequence[float], **fit_kwargs) -> float:
    """Pick weight decay on a seeded 20% slice of the train rows (the test rows stay unseen)."""
    val = holdout_mask(len(x), 0.2, seed=1)
    if val.all() or not val.any():
        return float(wds[0])
    best, best_acc = float(wds[0]), -1.0
    for wd in wds:
        head = fit_logistic(x[~val], y[~val], num_classes, wd, **fit_kwargs)
        with torch.no_grad():
            acc = accuracy(head(x[val]), y[val])
        if acc > best_acc + 1e-9:  # ties keep the smaller (earlier) wd
            best, best_acc = float(wd), acc
    return best


def linear_probe(train_x, train_y, test_x, test_y, epochs: int = 100, lr: float = 1.0,
                 wd: Union[float, Sequence[float]] = 1e-4, optimizer: str = "lbfgs", batch_size: int = 256,
                 num_classes: Optional[int] = None, seed: int = 0) -> dict:
    """Logistic regression on standardized features (train statistics), deterministic.

    x [M, D] / y [M]. `wd` may be a list: the best on a slice of the train rows is refit on
    all of them. -> {'top1_acc', 'train_acc', 'wd'} (accuracies in percent).
    """
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    train_x, test_x = standardize(train_x.float(), test_x.float())
    fit_kwargs = dict(epochs=epochs, lr=lr, optimizer=optimizer, batch_size=batch_size, seed=seed)
    wds = [wd] if isinstance(wd, (int, float)) else list(wd)
    chosen = choose_wd(train_x, train_y, num_classes, wds, **fit_kwargs) if len(wds) > 1 else float(wds[0])
    head = fit_logistic(train_x, train_y, num_classes, chosen, **fit_kwargs)
    with torch.no_grad():
        return {"top1_acc": accuracy(head(test_x), test_y), "train_acc": accuracy(head(train_x), train_y),
                "wd": chosen}


# ---- kNN ------------------------------------------------------------------------------------------
@torch.no_grad()
def knn_predict(train_x, train_y, test_x, k: int = 20, temperature: float = 0.07, vote: str = "weighted",
                num_classes: Optional[int] = None, chunk: int = 1024) -> torch.Tensor:
    """Cosine kNN (DINO): the k most similar train rows vote with weight exp(sim / T)
    ('weighted') or 1 ('majority'). [N, D], [N], [T, D] -> predictions [T]."""
    if vote not in ("weighted", "majority"):
        raise ValueError(f"vote must be 'weighted' or 'majority', got {vote!r}")
    num_classes = num_classes or int(train_y.max()) + 1
    k = min(k, len(train_x))
    train_n = F.normalize(train_x.float(), dim=1)
    preds = []
    for start in range(0, len(test_x), chunk):
        sim = F.normalize(test_x[start:start + chunk].float(), dim=1) @ train_n.T  # [t, N]
        top_sim, top_ids = sim.topk(k, dim=1)  # [t, k]
        weight = (top_sim / temperature).exp() if vote == "weighted" else torch.ones_like(top_sim)
        votes = torch.zeros(len(sim), num_classes, device=sim.device)
        votes.scatter_add_(1, train_y[top_ids], weight)  # [t, C]
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_probe(train_x, train_y, test_x, test_y, k: int = 20, temperature: float = 0.07,
              vote: str = "weighted") -> dict:
    """-> {'top1_acc'} in percent of the kNN classifier above."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    pred = knn_predict(train_x, train_y, test_x, k, temperature, vote, num_classes)
    return {"top1_acc": accuracy(pred, test_y), "k": k}


# ---- fine-tuning ---------------------------------------------------------------------------------
def batch_logits(model, head, batch, labels, pool: str, grad: bool) -> tuple:
    """Encoder (with or without grad) + head on one batch -> (logits [R, C], labels [R])."""
    feats, valid = encode_all(model, batch, grad=grad)
    rows, y = rows_and_labels(model, batch, feats.float(), valid, labels, pool)
    return head(rows), y


def finetune(model, train_loader, test_loader, device, num_classes: int, epochs: int = 5, lr: float = 1e-3,
             wd: float = 0.05, pool: str = "mean", warmup_frac: float = 0.1, seed: int = 0,
             labels_fn: Optional[Callable] = None, test_labels_fn: Optional[Callable] = None) -> dict:
    """Short end-to-end fine-tuning of adapter embedding + encoder + a LayerNorm/linear head.

    Works on a copy, so the caller's model is untouched. AdamW (MAE's no-decay groups), linear
    warmup then cosine, CE on the labeled rows. -> {'top1_acc', 'train_loss', 'n_test'} on the test loader.
    """
    torch.manual_seed(seed)
    model = copy.deepcopy(model).to(device)
    labels_fn = labels_fn or model.adapter.labels
    test_labels_fn = test_labels_fn or model.adapter.labels
    dim = model.encoder.dim
    head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes)).to(device)
    nn.init.trunc_normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    trained = nn.ModuleDict({"adapter": model.adapter, "encoder": model.encoder, "head": head})
    opt = torch.optim.AdamW(param_groups(trained, wd), lr=lr, betas=(0.9, 0.999))
    total = max(1, epochs * len(train_loader))
    step, losses = 0, []
    for _ in range(epochs):
        model.train()
        head.train()
        for batch in train_loader:
            batch = to_device(batch, device)
            labels = labels_fn(batch)
            if labels is None:
                raise no_labels_error(model)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, lr, int(warmup_frac * total))
            logits, y = batch_logits(model, head, batch, labels, pool, grad=True)
            step += 1
            if len(y) == 0:
                continue
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    if not losses:
        raise no_labels_error(model)
    model.eval()
    head.eval()
    correct, count = 0, 0
    with torch.no_grad():
        for batch in test_loader:
            batch = to_device(batch, device)
            labels = test_labels_fn(batch)
            logits, y = batch_logits(model, head, batch, labels, pool, grad=False)
            correct += int((logits.argmax(-1) == y).sum())
            count += len(y)
    if count == 0:
        raise no_labels_error(model)
    return {"top1_acc": 100.0 * correct / count, "train_loss": sum(losses[-10:]) / len(losses[-10:]), "n_test": count}
