"""Sub-graphs of large graphs: all k-hop neighbours (PyG's k_hop_subgraph), or a fixed fan-out
per hop as NeighborLoader does: pyg-lib's sampler when installed, the same uniform fan-out in
torch otherwise (pyg-lib has no wheels for every platform)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch


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
