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

Files are data: a .pt is read weights-only, a networkx pickle only with GraphDataset.trust_pickle
=True, and what a file declares (nodes, edges, a .pt's tensor bytes) is checked against
GraphDataset.max_nodes / max_edges / max_tensor_bytes first (sources.py, guards.py).
"""
from modalities.graph.adapter import GraphAdapter, hide_edges  # noqa: F401
from modalities.graph.dataset import GraphDataset, graph_feature_width  # noqa: F401
from modalities.graph.probe import graph_embeddings, node_embeddings, probe_nodes  # noqa: F401
from modalities.graph.records import GraphFormatError  # noqa: F401
from modalities.graph.sampling import pyg_neighbor_sampler_available, sample_subgraph  # noqa: F401
