"""Graph sources other than CSV folders (PyG .pt files and objects, networkx graphs and files),
and load_source, which reads any root into records.

Files are data, never code: a .pt is read by torch's weights-only unpickler (unimask/safe_load.py)
with PyG's data containers allowed, and a networkx pickle (.gpickle / .pkl / .pickle), which only
a full unpickle reads, is refused unless GraphDataset.trust_pickle=True. Sizes: a .pt's tensors
are checked from its archive directory before reading, and every graph's node and edge counts
before anything is built from them (modalities/graph/guards.py).
"""
from __future__ import annotations

import os
import pickle
from typing import List, Optional

import torch

from modalities.graph.csv_tables import NodeColumns, load_csv_collection, load_csv_graph
from modalities.graph.guards import GraphLimits, check_counts, check_pt_archive, pyg_data_classes
from modalities.graph.records import GraphFormatError, is_int, make_record
from unimask.safe_load import UnsafeFileError, torch_load

NX_EXTS = (".gml", ".graphml", ".gpickle", ".pkl", ".pickle")
PICKLE_EXTS = (".gpickle", ".pkl", ".pickle")
PT_EXTS = (".pt", ".pth")
SPLIT_MASKS = ("train", "val", "test")
TRUST_PICKLE = "GraphDataset.trust_pickle=True"


def load_pt(path: str, trust_pickle: bool = False, limits: GraphLimits = GraphLimits()) -> List[dict]:
    """torch.save of a PyG Data, a list of Data, a PyG dataset, or a dict with edge_index.
    Read as data (weights-only, PyG's data containers allowed); a file that needs a full
    unpickle is an UnsafeFileError naming GraphDataset.trust_pickle, which allows one."""
    check_pt_archive(path, limits.max_tensor_bytes)
    try:
        with torch.serialization.safe_globals(pyg_data_classes()):
            obj = torch_load(path, opt_in=TRUST_PICKLE, trust_pickle=trust_pickle)
    except UnsafeFileError:
        raise
    except Exception as err:
        raise GraphFormatError(f"{path}: cannot be read by torch.load ({type(err).__name__}: {err})") from err
    from torch_geometric.data import Dataset as PygDataset

    if isinstance(obj, (list, tuple)):
        items = list(obj)
    elif isinstance(obj, PygDataset):
        items = [obj[i] for i in range(len(obj))]
    else:
        items = [obj]
    if not items:
        raise GraphFormatError(f"{path}: holds an empty list of graphs")
    return [record_from_data(item, f"{path}[{i}]" if len(items) > 1 else path, limits)
            for i, item in enumerate(items)]


def record_from_data(data, name: str, limits: GraphLimits = GraphLimits()) -> dict:
    """PyG Data (or a dict with the same keys) -> record; y [num_nodes] = node labels, y [1] = graph label."""
    get = data.get if isinstance(data, dict) else (lambda key, default=None: getattr(data, key, default))
    edge_index, x, y = get("edge_index"), get("x"), get("y")
    if edge_index is None:
        raise GraphFormatError(f"{name}: no edge_index (got {type(data).__name__})")
    num_nodes = get("num_nodes")
    num_nodes = int(num_nodes) if num_nodes is not None else (x.shape[0] if x is not None else
                                                                int(edge_index.max()) + 1 if edge_index.numel() else 0)
    edge_count = int(edge_index.shape[-1]) if hasattr(edge_index, "shape") and len(edge_index.shape) else 0
    check_counts(name, num_nodes, edge_count, limits)  # before anything is allocated per node
    node_label, graph_label = None, -1
    if y is not None:
        y = torch.as_tensor(y).long()
        if y.numel() == 1 and num_nodes != 1:
            graph_label = int(y)
        elif y.dim() == 1 and y.numel() == num_nodes:
            node_label = y
        else:
            raise GraphFormatError(f"{name}: y has shape {tuple(y.shape)}; expected [num_nodes]={num_nodes} node "
                                   "labels or one graph label")
    record = make_record(name, torch.as_tensor(edge_index).long(), num_nodes, x, node_label, graph_label)
    for split in SPLIT_MASKS:  # Planetoid-style node splits: train_mask / val_mask / test_mask [num_nodes] bool
        mask = get(f"{split}_mask")
        if mask is not None:
            mask = torch.as_tensor(mask).bool()
            if mask.shape != (num_nodes,):
                raise GraphFormatError(f"{name}: {split}_mask has shape {tuple(mask.shape)}, expected [{num_nodes}]")
            record.setdefault("split_masks", {})[split] = mask
    return record


def load_networkx(source, label_key: Optional[str] = None, feature_key: str = "x", trust_pickle: bool = False,
                  limits: GraphLimits = GraphLimits()) -> dict:
    """An nx.Graph, or a .gml / .graphml / .gpickle file. Nodes keep the graph's order; the
    `label_key` node attribute gives labels (ints, or names mapped in sorted order; None = 'y',
    else 'label', which GML reserves for node names) and `feature_key` (a list of numbers per
    node) gives features. A pickle is read only with trust_pickle=True (it can run code)."""
    import networkx as nx

    name = source if isinstance(source, str) else f"<{type(source).__name__}>"
    keys = (label_key,) if label_key else ("y",) if name.lower().endswith(".gml") else ("y", "label")
    if isinstance(source, str) and source.lower().endswith(PICKLE_EXTS) and not trust_pickle:
        raise UnsafeFileError(f"{source}: a pickled graph can run code when it is read, so it is refused. If you trust "
                              f"this file, allow it with {TRUST_PICKLE} (or save the graph as .graphml / .gml)")
    if isinstance(source, str):
        try:
            if source.lower().endswith(".gml"):
                source = nx.read_gml(source, label=None)
            elif source.lower().endswith(".graphml"):
                source = nx.read_graphml(source)
            else:
                with open(source, "rb") as f:
                    source = pickle.load(f)
        except Exception as err:
            raise GraphFormatError(f"{name}: cannot be read as a networkx graph ({type(err).__name__}: {err})") from err
    if not isinstance(source, nx.Graph):
        raise GraphFormatError(f"{name}: holds a {type(source).__name__}, not a networkx graph")
    check_counts(name, source.number_of_nodes(), source.number_of_edges(), limits)
    nodes = list(source.nodes)
    index = {node: i for i, node in enumerate(nodes)}
    edges = torch.tensor([[index[u], index[v]] for u, v in source.edges()], dtype=torch.long).reshape(-1, 2).t()
    label_key = next((key for key in keys if any(key in source.nodes[n] for n in nodes)), None)
    raw_labels = [source.nodes[n].get(label_key) for n in nodes]
    labels = None
    if any(label is not None for label in raw_labels):
        names = sorted({str(v) for v in raw_labels if v is not None and not is_int(v)})
        labels = torch.tensor([-1 if v is None else int(v) if is_int(v) else names.index(str(v)) for v in raw_labels])
    x = None
    if nodes and feature_key in source.nodes[nodes[0]]:
        try:
            x = torch.tensor([list(source.nodes[n][feature_key]) for n in nodes], dtype=torch.float32)
        except (KeyError, TypeError, ValueError) as err:
            raise GraphFormatError(f"{name}: node attribute {feature_key!r} is missing or not a list of numbers "
                                   f"on some node ({err})") from err
    return make_record(name, edges, len(nodes), x, labels, -1)


def load_source(root, columns: NodeColumns = NodeColumns(), trust_pickle: bool = False,
                limits: GraphLimits = GraphLimits()) -> List[dict]:
    """One root (folder, .pt, networkx file or object, Data) -> records. trust_pickle: allow a
    full unpickle of files that need one; limits: the node / edge / tensor-size guards."""
    import networkx as nx

    if isinstance(root, nx.Graph):
        return [load_networkx(root, limits=limits)]
    if not isinstance(root, (str, os.PathLike)):  # Data, a list of Data, or a PyG dataset object
        from torch_geometric.data import Dataset as PygDataset

        items = [root[i] for i in range(len(root))] if isinstance(root, PygDataset) else \
            root if isinstance(root, (list, tuple)) else [root]
        return [record_from_data(item, f"<{type(item).__name__} {i}>", limits) for i, item in enumerate(items)]
    root = os.path.expanduser(str(root))
    if os.path.isdir(root):
        if os.path.isfile(os.path.join(root, "edges.csv")):
            records = [load_csv_graph(root, columns=columns)]
        else:
            records = load_csv_collection(root, columns)
        for record in records:  # CSV rows: their memory is bounded by the files' size, checked once read
            check_counts(record["name"], record["num_nodes"], record["edge_index"].shape[1], limits)
        return records
    if not os.path.exists(root):
        raise FileNotFoundError(f"graph root {root!r} does not exist")
    if root.lower().endswith(PT_EXTS):
        return load_pt(root, trust_pickle, limits)
    if root.lower().endswith(NX_EXTS):
        return [load_networkx(root, trust_pickle=trust_pickle, limits=limits)]
    raise GraphFormatError(f"{root}: unknown graph format (expected a folder with edges.csv, "
                           f"{'/'.join(PT_EXTS)} or {'/'.join(NX_EXTS)})")
