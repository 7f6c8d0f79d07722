"""Tokens and Mask: the only contract between modality adapters and the core.

An adapter turns a raw batch into `Tokens`; a masker turns `Tokens` into a `Mask`; the
model, encoders, decoders and losses see nothing else. Everything a modality needs the
core to know travels in a field here, never as a modality name.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch


EDGE_INDEX = "edge_index"  # Tokens.extras key: [2, E] long edges between tokens, indexing the flattened B*N tokens
MASKED_EDGE_INDEX = "masked_edge_index"  # [2, H] edges hidden from the encoder, for an edge objective to predict
TARGET_WEIGHT = "target_weight"  # [B, N, T] float: per-value weight of the target (0 = a no-data value), read by targets
INPUT_PATCHES = "input_patches"  # Mask.aux key: [B, N, P] what the encoder sees instead of Tokens.patches (a masker
#                                  that corrupts rather than hides: MFM's frequency filter)


# ---- index helpers: every gather of tokens in the core goes through these three ----------------
def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Pick tokens per sample. x [B, N, ...], ids [B, K] long -> [B, K, ...]."""
    index = ids.reshape(*ids.shape, *([1] * (x.dim() - 2))).expand(*ids.shape, *x.shape[2:])
    return torch.gather(x, 1, index)


def gather_rows(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """gather_tokens for big rows: x [B, N, ...], ids [B, K] -> [B, K, ...]. One index_select
    over the flattened B*N rows (row copies; 2-3x faster than torch.gather with an expanded
    index, forward and backward) when the first two axes merge into one without a copy."""
    if x.dim() < 3 or x.stride(0) != x.stride(1) * x.shape[1]:
        return gather_tokens(x, ids)
    batch, n = x.shape[:2]
    flat_ids = (ids + torch.arange(batch, device=ids.device)[:, None] * n).reshape(-1)  # [B*K]
    return x.flatten(0, 1).index_select(0, flat_ids).view(*ids.shape, *x.shape[2:])


def select_ids(keep: torch.Tensor):
    """Indices of the True entries per sample, in order, padded. keep [B, N] -> ids [B, M], valid [B, M]."""
    ids = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    count = keep.sum(1)
    m = int(count.max()) if count.numel() else 0
    return ids[:, :m], torch.arange(m, device=keep.device)[None] < count[:, None]


def edges_among(tokens: "Tokens", ids: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The token edges (extras[EDGE_INDEX]) whose two ends are both among the valid slots of ids
    [B, K], renumbered into the flattened valid slots (x[valid], [M, ...]): an edge to a hidden or
    padding token is simply gone. -> [2, E']."""
    from torch_geometric.utils import subgraph

    if EDGE_INDEX not in tokens.extras:
        raise ValueError(f"these tokens have no Tokens.extras[{EDGE_INDEX!r}] (edges into the flattened B*N tokens)")
    batch = ids.shape[0]
    valid = torch.ones_like(ids, dtype=torch.bool) if valid is None else valid
    offsets = torch.arange(batch, device=ids.device)[:, None] * tokens.num_tokens
    token_of_slot = (ids + offsets)[valid]  # [M] flattened token index of each valid slot
    edges, _ = subgraph(token_of_slot, tokens.extras[EDGE_INDEX].to(ids.device), relabel_nodes=True,
                        num_nodes=batch * tokens.num_tokens)
    return edges


@dataclass
class Tokens:
    """A batch cut into tokens.

    patches     [B, N, P] raw content per token (text ids as [B, N, 1] long)
    coords      [B, N, C] where each token lives (grid index, xyz centre, node index...)
    valid       [B, N] bool, False for padding; None = all valid
    grid        dense layout such as (T, H, W) with N = prod(grid), row-major; None if none
    group       [N] long channel group / sub-modality of each token; None if one group
    patch_shape layout of P, e.g. (2, 16, 16, 3) for a tubelet; None if flat
    maskable    [B, N] bool, False for real tokens that are never hidden (a text's [CLS] / [SEP]);
                None = every valid token may be hidden
    extras      passed through untouched; documented keys: EDGE_INDEX ([2, E] edges between
                tokens, indexing the flattened B*N tokens; `edges_among` restricts them to some ids),
                MASKED_EDGE_INDEX ([2, H] edges hidden from the encoder, EdgeReconstruction's targets),
                TARGET_WEIGHT ([B, N, T] weights of the target's values: 0 for no-data values)
    """

    patches: torch.Tensor
    coords: torch.Tensor
    valid: Optional[torch.Tensor] = None
    grid: Optional[tuple] = None
    group: Optional[torch.Tensor] = None
    patch_shape: Optional[tuple] = None
    extras: dict = field(default_factory=dict)
    maskable: Optional[torch.Tensor] = None

    def __post_init__(self):
        if self.patches.dim() != 3:
            raise ValueError(f"Tokens.patches must be [B, N, P], got shape {tuple(self.patches.shape)}")
        if self.coords.shape[:2] != self.patches.shape[:2]:
            raise ValueError(f"Tokens.coords {tuple(self.coords.shape)} does not match patches {tuple(self.patches.shape)}")
        if self.valid is not None and self.valid.shape != self.patches.shape[:2]:
            raise ValueError(f"Tokens.valid {tuple(self.valid.shape)} must be [B, N] = {tuple(self.patches.shape[:2])}")
        if self.maskable is not None and self.maskable.shape != self.patches.shape[:2]:
            raise ValueError(f"Tokens.maskable {tuple(self.maskable.shape)} must be [B, N] = {tuple(self.patches.shape[:2])}")
        if self.grid is not None and int(torch.tensor(self.grid).prod()) != self.patches.shape[1]:
            raise ValueError(f"Tokens.grid {self.grid} does not multiply to N={self.patches.shape[1]}")

    @property
    def batch_size(self) -> int:
        return self.patches.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.patches.shape[1]

    def valid_mask(self) -> torch.Tensor:
        """[B, N] bool, all True when `valid` is None."""
        if self.valid is not None:
            return self.valid
        return torch.ones(self.patches.shape[:2], dtype=torch.bool, device=self.patches.device)

    def maskable_mask(self) -> torch.Tensor:
        """[B, N] bool: the tokens a masker may hide (valid, and not held back by `maskable`)."""
        valid = self.valid_mask()
        return valid if self.maskable is None else valid & self.maskable

    def n_valid(self) -> torch.Tensor:
        """[B] long number of real tokens per sample."""
        return self.valid_mask().sum(1)

    def replace(self, **changes) -> "Tokens":
        return replace(self, **changes)


@dataclass
class Mask:
    """Which tokens the encoder sees and which the decoder predicts.

    ids_keep    [B, K] long  visible tokens; samples with fewer are padded (keep_valid False)
    keep_valid  [B, K] bool
    masked      [B, N] bool  True where hidden (never on padding)
    ids_restore [B, N] long  inverse of the permutation (visible first, then hidden, then padding)
    ratio       [B] float    the ratio each sample was masked at
    decode      [B, N] bool|None  tokens the decoder predicts and the loss covers; None = masked
    aux         dict         state of a learning masker (log-probs, predicted losses); documented
                             key INPUT_PATCHES: what the encoder sees instead of Tokens.patches
    target_blocks [B, M, N] bool|None  which target block each hidden token belongs to (blocks may
                             overlap; MultiBlockMasker, for latent prediction: unimask/models/jepa.py)
    """

    ids_keep: torch.Tensor
    keep_valid: torch.Tensor
    masked: torch.Tensor
    ids_restore: torch.Tensor
    ratio: torch.Tensor
    decode: Optional[torch.Tensor] = None
    aux: dict = field(default_factory=dict)
    target_blocks: Optional[torch.Tensor] = None

    @property
    def targets(self) -> torch.Tensor:
        """[B, N] bool: tokens whose prediction is scored (decode, or all masked)."""
        return self.masked if self.decode is None else self.decode & self.masked

    @staticmethod
    def from_hidden(masked: torch.Tensor, valid: torch.Tensor, ratio: torch.Tensor) -> "Mask":
        """Build the index view from a hidden-token map.

        masked [B, N] bool, valid [B, N] bool, ratio [B]. Visible tokens keep their original
        order (stable sort), so `ids_keep` is reproducible and the encoder sees them in place.
        """
        masked = masked & valid
        order_key = masked.to(torch.int8) + 2 * (~valid).to(torch.int8)  # 0 visible, 1 hidden, 2 padding
        ids_shuffle = torch.argsort(order_key, dim=1, stable=True)  # [B, N]
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        n_keep = (valid & ~masked).sum(1)  # [B]
        k = int(n_keep.max()) if n_keep.numel() else 0
        ids_keep = ids_shuffle[:, :k]
        keep_valid = torch.arange(k, device=masked.device)[None] < n_keep[:, None]
        return Mask(ids_keep, keep_valid, masked, ids_restore, ratio.to(masked.device).float())
