"""A parsed graph as this package passes it around: a record dict {'name', 'x' [n, F] | None,
'edge_index' [2, E], 'num_nodes', 'node_label' [n] (-1 = unlabeled), 'graph_label' (-1 = none),
'split_masks' (optional {split: [n] bool})}, checked once where it is made."""
from __future__ import annotations

import torch


class GraphFormatError(ValueError):
    """A graph source is malformed; the message names the file and the problem."""
    """A graph source is malformed; the message names the file and the problem."""


def is_int(value) -> bool:
    try:
        return float(value) == int(float(value)) and not isinstance(value, bool)
    except (TypeError, ValueError):
        return False


def make_record(name: str, edge_index: torch.Tensor, num_nodes: int, x, node_label, graph_label: int) -> dict:
    """Check a parsed graph; the errors name the source."""
    if num_nodes <= 0:
        raise GraphFormatError(f"{name}: the graph has no nodes")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise GraphFormatError(f"{name}: edge_index must be [2, E], got {tuple(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        bad = edge_index[(edge_index < 0) | (edge_index >= num_nodes)]
        raise GraphFormatError(f"{name}: edge index {int(bad[0])} is out of range for {num_nodes} nodes")
    if x is not None:
        x = torch.as_tensor(x).float()
        if x.dim() != 2 or x.shape[0] != num_nodes:
            raise GraphFormatError(f"{name}: node features have shape {tuple(x.shape)}, expected [{num_nodes}, F]")
        if not bool(torch.isfinite(x).all()):
            raise GraphFormatError(f"{name}: node features contain NaN or inf")
    node_label = torch.full((num_nodes,), -1, dtype=torch.long) if node_label is None else node_label.long()
    return {"name": name, "x": x, "edge_index": edge_index.long(), "num_nodes": num_nodes,
            "node_label": node_label, "graph_label": int(graph_label)}
