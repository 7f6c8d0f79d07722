"""ModalityAdapter: everything a modality must tell the core, and nothing more."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from unimask.losses import MSELoss
from unimask.pos import sincos_pos
from unimask.tokens import Tokens


class ModalityAdapter(nn.Module):
    """Subclasses set `target_dim` and `loss` and implement `tokenize`, `embed`, `render`.

    tokenize has no learned weights (patchify, FPS+kNN, fbank); embed is applied to the
    visible patches only, after the gather, so masked tokens cost nothing to embed.
    """

    target_dim: int = 0
    loss = MSELoss()
    batch_key: str = "input"  # the key of the raw batch dict this adapter reads

    def tokenize(self, batch) -> Tokens:
        raise NotImplementedError

    def embed(self, patches: torch.Tensor, tokens: Tokens, ids: torch.Tensor) -> torch.Tensor:
        """patches [B, K, P] (already gathered), ids [B, K] -> [B, K, D]."""
        raise NotImplementedError

    def pos(self, coords: torch.Tensor, dim: int) -> torch.Tensor:
        """coords [..., C] -> [..., dim]; fixed sin-cos by default (MAE)."""
        return sincos_pos(coords, dim)

    def target(self, tokens: Tokens) -> torch.Tensor:
        """[B, N, T] default prediction target: the raw patches."""
        return tokens.patches

    def random_patches(self, like: torch.Tensor, generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        """'Random token' for BERT-style replace; None = take another token of the batch."""
        return None

    def render(self, tokens: Tokens, pred: torch.Tensor, mask, path: str) -> str:
        """Write a picture/sound of input | masked | reconstruction for sample 0; return path."""
        raise NotImplementedError(f"{type(self).__name__} cannot render reconstructions")

    def render_views(self, first: Tokens, second: Tokens, pred: torch.Tensor, mask, path: str) -> str:
        """Two views (SiamMAE, CropMAE): view 1 | masked view 2 | reconstruction of view 2."""
        raise NotImplementedError(f"{type(self).__name__} cannot draw two views")

    def raw_features(self, tokens: Tokens) -> torch.Tensor:
        """[B, N, F]: the input itself, per token, for the no-learning baseline probe (its patch
        values and its coordinates: a token's position may carry the shape). Adapters whose patches
        are not numbers (token ids) give an encoding of them instead."""
        return torch.cat([tokens.patches.float(), tokens.coords.float()], -1)

    def labels(self, batch) -> Optional[torch.Tensor]:
        """[B] class labels of a raw batch, for probes; None when the data has none."""
        label = batch.get("label") if isinstance(batch, dict) else None
        return label
