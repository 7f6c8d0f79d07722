"""Graphs: PyG .pt files, edge-list CSV folders and networkx graphs -> node tokens (GraphMAE).

One node is one token: Tokens.patches are node features [B, N, F], padded to the largest
graph of the batch (`valid`), and Tokens.extras['edge_index'] holds the edges into the
flattened B*N tokens, which GNNEncoder / GNNDecoder restrict to the tokens they see.

Conventions (GraphMAE's, THUDM/GraphMAE data_util.py):
- Self-loops in the input are removed; GATConv adds one self-loop per node in every layer
  (GraphMAE's remove_self_loops + add_self_loops), GINConv has its own (1 + eps) x term.
  So an isolated node (no edges, or all neighbours hidden) still sees itself and trains.
- Edges are made undirected by default (`undirected=True`); edge weights are read and unused.
- Nodes without features get `features='degree'`: one-hot of the degree, capped at
  feature_dim - 1 (GraphMAE's choice for feature-less TU data, cap 400); 'identity' is a
  one-hot node index (small single graphs); 'laplacian' the first non-trivial eigenvectors
  of the normalized Laplacian. 'auto' = the file's own features if it has any, else degree.
- Node labels: nodes.csv `label` / Data.y [num_nodes] / networkx attribute, -1 = unlabeled.
  Graph labels: labels.csv (graph,label) next to one sub-folder per graph / Data.y [1].

Batches (GraphDataset.collate): {'x' [B, Nmax, F], 'valid' [B, Nmax], 'edge_index' [2, E]
into B*Nmax, 'label' [B, Nmax] (node task) or [B] (graph task), 'center' [B, Nmax] (the seed
nodes of a sampled sub-graph; all nodes for whole graphs), 'node_id' [B, Nmax] (index in the
source graph, -1 on padding), 'graph_index' [B]}.

Sampling: 'full' gives one whole graph per item, so a single-graph data set has length 1 and
the trainer's sampler cycles it: batch 4 = 4 copies, each masked differently (4 masked views
per step). 'khop' gives the k-hop sub-graph around `seeds_per_item` random seed nodes (all
neighbours with torch_geometric's k_hop_subgraph, or `num_neighbors` per hop like
NeighborLoader: pyg-lib's sampler when it is installed, the same uniform fan-out in torch
otherwise), so an epoch of ceil(N / seeds_per_item) items covers a large graph in pieces.
"""
from __future__ import annotations

import csv
import math
import os
import pickle
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import gin
import torch
import torch.nn.functional as F
from torch import nn

from modalities.base import ModalityAdapter
from unimask.data import SampleDataset
from unimask.files import NoSplitError, as_roots, check_split, resolve_split, split_folders
from unimask.losses import SCELoss
from unimask.tokens import select_ids
from unimask.pos import sincos_pos
from unimask.tokens import Tokens, gather_tokens

NX_EXTS = (".gml", ".graphml", ".gpickle", ".pkl", ".pickle")
PT_EXTS = (".pt", ".pth")
FEATURE_KINDS = ("auto", "given", "degree", "identity", "laplacian")
GRAPHMAE_MAX_DEGREE = 400  # GraphMAE caps one-hot degree features at 400
SPLIT_MASKS = ("train", "val", "test")


class GraphFormatError(ValueError):
    """A graph source is malformed; the message names the file and the problem."""


# ---- reading sources -> records {'name', 'x' [n, F]|None, 'edge_index' [2, E], 'node_label' [n], 'graph_label'}
def read_table(path: str) -> tuple:
    """CSV with a header row -> (lower-cased column names, rows of strings); blank lines skipped."""
    if not os.path.isfile(path):
        raise GraphFormatError(f"{path}: file not found")
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise GraphFormatError(f"{path}: the file is empty (expected a header row)")
    header = [h.strip().lower() for h in rows[0]]
    return header, [[cell.strip() for cell in row] for row in rows[1:]]


def to_int(cell: str, path: str, line: int, what: str) -> int:
    """'7' or '7.0' -> 7; anything else is an error naming the file and line."""
    try:
        value = float(cell)
    except ValueError:
        value = float("nan")
    if not value.is_integer():
        raise GraphFormatError(f"{path}:{line}: {what} {cell!r} is not an integer")
    return int(value)


def read_edges(path: str) -> torch.Tensor:
    """edges.csv (src,dst[,weight]) -> [2, E] long of node ids as written."""
    header, rows = read_table(path)
    names = {"src": ("src", "source", "from", "u"), "dst": ("dst", "target", "to", "v")}
    cols = {}
    for key, options in names.items():
        found = [i for i, h in enumerate(header) if h in options]
        if not found:
            raise GraphFormatError(f"{path}: header {header} has no {key} column (one of {options})")
        cols[key] = found[0]
    edges = []
    for i, row in enumerate(rows):
        if len(row) <= max(cols.values()):
            raise GraphFormatError(f"{path}:{i + 2}: row {row} has too few columns")
        edges.append([to_int(row[cols["src"]], path, i + 2, "src"), to_int(row[cols["dst"]], path, i + 2, "dst")])
    return torch.tensor(edges, dtype=torch.long).reshape(-1, 2).t().contiguous()


@dataclass(frozen=True)
class NodeColumns:
    """Which columns of nodes.csv mean what (names, case-insensitive, or 0-based indices).

    features=None takes every numeric column that is not the id, label or name column and
    skips (and reports) text columns; a list takes exactly those, and a text cell in one of them
    is an error naming the file, line and column. features_file: a separate table of node
    features (`id` + feature columns, or one row per node in nodes.csv order); None looks for
    node_features.csv / features.csv beside nodes.csv. When there is one, the features come
    from it alone (`features` then picks its columns) and nodes.csv gives ids and labels."""
    id: Union[str, int] = "id"
    label: Optional[Union[str, int]] = "label"
    name: Optional[Union[str, int]] = "name"
    features: Optional[Sequence[Union[str, int]]] = None
    features_file: Optional[str] = None


FEATURE_FILES = ("node_features.csv", "features.csv")


def column_index(header: List[str], column, path: str, what: str, required: bool = True) -> Optional[int]:
    """A column given by name or index -> its index; a missing required one is named."""
    if column is None:
        return None
    if isinstance(column, int):
        if not -len(header) <= column < len(header):
            raise GraphFormatError(f"{path}: {what} column index {column} is out of range for header {header}")
        return column % len(header)
    name = str(column).strip().lower()
    if name in header:
        return header.index(name)
    if required:
        raise GraphFormatError(f"{path}: header {header} has no {what} column {column!r}")
    return None


def is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def read_feature_columns(path: str, header: List[str], rows: List[List[str]], skip: Sequence[int],
                         chosen: Optional[Sequence]) -> tuple:
    """Feature columns of a table -> (features [n, F] float | None, names of skipped text columns)."""
    if chosen is not None:
        cols = [column_index(header, c, path, "feature") for c in chosen]
        skipped = []
    else:
        candidates = [i for i in range(len(header)) if i not in skip]
        cols = [i for i in candidates if all(is_number(row[i]) for row in rows if i < len(row) and row[i] != "")]
        skipped = [header[i] for i in candidates if i not in cols]
    if not cols:
        return None, skipped
    feats = []
    for line, row in enumerate(rows, 2):
        if any(row[c] == "" for c in cols):
            raise GraphFormatError(f"{path}:{line}: missing feature value(s) in row {row}")
        try:
            feats.append([float(row[c]) for c in cols])
        except ValueError:
            bad = next(c for c in cols if not is_number(row[c]))
            raise GraphFormatError(f"{path}:{line}: feature column {header[bad]!r} holds {row[bad]!r}, "
                                   "not a number") from None
    return torch.tensor(feats, dtype=torch.float32), skipped


def read_nodes(path: str, classes: Optional[List[str]], columns: NodeColumns = NodeColumns(),
               with_features: bool = True) -> tuple:
    """nodes.csv (id[,label][,name][,feature columns...]) -> (ids [n] long, labels [n] long (-1 if
    none), features [n, F] float | None). Labels may be ints or class names from classes.txt.
    with_features=False: the features live in a features file, nodes.csv gives ids and labels."""
    header, rows = read_table(path)
    id_col = column_index(header, columns.id, path, "id")
    label_col = column_index(header, columns.label, path, "label", required=False)
    name_col = column_index(header, columns.name, path, "name", required=False)
    for line, row in enumerate(rows, 2):
        if len(row) != len(header):
            raise GraphFormatError(f"{path}:{line}: {len(row)} columns, the header has {len(header)}")
    ids = [to_int(row[id_col], path, line, "node id") for line, row in enumerate(rows, 2)]
    labels = [parse_label(row[label_col], classes, path, line) if label_col is not None else -1
              for line, row in enumerate(rows, 2)]
    if len(set(ids)) != len(ids):
        raise GraphFormatError(f"{path}: node ids repeat")
    if not with_features:
        return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long), None
    skip = [c for c in (id_col, label_col, name_col) if c is not None]
    x, skipped = read_feature_columns(path, header, rows, skip, columns.features)
    if skipped:
        warnings.warn(f"{path}: text column(s) {skipped} are not node features and are ignored "
                      "(choose columns with GraphDataset.feature_columns)")
    return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long), x


def read_features_file(path: str, ids: torch.Tensor, columns: NodeColumns) -> torch.Tensor:
    """A separate node-feature table -> [n, F] rows in the order of `ids` (nodes.csv order): by
    its id column when it has one, else row by row."""
    header, rows = read_table(path)
    id_col = column_index(header, columns.id, path, "id", required=False)
    x, skipped = read_feature_columns(path, header, rows, [] if id_col is None else [id_col], columns.features)
    if x is None:
        raise GraphFormatError(f"{path}: no numeric feature columns (text columns: {skipped})")
    if id_col is None:
        if len(rows) != len(ids):
            raise GraphFormatError(f"{path}: {len(rows)} feature rows for {len(ids)} nodes (and no id column)")
        return x
    file_ids = torch.tensor([to_int(row[id_col], path, line, "node id") for line, row in enumerate(rows, 2)])
    order = {int(i): r for r, i in enumerate(file_ids.tolist())}
    missing = [int(i) for i in ids.tolist() if int(i) not in order]
    if missing:
        raise GraphFormatError(f"{path}: no features for node id(s) {missing[:5]}")
    return x[torch.tensor([order[int(i)] for i in ids.tolist()])]


def parse_label(cell: str, classes: Optional[List[str]], path: str, line: int) -> int:
    """'' or '-1' -> -1 (unlabeled); an integer; or a class name listed in classes.txt."""
    if cell in ("", "-1"):
        return -1
    if classes and cell in classes:
        return classes.index(cell)
    return to_int(cell, path, line, "label")


def read_classes(folder: str) -> Optional[List[str]]:
    path = os.path.join(folder, "classes.txt")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def find_features_file(folder: str, columns: NodeColumns) -> Optional[str]:
    if columns.features_file is not None:
        path = columns.features_file if os.path.isabs(columns.features_file) else os.path.join(folder, columns.features_file)
        if not os.path.isfile(path):
            raise GraphFormatError(f"{path}: node features file not found (GraphDataset.features_file)")
        return path
    return next((os.path.join(folder, f) for f in FEATURE_FILES if os.path.isfile(os.path.join(folder, f))), None)


def load_csv_graph(folder: str, classes: Optional[List[str]] = None, graph_label: int = -1,
                   columns: NodeColumns = NodeColumns()) -> dict:
    """A folder with edges.csv (src,dst[,weight]), optional nodes.csv (id[,label][,name][,features])
    and an optional features file (see NodeColumns).

    Without nodes.csv the nodes are 0..max id. Edge endpoints must be listed node ids.
    """
    edges_path, nodes_path = os.path.join(folder, "edges.csv"), os.path.join(folder, "nodes.csv")
    classes = classes or read_classes(folder)
    edges = read_edges(edges_path)
    features_path = find_features_file(folder, columns)
    if os.path.isfile(nodes_path):
        ids, labels, x = read_nodes(nodes_path, classes, columns, with_features=features_path is None)
        if len(ids) == 0:
            raise GraphFormatError(f"{nodes_path}: the graph has no nodes")
        if features_path is not None:
            x = read_features_file(features_path, ids, columns)
        edges = rows_of_ids(edges, ids, edges_path, nodes_path)
        num_nodes = len(ids)
    else:
        if edges.numel() == 0:
            raise GraphFormatError(f"{edges_path}: the graph has no nodes (no edges and no nodes.csv)")
        if int(edges.min()) < 0:
            raise GraphFormatError(f"{edges_path}: negative node id {int(edges.min())}")
        num_nodes, labels, x = int(edges.max()) + 1, None, None
        if features_path is not None:
            x = read_features_file(features_path, torch.arange(num_nodes), columns)
    return make_record(folder, edges, num_nodes, x, labels, graph_label)


def rows_of_ids(edges: torch.Tensor, ids: torch.Tensor, edges_path: str, nodes_path: str) -> torch.Tensor:
    """Node ids as written -> row numbers in nodes.csv; an id that is not listed is an error. [2, E] -> [2, E]."""
    sorted_ids, order = ids.sort()
    pos = torch.searchsorted(sorted_ids, edges).clamp(max=len(ids) - 1)
    known = sorted_ids[pos] == edges
    if not bool(known.all()):
        unknown = edges[~known].unique()[:5].tolist()
        raise GraphFormatError(f"{edges_path}: edge endpoint(s) {unknown} are not node ids in {nodes_path} "
                               f"({len(ids)} nodes): edge index out of range")
    return order[pos]


def load_csv_collection(folder: str, columns: NodeColumns = NodeColumns()) -> List[dict]:
    """One sub-folder per graph (each with edges.csv), graph labels from labels.csv (graph,label)."""
    classes = read_classes(folder)
    labels_path = os.path.join(folder, "labels.csv")
    graph_labels = {}
    if os.path.isfile(labels_path):
        header, rows = read_table(labels_path)
        if "graph" not in header or "label" not in header:
            raise GraphFormatError(f"{labels_path}: header {header} needs 'graph' and 'label' columns")
        g, l = header.index("graph"), header.index("label")
        graph_labels = {row[g]: parse_label(row[l], classes, labels_path, i + 2) for i, row in enumerate(rows)}
    subs = sorted(d for d in os.listdir(folder) if os.path.isfile(os.path.join(folder, d, "edges.csv")))
    if not subs:
        raise GraphFormatError(f"{folder}: no edges.csv, and no sub-folders with edges.csv")
    missing = sorted(set(graph_labels) - set(subs))
    if missing:
        raise GraphFormatError(f"{labels_path}: graphs {missing[:5]} have no folder with edges.csv")
    return [load_csv_graph(os.path.join(folder, d), classes, graph_labels.get(d, -1), columns) for d in subs]


def load_pt(path: str) -> List[dict]:
    """torch.save of a PyG Data, a list of Data, a PyG dataset, or a dict with edge_index.
    Unpickles: load trusted files only."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
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
    return [record_from_data(item, f"{path}[{i}]" if len(items) > 1 else path) for i, item in enumerate(items)]


def record_from_data(data, name: str) -> dict:
    """PyG Data (or a dict with the same keys) -> record; y [num_nodes] = node labels, y [1] = graph label."""
    get = data.get if isinstance(data, dict) else (lambda key, default=None: getattr(data, key, default))
    edge_index, x, y = get("edge_index"), get("x"), get("y")
    if edge_index is None:
        raise GraphFormatError(f"{name}: no edge_index (got {type(data).__name__})")
    num_nodes = get("num_nodes")
    num_nodes = int(num_nodes) if num_nodes is not None else (x.shape[0] if x is not None else
                                                                int(edge_index.max()) + 1 if edge_index.numel() else 0)
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


def load_networkx(source, label_key: Optional[str] = None, feature_key: str = "x") -> dict:
    """An nx.Graph, or a .gml / .graphml / .gpickle file. Nodes keep the graph's order; the
    `label_key` node attribute gives labels (ints, or names mapped in sorted order; None = 'y',
    else 'label', which GML reserves for node names) and `feature_key` (a list of numbers per
    node) gives features."""
    import networkx as nx

    name = source if isinstance(source, str) else f"<{type(source).__name__}>"
    keys = (label_key,) if label_key else ("y",) if name.lower().endswith(".gml") else ("y", "label")
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


def load_source(root, columns: NodeColumns = NodeColumns()) -> List[dict]:
    """One root (folder, .pt, networkx file or object, Data) -> records."""
    import networkx as nx

    if isinstance(root, nx.Graph):
        return [load_networkx(root)]
    if not isinstance(root, (str, os.PathLike)):  # Data, a list of Data, or a PyG dataset object
        from torch_geometric.data import Dataset as PygDataset

        items = [root[i] for i in range(len(root))] if isinstance(root, PygDataset) else \
            root if isinstance(root, (list, tuple)) else [root]
        return [record_from_data(item, f"<{type(item).__name__} {i}>") for i, item in enumerate(items)]
    root = os.path.expanduser(str(root))
    if os.path.isdir(root):
        if os.path.isfile(os.path.join(root, "edges.csv")):
            return [load_csv_graph(root, columns=columns)]
        return load_csv_collection(root, columns)
    if not os.path.exists(root):
        raise FileNotFoundError(f"graph root {root!r} does not exist")
    if root.lower().endswith(PT_EXTS):
        return load_pt(root)
    if root.lower().endswith(NX_EXTS):
        return [load_networkx(root)]
    raise GraphFormatError(f"{root}: unknown graph format (expected a folder with edges.csv, "
                           f"{'/'.join(PT_EXTS)} or {'/'.join(NX_EXTS)})")


# ---- structure and default features ----------------------------------------------------------
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


# ---- sub-graph sampling --------------------------------------------------------------------------
def pyg_neighbor_sampler_available() -> bool:
    import torch_geometric.typing as pyg_typing

    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


def fanout_torch(edge_index: torch.Tensor, num_nodes: int, seeds: torch.Tensor, num_neighbors: Sequence[int]):
    """Uniform neighbour sampling without replacement, hop by hop (what NeighborLoader does):
    each frontier node adds up to num_neighbors[hop] random neighbours (-1 = all). -> node ids, seeds first."""
    order = torch.argsort(edge_index[1], stable=True)
    sources = edge_index[0, order]  # neighbours grouped by the node they point to
    rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
    rowptr[1:] = torch.cumsum(torch.bincount(edge_index[1], minlength=num_nodes), 0)
    seen = torch.zeros(num_nodes, dtype=torch.bool)
    seen[seeds] = True
    nodes, frontier = [seeds], seeds
    for fanout in num_neighbors:
        counts = rowptr[frontier + 1] - rowptr[frontier]  # [F]
        segment = torch.repeat_interleave(torch.arange(len(frontier)), counts)  # [S]
        first = torch.cumsum(counts, 0) - counts
        slot = rowptr[frontier][segment] + torch.arange(len(segment)) - first[segment]
        if fanout >= 0:  # random order within each segment, keep the first `fanout`
            shuffled = torch.argsort(segment.double() + torch.rand(len(segment), dtype=torch.float64))
            rank = torch.arange(len(segment)) - first[segment[shuffled]]
            slot = slot[shuffled[rank < fanout]]
        found = sources[slot]
        new = found[~seen[found]].unique()
        seen[new] = True
        nodes.append(new)
        frontier = new
    return torch.cat(nodes)


def fanout_pyg(edge_index: torch.Tensor, num_nodes: int, seeds: torch.Tensor, num_neighbors: Sequence[int]):
    """The same with torch_geometric's NeighborSampler (needs pyg-lib or torch-sparse). -> node ids, seeds first."""
    from torch_geometric.data import Data
    from torch_geometric.sampler import NeighborSampler, NodeSamplerInput

    sampler = NeighborSampler(Data(edge_index=edge_index, num_nodes=num_nodes), list(num_neighbors))
    return sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=seeds)).node


def sample_subgraph(edge_index: torch.Tensor, num_nodes: int, seeds: torch.Tensor, num_hops: int,
                    num_neighbors: Optional[Sequence[int]], backend: str = "auto") -> tuple:
    """Nodes around `seeds` -> (node ids [n'], induced edges [2, E'] relabeled, center [n'] bool)."""
    from torch_geometric.utils import k_hop_subgraph, subgraph

    if num_neighbors is None:
        subset, edges, mapping, _ = k_hop_subgraph(seeds, num_hops, edge_index, relabel_nodes=True,
                                                   num_nodes=num_nodes)
        center = torch.zeros(len(subset), dtype=torch.bool)
        center[mapping] = True
        return subset, edges, center
    if backend not in ("auto", "torch", "pyg"):
        raise ValueError(f"GraphDataset.sampler_backend must be 'auto', 'torch' or 'pyg', got {backend!r}")
    if backend == "pyg" and not pyg_neighbor_sampler_available():
        raise ImportError("GraphDataset.sampler_backend='pyg' needs pyg-lib or torch-sparse (NeighborLoader's "
                          "sampler); install one or use sampler_backend='torch'")
    use_pyg = backend == "pyg" or backend == "auto" and pyg_neighbor_sampler_available()
    subset = (fanout_pyg if use_pyg else fanout_torch)(edge_index, num_nodes, seeds, num_neighbors)
    edges, _ = subgraph(subset, edge_index, relabel_nodes=True, num_nodes=num_nodes)
    center = torch.zeros(len(subset), dtype=torch.bool)
    center[: len(seeds)] = True  # both samplers list the seeds first
    return subset, edges, center


# ---- dataset -----------------------------------------------------------------------------------
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
    """

    def __init__(self, root=gin.REQUIRED, features: str = "auto", feature_dim: Optional[int] = None,
                 undirected: bool = True, task: str = "auto", sampling: str = "full", num_hops: int = 2,
                 seeds_per_item: int = 64, num_neighbors: Optional[Sequence[int]] = None,
                 sampler_backend: str = "auto", skip_bad_samples: bool = False, degree_dim: Optional[int] = None,
                 id_column: Union[str, int] = "id", label_column: Optional[Union[str, int]] = "label",
                 name_column: Optional[Union[str, int]] = "name",
                 feature_columns: Optional[Sequence[Union[str, int]]] = None, features_file: Optional[str] = None,
                 split: str = "train", test_root=None):
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
        records = [record for r in roots for record in load_source(r, columns)]
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


# ---- adapter -----------------------------------------------------------------------------------
@gin.configurable
class GraphAdapter(ModalityAdapter):
    """Nodes -> tokens. embed: one Linear from in_dim features to the encoder width (the
    [MASK] token of replace mode lives at that width). pos: 'none' (zeros; a GNN needs no
    position, and node order is arbitrary) or 'sincos' of the node index.

    edge_mask_ratio > 0 hides that fraction of the (undirected) edges while training: they
    leave extras['edge_index'] and are listed in extras['masked_edge_index'] for
    EdgeReconstruction to predict; evaluation always sees every edge.
    """

    batch_key = "x"

    def __init__(self, in_dim: int = gin.REQUIRED, dim: int = 512, pos: str = "none", edge_mask_ratio: float = 0.0):
        super().__init__()
        if pos not in ("none", "sincos"):
            raise ValueError(f"GraphAdapter.pos must be 'none' or 'sincos', got {pos!r}")
        if not 0.0 <= edge_mask_ratio < 1.0:
            raise ValueError(f"GraphAdapter.edge_mask_ratio must lie in [0, 1), got {edge_mask_ratio}")
        self.in_dim, self.target_dim, self.pos_kind, self.edge_mask_ratio = in_dim, in_dim, pos, edge_mask_ratio
        self.proj = nn.Linear(in_dim, dim)
        self.loss = SCELoss(alpha=3.0)

    def tokenize(self, batch) -> Tokens:
        x = batch["x"]  # [B, N, F]
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"graph batch x has shape {tuple(x.shape)}; GraphAdapter.in_dim is {self.in_dim} "
                             "(bind it to GraphDataset.feature_dim)")
        b, n, _ = x.shape
        valid = batch.get("valid")
        valid = torch.ones(b, n, dtype=torch.bool, device=x.device) if valid is None else valid.bool()
        coords = torch.arange(n, device=x.device, dtype=torch.float32).view(1, n, 1).expand(b, n, 1)
        extras = {"edge_index": batch["edge_index"]}
        if self.training and self.edge_mask_ratio > 0:
            extras["edge_index"], extras["masked_edge_index"] = hide_edges(batch["edge_index"], self.edge_mask_ratio)
        return Tokens(x.float(), coords, valid, extras=extras)

    def embed(self, patches, tokens, ids):  # [B, K, F] -> [B, K, D]
        return self.proj(patches)

    def pos(self, coords, dim):  # [..., 1] -> [..., dim]
        if self.pos_kind == "none":
            return coords.new_zeros(*coords.shape[:-1], dim)
        return sincos_pos(coords, dim)

    def labels(self, batch):
        """Node labels [B, N] (-1 unlabeled or padding) or graph labels [B]."""
        return batch.get("label")

    def render(self, tokens, pred, mask, path):
        """Sample 0 as input | masked | reconstruction: nodes at a fixed spring layout, coloured
        by their strongest feature (the degree bucket for one-hot degree), hidden ones grey,
        reconstructed ones by the strongest predicted feature; title = mean cosine on hidden nodes."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import networkx as nx

        n = int(tokens.valid_mask()[0].sum())
        edges = tokens.extras["edge_index"]
        edges = edges[:, (edges[0] < n) & (edges[1] < n)].t().tolist()  # sample 0 occupies tokens 0..n-1
        graph = nx.Graph(edges)
        graph.add_nodes_from(range(n))
        layout = nx.spring_layout(graph, seed=0)
        if pred.shape[-1] < tokens.patches.shape[-1]:
            raise NotImplementedError("the prediction is not in node-feature space (a latent-only target)")
        x, hidden = tokens.patches[0, :n].float(), mask.masked[0, :n]
        p = pred[0, :n, : x.shape[1]].float()  # with_input teachers put the features first
        cos = F.cosine_similarity(p[hidden], x[hidden], dim=-1).mean() if bool(hidden.any()) else torch.tensor(1.0)
        strongest = x.argmax(1)
        recon = torch.where(hidden, p.argmax(1), strongest)
        top = max(1, int(torch.maximum(strongest.max(), recon.max())))  # one colour scale for all panels
        colour = [plt.cm.viridis(c / top) for c in strongest.tolist()]
        panels = (colour, ["lightgrey" if h else c for h, c in zip(hidden.tolist(), colour)],
                  [plt.cm.viridis(c / top) for c in recon.tolist()])
        titles = ("input", f"masked ({int(hidden.sum())}/{n})", f"reconstruction (cos {float(cos):.2f})")
        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
        for ax, colours, title in zip(axes, panels, titles):
            nx.draw_networkx_edges(graph, layout, ax=ax, alpha=0.1, width=0.5)
            nx.draw_networkx_nodes(graph, layout, ax=ax, node_size=20, node_color=colours)
            ax.set_title(title)
            ax.axis("off")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path


def hide_edges(edge_index: torch.Tensor, ratio: float) -> tuple:
    """Hide round(ratio * pairs) random undirected node pairs, both directions at once.
    [2, E] -> (kept [2, E'], hidden pairs [2, H] with src < dst)."""
    low, high = edge_index.min(0).values, edge_index.max(0).values
    span = int(edge_index.max()) + 1 if edge_index.numel() else 1
    pairs, pair_of_edge = torch.unique(low * span + high, return_inverse=True)  # [P], [E]
    n_hide = int(math.floor(ratio * len(pairs) + 0.5))
    hidden_pair = torch.zeros(len(pairs), dtype=torch.bool, device=edge_index.device)
    hidden_pair[torch.randperm(len(pairs), device=edge_index.device)[:n_hide]] = True
    hidden = pairs[hidden_pair]
    return edge_index[:, ~hidden_pair[pair_of_edge]], torch.stack([hidden // span, hidden % span])


# ---- objectives --------------------------------------------------------------------------------
@gin.configurable
class FeatureLatentSCELoss:
    """GraphMAE2's two terms on one prediction (EMATeacherTarget(with_input=True)): SCE with
    `alpha` on the leading feature columns + lam * SCE with `latent_alpha` on the last
    `latent_dim` columns (the teacher's latent). -> [B, M]."""

    def __init__(self, latent_dim: int = gin.REQUIRED, alpha: float = 3.0, latent_alpha: float = 1.0, lam: float = 1.0):
        self.latent_dim, self.lam = latent_dim, lam
        self.feature_loss, self.latent_loss = SCELoss(alpha), SCELoss(latent_alpha)

    def __call__(self, pred, target, weight=None):
        split = pred.shape[-1] - self.latent_dim
        return (self.feature_loss(pred[..., :split], target[..., :split])
                + self.lam * self.latent_loss(pred[..., split:], target[..., split:]))


@gin.configurable
class EdgeReconstruction(nn.Module):
    """Second objective: predict the edges GraphAdapter(edge_mask_ratio > 0) hid from the
    encoder (MaskGAE-style). Score = MLP(z_u * z_v) of the encoder latents; BCE against as many
    random node pairs of the same sample as negatives. Only pairs whose both ends were encoded
    count (in drop mode hidden nodes have no latent). -> weight * loss, a scalar."""

    def __init__(self, dim: int = gin.REQUIRED, hidden: int = 128, weight: float = 1.0):
        super().__init__()
        self.weight = weight
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, out: dict, src_ids: torch.Tensor, src_valid: torch.Tensor) -> torch.Tensor:
        tokens, latent = out["tokens"], out["latent"]  # latent [B, K, D] at src_ids
        hidden_edges = tokens.extras.get("masked_edge_index")
        if hidden_edges is None:
            if self.training:
                raise ValueError("EdgeReconstruction needs hidden edges: set GraphAdapter.edge_mask_ratio > 0")
            return latent.new_zeros(()).float()
        b, n = tokens.batch_size, tokens.num_tokens
        flat_ids = (src_ids + torch.arange(b, device=src_ids.device)[:, None] * n)[src_valid]  # [M]
        z = latent.new_zeros(b * n, latent.shape[-1])
        z[flat_ids] = latent[src_valid]
        encoded = torch.zeros(b * n, dtype=torch.bool, device=z.device)
        encoded[flat_ids] = True
        pos = hidden_edges[:, encoded[hidden_edges[0]] & encoded[hidden_edges[1]]]  # [2, P]
        if pos.shape[1] == 0:
            return latent.new_zeros(()).float()
        neg = torch.stack([pos[0], random_encoded_partner(pos[0] // n, encoded.view(b, n))])
        logits = self.score(torch.cat([z[pos[0]] * z[pos[1]], z[neg[0]] * z[neg[1]]])).squeeze(-1).float()
        target = torch.cat([torch.ones(pos.shape[1]), torch.zeros(neg.shape[1])]).to(logits.device)
        return self.weight * F.binary_cross_entropy_with_logits(logits, target)


def random_encoded_partner(sample: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
    """A uniformly random encoded token of each given sample. sample [P], encoded [B, N] -> flat ids [P]."""
    flat = torch.nonzero(encoded.flatten()).squeeze(1)  # sorted, so grouped by sample
    counts = encoded.sum(1)
    first = torch.cumsum(counts, 0) - counts
    pick = (torch.rand(len(sample), device=sample.device) * counts[sample]).long()
    return flat[first[sample] + pick]


# ---- evaluation hooks --------------------------------------------------------------------------
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
