"""Classifiers on fixed features: standardized multinomial logistic regression (L-BFGS, its L2
strength chosen on a train slice); the kNN classifier is knn.py."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import math

import torch
import torch.nn.functional as F
from torch import nn

from unimask.optim import lr_at
from unimask.probe.data import holdout_mask


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
