"""Frozen features and raw inputs as probe rows: (x [M, D], y [M]) from a labeled loader, with
[B] labels pooled over tokens and [B, N] labels giving one row per labeled token."""
from __future__ import annotations

import inspect
from typing import Callable, Optional

import torch

from unimask.data import to_device
from unimask.encoders import all_visible, encode_layers
from unimask.interfaces import Encoder
from unimask.tokens import gather_tokens, select_ids

POOLS = ("mean", "cls", "tokens", "flatten", "max+mean")


class NoLabelsError(ValueError):
    """The data carries no labels (None, or every label is -1): nothing to probe against."""


def encode_all(model, batch, grad: bool = False, layer: Optional[int] = None):
    """model.features(batch): (features [B, M, D], valid [B, M]); with grad, the same function
    unwrapped from its no_grad decorator, so fine-tuning trains exactly what probes read.
    layer: the output of that encoder block instead (0 = first, -1 = last, before the final
    norm): MAE's features often probe better a few blocks below the top, where the encoder
    has not yet specialised in what the decoder needs."""
    if layer is not None:
        return block_features(model, batch, layer)
    if not grad:
        return model.features(batch)
    return inspect.unwrap(type(model).features)(model, batch)


def block_features(model, batch, layer: int) -> tuple:
    """Every token visible, the output of encoder block `layer` -> ([B, M, D], valid [B, M])."""
    parts = dict(model.named_children())  # torch's module tree: one adapter and one encoder?
    adapter, encoder = parts.get("adapter"), parts.get("encoder")
    if adapter is None or not isinstance(encoder, Encoder):
        raise ValueError(f"--layer needs a model with one transformer encoder; {type(model).__name__} has none")
    tokens, ids, valid = all_visible(adapter, batch)
    outputs = encode_layers(adapter, encoder, tokens, ids, valid)
    if not -len(outputs) <= layer < len(outputs):
        raise ValueError(f"--layer {layer}: the encoder has {len(outputs)} blocks (0..{len(outputs) - 1}, or negative)")
    return outputs[layer], valid


def pool_rows(feats: torch.Tensor, valid: torch.Tensor, pool: str) -> tuple:
    """[B, M, D], [B, M] -> per-sample rows [B, D] ('mean' over valid tokens, 'cls' = first token;
    'max+mean' [B, 2D])
    or per-token rows [B, M, D] ('tokens', rows where valid)."""
    if pool == "mean":
        w = valid.to(feats.dtype)[..., None]
        return (feats * w).sum(1) / w.sum(1).clamp(min=1)
    if pool == "cls":
        return feats[:, 0]
    if pool == "max+mean":  # max- and mean-pooled side by side [B, 2D]: Point-BERT's and Point-MAE's set features
        peak = feats.masked_fill(~valid[..., None], float("-inf")).amax(1)
        peak = peak.masked_fill(~valid.any(1)[:, None], 0)  # a sample without valid tokens: 0, as its mean
        return torch.cat([peak, pool_rows(feats, valid, "mean")], 1)
    if pool == "tokens":
        return feats
    if pool == "flatten":  # every token's features side by side, as the raw input is for the raw baseline
        if not bool(valid.all()):
            raise ValueError("pool 'flatten' needs the same unpadded token count in every sample; use pool='mean'")
        return feats.flatten(1)
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
def recompute_norm_stats(model, loader, device) -> int:
    """Re-estimate the running mean and variance of every BatchNorm the features pass through, on
    `loader` (a plain average over its batches, no labels, no gradient), everything else in eval
    mode -> how many layers. One the features never reach (a teacher's copy) keeps its own.
    Why: an untrained network's BatchNorm keeps its initial statistics (mean 0, variance 1), and
    in eval mode those can leave an untrained embedding's outputs near zero (a small-init conv
    stack), so a random-init probe would read little but the position codes; with the statistics
    of the data it is the network as it would run. Applied alike to pretrained and random-init
    encoders."""
    norms = [m for m in model.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    model.eval().to(device)
    saved = [(m.momentum, {name: b.clone() for name, b in m.named_buffers()}) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
        m.train()
    for batch in loader:
        model.features(to_device(batch, device))
    reached = 0
    for m, (momentum, buffers) in zip(norms, saved):
        m.momentum = momentum
        m.eval()
        if int(m.num_batches_tracked) == 0:  # not on the features' path: as it was
            for name, value in buffers.items():
                getattr(m, name).copy_(value)  # torch: BatchNorm buffers
        else:
            reached += 1
    return reached


def row_origins(model, batch, valid: torch.Tensor, labels: torch.Tensor, pool: str, per_sample: bool) -> torch.Tensor:
    """Where each row of rows_and_labels comes from: [R, 2] long (sample in the batch, token position;
    0 for a pooled row). Why: rows extracted by several ranks, or over several runs, are put back in
    the one-process order (item, then token) by these keys, which the sharded kNN's ties rely on."""
    labels = labels.to(valid.device).long()
    if per_sample:  # one pooled row per labeled sample
        samples = torch.nonzero(labels >= 0).squeeze(1)
        return torch.stack([samples, torch.zeros_like(samples)], 1)
    b, m = valid.shape
    grid = torch.stack([torch.arange(b, device=valid.device)[:, None].expand(b, m),
                        torch.arange(m, device=valid.device)[None].expand(b, m)], -1)  # [B, M, 2]
    return rows_and_labels(model, batch, grid, valid, labels, pool)[0]


@torch.no_grad()
def feature_batches(model, loader, device, pool: str = "mean", labels_fn: Optional[Callable] = None,
                    layer: Optional[int] = None):
    """Frozen features batch by batch: yields (x [R, D] float32 CPU, y [R] long CPU, origin [R, 2])
    for the labeled rows of each batch (row_origins), so a caller may stream them to disk."""
    model.eval().to(device)
    for batch, labels in labeled_batches(model, loader, device, labels_fn):
        feats, valid = encode_all(model, batch, layer=layer)
        x, y = rows_and_labels(model, batch, feats.float(), valid, labels, pool)
        per_sample = labels.dim() == 1 and pool != "tokens"
        yield x.cpu(), y.cpu(), row_origins(model, batch, valid, labels, pool, per_sample).cpu()


@torch.no_grad()
def raw_batches(model, loader, device, pool: str = "flatten", labels_fn: Optional[Callable] = None):
    """The input as features, batch by batch, as feature_batches yields them (see extract_raw)."""
    width = None
    for batch, labels in labeled_batches(model, loader, device, labels_fn):
        tokens, ids, valid = all_visible(model.adapter, batch)
        raw = gather_tokens(model.adapter.raw_features(tokens), ids)  # [B, M, P + C], same token order as model.features
        if pool == "flatten" and labels.dim() == 1:
            if not bool(valid.all()) or (width is not None and width != raw.flatten(1).shape[1]):
                raise ValueError("raw pool 'flatten' needs the same unpadded token count in every sample; "
                                 "use pool='mean'")
            width = raw.flatten(1).shape[1]
            keep = labels.to(raw.device) >= 0
            x, y = raw.flatten(1)[keep], labels.to(raw.device).long()[keep]
            per_sample, row_pool = True, pool
        else:
            row_pool = "mean" if pool == "flatten" else pool
            x, y = rows_and_labels(model, batch, raw, valid, labels, row_pool)
            per_sample = labels.dim() == 1 and row_pool != "tokens"
        yield x.cpu(), y.cpu(), row_origins(model, batch, valid, labels, row_pool, per_sample).cpu()


def concat_rows(model, parts) -> tuple:
    """(x, y, origin) per batch -> (x [M, D], y [M]); no labeled row at all is an error."""
    xs, ys = [], []
    for x, y, _ in parts:
        xs.append(x)
        ys.append(y)
    if not ys or sum(len(y) for y in ys) == 0:
        raise no_labels_error(model)
    return torch.cat(xs), torch.cat(ys)


def extract_features(model, loader, device, pool: str = "mean", labels_fn: Optional[Callable] = None,
                     layer: Optional[int] = None) -> tuple:
    """Frozen features of every labeled row: (x [M, D] float32 on CPU, y [M] long on CPU).

    pool 'mean' averages the valid tokens of a sample, 'cls' takes the first token, 'tokens'
    gives one row per token, 'flatten' concatenates the tokens; per-token labels always give
    per-token rows. layer: features of that encoder block (encode_all).
    """
    return concat_rows(model, feature_batches(model, loader, device, pool, labels_fn, layer))


def extract_raw(model, loader, device, pool: str = "flatten", labels_fn: Optional[Callable] = None) -> tuple:
    """The input as features, the baseline a learned encoder must beat: (x [M, P'], y [M]).

    Each token is the adapter's raw_features: its patch plus its coordinates by default.
    pool 'flatten' concatenates all tokens of a sample (the whole raw input for a dense grid; needs the same
    unpadded token count everywhere), other pools as in extract_features.
    """
    return concat_rows(model, raw_batches(model, loader, device, pool, labels_fn))
