"""Graphs in CSV folders: edges.csv (src,dst[,weight]) + nodes.csv (id, label, name, feature
columns) + an optional features file, one folder per graph or a folder of such folders with
labels.csv (graph,label). Columns are chosen by name or index (NodeColumns); every error names
the file and the line."""
from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch

from modalities.graph.records import GraphFormatError, make_record


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
