"""GraphAdapter: nodes as tokens for GraphMAE (features as patches, edges in Tokens.extras),
edge hiding for edge reconstruction, and the picture of a masked graph."""
from __future__ import annotations

import math
import os

import gin
import torch
import torch.nn.functional as F
from torch import nn

from unimask.interfaces import ModalityAdapter
from unimask.losses import SCELoss
from unimask.pos import sincos_pos
from unimask.tokens import EDGE_INDEX, MASKED_EDGE_INDEX, Tokens


@gin.configurable
class GraphAdapter(ModalityAdapter):
    """Nodes -> tokens. embed: one Linear from in_dim features to the encoder width (the
    [MASK] token of replace mode lives at that width). pos: 'none' (zeros; a GNN needs no
    position, and node order is arbitrary) or 'sincos' of the node index.

    edge_mask_ratio > 0 hides that fraction of the (undirected) edges while training: they
    leave extras[EDGE_INDEX] and are listed in extras[MASKED_EDGE_INDEX] for
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
        extras = {EDGE_INDEX: batch["edge_index"]}
        if self.training and self.edge_mask_ratio > 0:
            extras[EDGE_INDEX], extras[MASKED_EDGE_INDEX] = hide_edges(batch["edge_index"], self.edge_mask_ratio)
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
        edges = tokens.extras[EDGE_INDEX]
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
