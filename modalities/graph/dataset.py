"""GraphDataset: graphs from any source as items (whole graphs, or k-hop sub-graphs of big
ones), their splits, and the padded batches the adapter reads."""
from __future__ import annotations

import math
import os
from typing import List, Optional, Sequence, Union

import gin
import torch

from modalities.graph.csv_tables import NodeColumns
from modalities.graph.features import FEATURE_KINDS, clean_edges, default_width, make_features
from modalities.graph.guards import GraphLimits
from modalities.graph.sampling import sample_subgraph
from modalities.graph.sources import load_source
from modalities.limits import MAX_EDGES, MAX_NODES, MAX_TENSOR_BYTES
from unimask.data import SampleDataset
from unimask.files import NoSplitError, as_roots, check_split, resolve_split, split_folders


@gin.configurable
class GraphDataset(SampleDataset):
    """Graphs from `root` (see the module docstring for formats, features and sampling).

    root: folder(s) / .pt / .gml / .graphml / .gpickle, an nx.Graph, a Data or list of Data.
    features: 'auto' | 'given' | 'degree' | 'identity' | 'laplacian'. feature_dim: None = the
    width the data gives (the files' own columns; made-up features at their default width), a
    number = a check that fails naming both widths. degree_dim: width of one-hot degree
    features. CSV folders: id_column, label_column, name_column, feature_columns (None = every
    numeric column, text columns skipped and reported) and features_file (see NodeColumns).
    task: 'auto' (graph if graph labels exist) | 'node' | 'graph'.
    sampling: 'full' | 'khop' (num_hops, seeds_per_item, num_neighbors per hop or None = all).
    split: 'train' | 'val' | 'test': split folders of graph collections (root/train, root/test),
    `test_root`, or the Data's own train_mask / val_mask / test_mask (Planetoid), which keep the
    node labels of that split only (the rest become -1: the graph is seen whole, transductively).
    trust_pickle: files are read as data (a .pt weights-only, PyG's containers allowed); True
    allows a full unpickle, which can run code, of a .pt that needs one and of .gpickle / .pkl /
    .pickle files (refused otherwise): only for files you trust.
    max_nodes / max_edges / max_tensor_bytes: size guards on what a file declares, checked before
    anything is built from it (modalities/graph/guards.py).
    """

    def __init__(self, root=gin.REQUIRED, features: str = "auto", feature_dim: Optional[int] = None,
                 undirected: bool = True, task: str = "auto", sampling: str = "full", num_hops: int = 2,
                 seeds_per_item: int = 64, num_neighbors: Optional[Sequence[int]] = None,
                 sampler_backend: str = "auto", skip_bad_samples: bool = False, degree_dim: Optional[int] = None,
                 id_column: Union[str, int] = "id", label_column: Optional[Union[str, int]] = "label",
                 name_column: Optional[Union[str, int]] = "name",
                 feature_columns: Optional[Sequence[Union[str, int]]] = None, features_file: Optional[str] = None,
                 split: str = "train", test_root=None, trust_pickle: bool = False,
                 max_nodes: Optional[int] = MAX_NODES, max_edges: Optional[int] = MAX_EDGES,
                 max_tensor_bytes: Optional[int] = MAX_TENSOR_BYTES):
        if features not in FEATURE_KINDS:
            raise ValueError(f"GraphDataset.features must be one of {FEATURE_KINDS}, got {features!r}")
        if sampling not in ("full", "khop"):
            raise ValueError(f"GraphDataset.sampling must be 'full' or 'khop', got {sampling!r}")
        paths = isinstance(root, (str, os.PathLike)) or isinstance(root, (list, tuple)) and \
            all(isinstance(r, (str, os.PathLike)) for r in root)
        roots = as_roots(root) if paths or root is None else [root]
        columns = NodeColumns(id_column, label_column, name_column,
                              None if feature_columns is None else tuple(feature_columns), features_file)
        roots, self.source = graph_split_roots(roots, check_split(split, "GraphDataset.split"), test_root)
        limits = GraphLimits.of(max_nodes, max_edges, max_tensor_bytes)
        records = [record for r in roots for record in load_source(r, columns, trust_pickle, limits)]
        if self.source is None:  # no split folders: the graphs' own node masks, if they have them
            self.source = apply_split_masks(records, split)
        for record in records:
            record["edge_index"] = clean_edges(record["edge_index"], record["num_nodes"], undirected)
        self.feature_dim = feature_dim or default_width(records, features, degree_dim)
        for record in records:
            record["x"] = make_features(record, features, self.feature_dim)
        self.task = resolve_task(task, records)
        if sampling == "khop" and self.task == "graph":
            raise ValueError("GraphDataset.sampling='khop' cuts graphs into pieces; graph labels need sampling='full'")
        if num_neighbors is not None and len(num_neighbors) != num_hops:
            raise ValueError(f"GraphDataset.num_neighbors {list(num_neighbors)} needs one entry per hop ({num_hops})")
        self.records, self.sampling, self.skip_bad_samples = records, sampling, skip_bad_samples
        self.num_hops, self.seeds_per_item, self.sampler_backend = num_hops, seeds_per_item, sampler_backend
        self.num_neighbors = None if num_neighbors is None else list(num_neighbors)
        self.items = [(g, 0) for g in range(len(records))] if sampling == "full" else \
            [(g, c) for g, r in enumerate(records) for c in range(math.ceil(r["num_nodes"] / seeds_per_item))]

    def describe(self, index):
        graph, chunk = self.items[index]
        return self.records[graph]["name"] + (f" (sub-graph {chunk})" if self.sampling == "khop" else "")

    def load(self, index) -> dict:
        graph, _ = self.items[index]
        record = self.records[graph]
        n = record["num_nodes"]
        if self.sampling == "full":
            node_id, edges, center = torch.arange(n), record["edge_index"], torch.ones(n, dtype=torch.bool)
        else:  # random seeds: the sampler seeds torch per (index, seed), so this is reproducible
            seeds = torch.randperm(n)[: self.seeds_per_item]
            node_id, edges, center = sample_subgraph(record["edge_index"], n, seeds, self.num_hops,
                                                     self.num_neighbors, self.sampler_backend)
        return {"x": record["x"][node_id], "edge_index": edges, "node_label": record["node_label"][node_id],
                "graph_label": record["graph_label"], "center": center, "node_id": node_id, "graph_index": graph}

    def collate(self, items: List[dict]) -> dict:
        """Items -> one padded batch (see the module docstring); edges offset into B*Nmax."""
        from torch_geometric.utils import to_dense_batch

        sizes = torch.tensor([item["x"].shape[0] for item in items])
        batch_vec = torch.repeat_interleave(torch.arange(len(items)), sizes)
        x, valid = to_dense_batch(torch.cat([item["x"] for item in items]), batch_vec)  # [B, Nmax, F]
        n_max = x.shape[1]
        edge_index = torch.cat([item["edge_index"] + b * n_max for b, item in enumerate(items)], 1)

        def dense(key, fill):
            return to_dense_batch(torch.cat([item[key] for item in items]), batch_vec, fill_value=fill)[0]

        graph_labels = torch.tensor([item["graph_label"] for item in items])
        label = graph_labels if self.task == "graph" else dense("node_label", -1)  # [B] or [B, Nmax]
        out = {"x": x, "valid": valid, "edge_index": edge_index, "label": label, "center": dense("center", False),
               "node_id": dense("node_id", -1), "graph_index": torch.tensor([item["graph_index"] for item in items])}
        if "n_bad" in items[0]:
            out["n_bad"] = torch.tensor([item["n_bad"] for item in items])
        return out


def resolve_task(task: str, records: List[dict]) -> str:
    has_graph_labels = any(r["graph_label"] >= 0 for r in records)
    if task == "auto":
        return "graph" if has_graph_labels else "node"
    if task not in ("node", "graph"):
        raise ValueError(f"GraphDataset.task must be 'auto', 'node' or 'graph', got {task!r}")
    return task


def graph_split_roots(roots: list, split: str, test_root) -> tuple:
    """-> (roots of the split, description | None when the split must come from node masks)."""
    if split != "train" and test_root is not None:
        return as_roots(test_root), f"{split}: {test_root}"
    chosen = []
    for r in roots:
        if isinstance(r, (str, os.PathLike)) and os.path.isdir(os.path.expanduser(str(r))) and \
                split_folders(os.path.expanduser(str(r))):
            chosen.append(resolve_split(r, split)[0])
        else:
            chosen.append(r)
    if any(c is not r for c, r in zip(chosen, roots)):
        return chosen, f"{split}: " + ", ".join(map(str, chosen))
    return roots, None


def apply_split_masks(records: List[dict], split: str) -> str:
    """Node labels outside a graph's `<split>_mask` become -1; a split nobody has is a NoSplitError
    (split 'train' of graphs without masks is the whole data)."""
    masked = [r for r in records if split in r.get("split_masks", {})]
    if not masked:
        if split != "train":
            raise NoSplitError(f"{records[0]['name']}: no {split} split (no split folders, no {split}_mask)")
        return "train: all nodes"
    for record in masked:
        record["node_label"] = torch.where(record["split_masks"][split], record["node_label"], -1)
    return f"{split}: nodes in {split}_mask"


@gin.configurable
def graph_feature_width(dataset=gin.REQUIRED) -> int:
    """The node-feature width of a built GraphDataset, so recipes bind GraphAdapter.in_dim from
    the data instead of a number the user must match by hand (see gin/graph_mae.gin)."""
    return dataset.feature_dim
