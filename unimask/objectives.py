"""Objectives beside the reconstruction loss (unimask/interfaces.py: Objective):
MaskedModel(objectives=[...]) adds each one's weighted scalar, objective(out, src_ids,
src_valid), to the loss and logs it by name.

TokenObjective is the general one (DESIGN v3's Objective(target, head, loss, weight, tokens)): a
target at chosen tokens, predicted by a head on the encoder's tokens. MaskAlign aligns the
visible tokens with a teacher and reconstructs nothing; MR-MAE mimics a teacher at the visible
tokens beside its reconstruction of the input; DMAE reads an intermediate layer. Objectives that share
one target instance (one teacher) get its output computed once per step.
"""
from __future__ import annotations

import warnings
from typing import Optional

import gin
import torch
import torch.nn.functional as F
from torch import nn

from unimask.interfaces import Objective, target_weight
from unimask.tokens import MASKED_EDGE_INDEX, gather_rows, gather_tokens, select_ids

TOKEN_SETS = ("visible", "hidden", "all")
HEADS = ("linear", "mlp", "identity")


@gin.configurable
class TokenObjective(Objective):
    """target's values at the chosen tokens, predicted from the encoder's tokens by a head.

    tokens: 'visible' (what the encoder saw: MaskAlign, MR-MAE), 'hidden' or 'all' (these need
    the encoder to have read the hidden tokens, i.e. MaskedModel.mode='replace'; in drop mode the
    hidden tokens are the decoder's, the model's own target). head: 'linear', 'mlp' (two layers,
    GELU, hidden_dim wide) or 'identity' (the widths already agree). layer: None for the
    encoder's output, or the index of the block whose output the head reads (DMAE's
    intermediate features; -1 is the last block before the final norm). loss: per token,
    (pred, target, weight) -> [B, S] (unimask/losses.py); the term is weight x its mean over the
    chosen tokens. name: the logged term (loss_<name>)."""

    def __init__(self, target: nn.Module = gin.REQUIRED, loss=gin.REQUIRED, weight: float = 1.0,
                 tokens: str = "visible", head: str = "linear", hidden_dim: Optional[int] = None,
                 layer: Optional[int] = None, name: Optional[str] = None):
        super().__init__()
        if tokens not in TOKEN_SETS:
            raise ValueError(f"TokenObjective.tokens must be one of {TOKEN_SETS}, got {tokens!r}")
        if head not in HEADS:
            raise ValueError(f"TokenObjective.head must be one of {HEADS}, got {head!r}")
        self.target, self.loss_fn, self.weight, self.tokens = target, loss, weight, tokens
        self.head_kind, self.hidden_dim, self.layer, self.name = head, hidden_dim, layer, name
        self.layers = () if layer is None else (layer,)
        self.head = None

    def targets(self) -> list:
        return [self.target]

    def bind(self, model):
        """The head at the encoder's width, its output at the target's; the adapter it reads."""
        if self.tokens != "visible" and model.mode == "drop":
            raise ValueError(f"TokenObjective(tokens={self.tokens!r}) needs MaskedModel.mode='replace': in drop "
                             "mode the encoder never sees the hidden tokens")
        width, out = model.encoder.dim, self.target.dim(model.adapter)
        if self.head_kind == "identity" and width != out:
            raise ValueError(f"TokenObjective.head='identity' but the encoder is {width} wide and the target {out}")
        blocks = model.encoder.block_count()
        if self.layer is not None and blocks and not -blocks <= self.layer < blocks:
            warnings.warn(f"TokenObjective.layer={self.layer} but the encoder has {blocks} blocks (a shrunk model, "
                          f"gin/smoke.gin?): reading its last block")
            self.layer, self.layers = -1, (-1,)
        hidden = self.hidden_dim or 4 * width
        self.head = {"linear": lambda: nn.Linear(width, out), "identity": nn.Identity,
                     "mlp": lambda: nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, out))}[
            self.head_kind]()
        object.__setattr__(self, "adapter", model.adapter)  # a reference, not a submodule
        self.target.attach(model)

    def after_step(self, progress: float):
        self.target.after_step(progress)

    def forward(self, out, src_ids: torch.Tensor, src_valid: torch.Tensor) -> torch.Tensor:
        """out: the model's StepOutput so far; src_ids, src_valid [B, K] -> weight x loss, a scalar."""
        latent = out.extras["latent"] if self.layer is None else out.extras["layers"][self.layer]  # [B, K, D]
        hidden = gather_tokens(out.mask.masked, src_ids)  # [B, K]
        chosen = {"visible": ~hidden, "hidden": hidden, "all": torch.ones_like(hidden)}[self.tokens] & src_valid
        rows, rows_valid = select_ids(chosen)  # [B, S] places in K
        if rows.shape[1] == 0:
            return latent.sum() * 0.0
        ids = gather_tokens(src_ids, rows)  # [B, S] token ids
        pred = self.head(gather_rows(latent, rows))  # [B, S, T]
        values, weight = shared_target(out, self.target, self.adapter)
        values = gather_tokens(values, ids)
        weight = gather_tokens(weight, ids) if weight is not None else target_weight(out.tokens, ids)
        row_loss = self.loss_fn(pred.float(), values.float(), weight) * rows_valid  # [B, S]
        return self.weight * row_loss.sum() / rows_valid.sum().clamp(min=1)


def shared_target(out, target: nn.Module, adapter) -> tuple:
    """target(tokens, adapter) -> (values [B, N, T], weight | None), once per step and target
    instance: objectives that share a teacher run it once (kept in out.extras['target_outputs'])."""
    memo = out.extras.setdefault("target_outputs", {})
    if id(target) not in memo:
        memo[id(target)] = target(out.tokens, adapter)
    return memo[id(target)]


@gin.configurable
class EdgeReconstruction(Objective):
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
