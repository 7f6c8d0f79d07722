"""What a graph file may make the loader build: node and edge counts, a .pt's tensor bytes, and the
PyG classes a weights-only load may construct.

A graph is loaded whole, once, in the main process; its node count then sizes every per-node
tensor (labels, made-up features: 'identity' is n x n). So a Data declaring num_nodes=1e12 beside
three edges, or a 2 MB deflated .pt declaring gigabytes of tensors, must be refused from what it
declares, with the binding that raises the limit (modalities/limits.py).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field

from modalities.limits import MAX_EDGES, MAX_NODES, MAX_TENSOR_BYTES, Limit


@dataclass(frozen=True)
class GraphLimits:
    """GraphDataset's size guards (its gin bindings of the same names)."""

    max_nodes: Limit = field(default_factory=lambda: Limit(MAX_NODES, "GraphDataset.max_nodes"))
    max_edges: Limit = field(default_factory=lambda: Limit(MAX_EDGES, "GraphDataset.max_edges"))
    max_tensor_bytes: Limit = field(default_factory=lambda: Limit(MAX_TENSOR_BYTES, "GraphDataset.max_tensor_bytes"))

    @classmethod
    def of(cls, max_nodes, max_edges, max_tensor_bytes) -> "GraphLimits":
        return cls(Limit(max_nodes, "GraphDataset.max_nodes"), Limit(max_edges, "GraphDataset.max_edges"),
                   Limit(max_tensor_bytes, "GraphDataset.max_tensor_bytes"))


def check_counts(name: str, num_nodes: int, num_edges: int, limits: GraphLimits):
    """A graph's declared node count and edge_index columns against the limits."""
    limits.max_nodes.check(name, "the graph", int(num_nodes), "nodes")
    limits.max_edges.check(name, "the graph", int(num_edges), "edges")


def check_pt_archive(path: str, max_bytes: Limit):
    """The bytes a torch.save archive declares (its members' uncompressed sizes, from the zip
    directory) against max_bytes, before torch.load allocates them. torch.save stores tensors
    uncompressed, so for its own files this is about the file's size; a crafted archive with
    deflated members can declare far more. The legacy (non-zip) format stores tensors raw: the
    file's size bounds it."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        total = sum(info.file_size for info in archive.infolist())
    max_bytes.check(path, "the torch archive (its tensors, uncompressed)", total, "bytes")


def pyg_data_classes() -> list:
    """The PyG classes a saved Data pickles beside its tensors that PyG does not register as safe
    itself (it registers Data, HeteroData, TemporalData): its attribute descriptors and storages.
    Plain data containers: none calls anything but its own constructor or a dict update."""
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import EdgeStorage, GlobalStorage, NodeStorage

    return [DataEdgeAttr, DataTensorAttr, GlobalStorage, NodeStorage, EdgeStorage]
