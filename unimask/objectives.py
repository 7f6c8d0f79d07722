"""Objectives beside the reconstruction loss: MaskedModel(aux_objectives=[...]) adds each one's
scalar, objective(out, src_ids, src_valid), to the loss and logs it."""
from __future__ import annotations

import gin
import torch
import torch.nn.functional as F
from torch import nn

from unimask.tokens import MASKED_EDGE_INDEX


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

    def forward(self, out, src_ids: torch.Tensor, src_valid: torch.Tensor) -> torch.Tensor:
        """out: the model's StepOutput so far; src_ids, src_valid [B, K] -> a scalar."""
        tokens, latent = out.tokens, out.extras["latent"]  # latent [B, K, D] at src_ids
        hidden_edges = tokens.extras.get(MASKED_EDGE_INDEX)
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
