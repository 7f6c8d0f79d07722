"""A short end-to-end fine-tune of encoder + linear head, the probe that reads what a linear probe
undersells (MAE's headline protocol); eval.py's --protocol finetune."""
from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from unimask.data import to_device
from unimask.optim import lr_at, param_groups
from unimask.probe.features import encode_all, no_labels_error, rows_and_labels


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
