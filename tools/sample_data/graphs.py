"""Graph sample data: one small and one mid-size node-classification graph, and a graph set.

Sources and licenses, and why each was chosen:

* ``karate/``: Zachary's karate club, from the installed ``networkx`` (BSD-3-Clause;
  data from W. W. Zachary, J. Anthropol. Res. 33, 1977). The classic two-class
  node-classification toy graph, undirected.
* ``drosophila/``: the left-hemisphere larval Drosophila mushroom-body connectome from the
  ``graspologic==3.4.4`` wheel (MIT, Microsoft; Eichler et al., Nature 548, 2017): a real
  *directed, weighted* graph (synapse counts) with 4 neuron classes.
* ``mice/``: 32 mouse DTI connectomes from the same wheel (Wang et al., NeuroImage 2020),
  labelled by genotype (4 classes, 8 graphs each): real graph classification. Each graph
  keeps the union of every node's ``MICE_TOPK`` strongest edges to stay small.

Output: plain CSV edge lists (``src,dst[,weight]``) and label files, readable without any
graph library. Build needs: ``numpy`` and ``networkx``. Deterministic: no random numbers;
ties in the top-k selection are broken by node ids.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .sources import DEFAULT_SRC, fresh_dir, pinned_wheel

MICE_TOPK = 10  # per-node strongest edges kept; None keeps all (~14 MB total)
DROSOPHILA_IN_WHEEL = "graspologic/datasets/drosophila/"
MICE_IN_WHEEL = "graspologic/datasets/mice/"


def write_csv(path: Path, header: str, rows) -> None:
    """Tiny CSV writer (ints / plain strings only, so no quoting is needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(",".join(str(v) for v in r) + "\n" for r in rows)
    path.write_text(header + "\n" + body)


def build_karate(dst: Path) -> None:
    """Zachary karate club: undirected edges once (src < dst), club as label."""
    import networkx as nx

    g = nx.karate_club_graph()
    edges = sorted(tuple(sorted(e)) for e in g.edges())
    write_csv(dst / "edges.csv", "src,dst", edges)
    club = {"Mr. Hi": 0, "Officer": 1}
    write_csv(dst / "nodes.csv", "id,label", [(n, club[g.nodes[n]["club"]]) for n in sorted(g)])
    print(f"graphs: karate nodes={g.number_of_nodes()} edges={len(edges)}")


def build_drosophila(whl: zipfile.ZipFile, dst: Path) -> None:
    """Left mushroom-body connectome: directed, weight = synapse count."""
    adj = np.loadtxt(whl.open(DROSOPHILA_IN_WHEEL + "left_adjacency.csv"), dtype=np.int64)
    cells = np.loadtxt(whl.open(DROSOPHILA_IN_WHEEL + "left_cell_labels.csv"), dtype=str)
    classes = sorted(set(cells.tolist()))
    sources, targets = np.nonzero(adj)
    write_csv(dst / "edges.csv", "src,dst,weight", zip(sources, targets, adj[sources, targets]))
    write_csv(dst / "nodes.csv", "id,label", enumerate(classes.index(c) for c in cells))
    (dst / "classes.txt").write_text("\n".join(classes) + "\n")
    print(f"graphs: drosophila nodes={len(cells)} edges={len(sources)} classes={classes}")


def topk_edges(e: np.ndarray, k: int | None) -> np.ndarray:
    """Union over nodes of each node's k strongest edges (keeps every node)."""
    if k is None:
        return e
    order = np.lexsort((e[:, 1], e[:, 0], -e[:, 2]))  # weight desc, stable ties
    keep, deg = np.zeros(len(e), bool), {}
    for i in order:
        u, v = e[i, 0], e[i, 1]
        if deg.get(u, 0) < k or deg.get(v, 0) < k:
            keep[i] = True
            deg[u], deg[v] = deg.get(u, 0) + 1, deg.get(v, 0) + 1
    return e[keep]


def read_mouse_edges(whl: zipfile.ZipFile, subject: str) -> np.ndarray:
    """int64 [E, 3] (src < dst, weight) of one subject, top-k reduced, sorted by (src, dst)."""
    e = np.loadtxt(whl.open(f"{MICE_IN_WHEEL}edgelists/{subject}_ses-1_dti.edgelist")).astype(np.int64)
    e[:, :2].sort(axis=1)  # each undirected edge is listed once; make it src < dst
    e = topk_edges(e, MICE_TOPK)
    return e[np.lexsort((e[:, 1], e[:, 0]))]


def build_mice(whl: zipfile.ZipFile, dst: Path) -> None:
    """32 DTI mouse connectomes (graph_XX/edges.csv, in participants.csv order) + genotype labels."""
    rows = whl.read(MICE_IN_WHEEL + "participants.csv").decode().split()[1:]
    subjects = [r.split(",")[:2] for r in rows]
    classes = sorted({g for _, g in subjects})
    labels = []
    for i, (subject, genotype) in enumerate(subjects):
        write_csv(dst / f"graph_{i:02d}" / "edges.csv", "src,dst,weight",
                  read_mouse_edges(whl, subject).tolist())
        labels.append((f"graph_{i:02d}", classes.index(genotype)))
    write_csv(dst / "labels.csv", "graph,label", labels)
    (dst / "classes.txt").write_text("\n".join(classes) + "\n")
    print(f"graphs: mice {len(subjects)} graphs, classes={classes}, top-{MICE_TOPK} edges/node")


def build(out_dir: Path, src: Path = DEFAULT_SRC) -> None:
    """karate/, drosophila/ and mice/ in out_dir, as plain CSV edge lists."""
    dst = fresh_dir(Path(out_dir))
    build_karate(dst / "karate")
    whl = pinned_wheel("graspologic", src)
    build_drosophila(whl, dst / "drosophila")
    build_mice(whl, dst / "mice")
