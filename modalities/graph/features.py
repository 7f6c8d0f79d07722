"""Graph structure clean-up and node features for graphs that have none: GraphMAE's one-hot
degree, a one-hot node index, or normalized-Laplacian eigenvectors."""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F

from modalities.graph.records import GraphFormatError

FEATURE_KINDS = ("auto", "given", "degree", "identity", "laplacian")
GRAPHMAE_MAX_DEGREE = 400  # GraphMAE caps one-hot degree features at 400


def clean_edges(edge_index: torch.Tensor, num_nodes: int, undirected: bool) -> torch.Tensor:
    """Remove self-loops (GATConv adds its own), deduplicate, optionally symmetrize. [2, E] -> [2, E']."""
    from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

    edge_index, _ = remove_self_loops(edge_index)
    return to_undirected(edge_index, num_nodes=num_nodes) if undirected else coalesce(edge_index, num_nodes=num_nodes)


def node_degree(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Incoming edges per node (= degree for undirected graphs). -> [n] long."""
    return torch.bincount(edge_index[1], minlength=num_nodes)


def degree_features(edge_index: torch.Tensor, num_nodes: int, width: int) -> torch.Tensor:
    """One-hot degree, degrees >= width - 1 share the last column (GraphMAE). -> [n, width]."""
    deg = node_degree(edge_index, num_nodes).clamp(max=width - 1)
    return F.one_hot(deg, width).float()


def laplacian_features(edge_index: torch.Tensor, num_nodes: int, width: int, name: str) -> torch.Tensor:
    """Eigenvectors 1..width of the symmetric normalized Laplacian (the constant one skipped),
    sign fixed so each vector's largest entry is positive, zero-padded for small graphs."""
    if num_nodes > 5000:
        raise GraphFormatError(f"{name}: {num_nodes} nodes is too many for dense Laplacian features; "
                               "use features='degree'")
    adj = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    adj[edge_index[0], edge_index[1]] = 1.0
    adj = ((adj + adj.t()) > 0).double()
    inv_sqrt = adj.sum(1).clamp(min=1).rsqrt()
    lap = torch.eye(num_nodes, dtype=torch.float64) - inv_sqrt[:, None] * adj * inv_sqrt[None, :]
    _, vectors = torch.linalg.eigh(lap)
    vectors = vectors[:, 1:width + 1]
    sign = torch.sign(vectors.gather(0, vectors.abs().argmax(0, keepdim=True)))
    vectors = vectors * torch.where(sign == 0, torch.ones_like(sign), sign)
    return F.pad(vectors.float(), (0, width - vectors.shape[1]))


def make_features(record: dict, kind: str, width: int) -> torch.Tensor:
    """The node features of a record as `kind` says, exactly `width` wide. -> [n, width]."""
    n, name = record["num_nodes"], record["name"]
    if kind == "auto":
        kind = "given" if record["x"] is not None else "degree"
    if kind == "given":
        if record["x"] is None:
            raise GraphFormatError(f"{name}: has no node features; set GraphDataset.features to 'degree', "
                                   "'identity' or 'laplacian'")
        if record["x"].shape[1] != width:
            raise GraphFormatError(f"{name}: nodes have {record['x'].shape[1]} features, "
                                   f"GraphDataset.feature_dim is {width}")
        return record["x"]
    if kind == "degree":
        return degree_features(record["edge_index"], n, width)
    if kind == "identity":
        if n > width:
            raise GraphFormatError(f"{name}: identity features need feature_dim >= {n} nodes, got {width}")
        return F.one_hot(torch.arange(n), width).float()
    if kind == "laplacian":
        return laplacian_features(record["edge_index"], n, width, name)
    raise ValueError(f"GraphDataset.features must be one of {FEATURE_KINDS}, got {kind!r}")


def default_width(records: List[dict], kind: str, degree_dim: Optional[int] = None) -> int:
    """feature_dim when not given: the files' width, degree_dim or GraphMAE's min(max degree,
    400) + 1 for one-hot degrees, the largest node count (identity) or 16 Laplacian eigenvectors."""
    given = {r["x"].shape[1] for r in records if r["x"] is not None}
    if kind in ("auto", "given") and given:
        if len(given) > 1:
            raise GraphFormatError(f"graphs have different feature widths {sorted(given)}")
        return given.pop()
    if kind in ("auto", "degree") and degree_dim is not None:
        return degree_dim
    if kind in ("auto", "degree"):
        max_deg = max(int(node_degree(r["edge_index"], r["num_nodes"]).max()) for r in records)
        return min(max_deg, GRAPHMAE_MAX_DEGREE) + 1
    if kind == "identity":
        return max(r["num_nodes"] for r in records)
    return 16
