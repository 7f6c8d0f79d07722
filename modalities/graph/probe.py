"""Probing graph encoders: node embeddings (per-token labels), mean-pooled graph embeddings, and
a linear probe on the labeled nodes of one whole graph."""
from __future__ import annotations

import torch

from modalities.graph.dataset import GraphDataset
from unimask.tokens import gather_tokens, select_ids


@torch.no_grad()
def node_embeddings(model, batch, centers_only: bool = False) -> tuple:
    """Frozen encoder features of every real node: (features [N_valid, D], labels [N_valid]).
    Labels are node labels (-1 = unlabeled); centers_only keeps the seed nodes of sampled sub-graphs."""
    was_training = model.training
    model.eval()
    feats, keep_valid = model.features(batch)  # [B, K, D] in select_ids(valid) order
    model.train(was_training)
    ids, _ = select_ids(model.adapter.tokenize(batch).valid_mask())
    labels = batch["label"]
    if labels.dim() != 2:
        raise ValueError("node_embeddings needs node labels [B, N]; this batch has graph labels (use graph_embeddings)")
    labels = gather_tokens(labels.to(ids.device), ids)
    keep = keep_valid & gather_tokens(batch["center"].to(ids.device), ids) if centers_only else keep_valid
    return feats[keep].float(), labels[keep]


@torch.no_grad()
def graph_embeddings(model, batch) -> tuple:
    """Mean-pooled node features per graph: (features [B, D], graph labels [B])."""
    was_training = model.training
    model.eval()
    feats, keep_valid = model.features(batch)
    model.train(was_training)
    w = keep_valid.float()[..., None]
    return (feats.float() * w).sum(1) / w.sum(1).clamp(min=1), batch["label"]


def probe_nodes(model, dataset: GraphDataset, test_fraction: float = 0.5, seed: int = 0, raw: bool = False) -> dict:
    """Linear probe on the labeled nodes of a whole-graph data set (seeded node split), with
    unimask.probe.linear_probe. raw=True probes the input features instead (the baseline)."""
    from unimask.probe import holdout_mask, linear_probe

    if dataset.sampling != "full" or dataset.task != "node":
        raise ValueError("probe_nodes needs GraphDataset(sampling='full') with node labels")
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in dataset.collate([dataset.load(i) for i in range(len(dataset))]).items()}
    if raw:
        keep = batch["valid"]
        x, y = batch["x"][keep].float(), batch["label"][keep]
    else:
        x, y = node_embeddings(model, batch)
    x, y = x[y >= 0].cpu(), y[y >= 0].cpu()
    test = holdout_mask(len(y), test_fraction, seed)
    return linear_probe(x[~test], y[~test], x[test], y[test], num_classes=int(y.max()) + 1)
