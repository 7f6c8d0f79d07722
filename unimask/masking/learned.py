"""Maskers that learn where to mask: AdaMAE's sampling network and HPM's loss predictor.

Both are nn.Modules inside MaskedModel (so their weights are trained, checkpointed and
moved with it) and set `needs_features`: the model embeds every token and passes them as
`features=` [B, N, D]. After the reconstruction loss the model calls
`aux_loss(mask, token_loss [B, N] detached)` and adds the result to the loss.
"""
from __future__ import annotations

from typing import Optional

import gin
import torch
import torch.nn.functional as F
from torch import nn

from unimask.interfaces import Masker, keep_one_visible, ratio_tensor
from unimask.masking.base import count_hidden, hide_lowest, random_scores
from unimask.tokens import Mask, gather_tokens, select_ids
from unimask.transformer import TransformerStack


def scored_ids(scored: torch.Tensor):
    """select_ids with at least one column: scored [B, N] bool -> ids [B, M >= 1], valid [B, M]."""
    if bool(scored.any()):
        return select_ids(scored)
    return select_ids(torch.ones_like(scored[:, :1]))[0], torch.zeros_like(scored[:, :1])


class TokenScorer(nn.Module):
    """One transformer block over all tokens, then a linear score per token: [B, N, D] -> [B, N]."""

    def __init__(self, dim: int, depth: int = 1, num_heads: int = 4):
        super().__init__()
        self.body = TransformerStack(dim, depth, num_heads)
        self.head = nn.Linear(dim, 1)

    def forward(self, features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(features, valid)).squeeze(-1).float()


class LearnedMasker(Masker, nn.Module):
    """Base of the maskers with weights: `propose(tokens, ratio, generator, features) ->
    (hidden [B, N], aux)`, and `aux` is handed to the model in `Mask.aux`."""

    needs_features = True

    def __init__(self):
        nn.Module.__init__(self)

    def propose(self, tokens, ratio, generator, features=None):
        raise NotImplementedError

    def __call__(self, tokens, ratio, generator=None, features=None) -> Mask:
        ratio = ratio_tensor(ratio, tokens.batch_size, tokens.patches.device)
        valid, maskable = tokens.valid_mask(), tokens.maskable_mask()
        scored = tokens if tokens.maskable is None else tokens.replace(valid=maskable)
        hidden, aux = self.propose(scored, ratio, generator, features)
        mask = Mask.from_hidden(keep_one_visible(hidden & maskable, valid), valid, ratio)
        mask.aux = aux
        return mask


def checked_features(features: Optional[torch.Tensor], tokens, name: str, detach: bool) -> torch.Tensor:
    if features is None:
        raise ValueError(f"{name} learns from the embedded tokens: call it as masker(tokens, ratio, generator, "
                         f"features=[B, N, D]) (MaskedModel does this when needs_features is True)")
    if features.shape[:2] != (tokens.batch_size, tokens.num_tokens):
        raise ValueError(f"{name}: features {tuple(features.shape)} must be [B, N, D] with B, N = "
                         f"{tokens.batch_size}, {tokens.num_tokens}")
    return features.detach() if detach else features


@gin.configurable
class AdaptiveMasker(LearnedMasker):
    """AdaMAE (Bandara et al. CVPR 2023): a network scores every token, the visible tokens
    are sampled without replacement from softmax(scores) (Gumbel top-k with the masking
    generator), and the rest are hidden, exactly round(ratio * N) of them.

    The sampler is trained by AdaMAE's policy gradient: loss = -weight * mean over samples
    of mean over scored hidden tokens of (reconstruction error, detached) x log p(token),
    so tokens that were hard to reconstruct become likelier to be sampled visible. AdaMAE
    weighs it by 1e-4 and lets it reach the token embedding (detach_features=False).
    """

    def __init__(self, dim: int = gin.REQUIRED, depth: int = 1, num_heads: int = 4, weight: float = 1e-4,
                 detach_features: bool = False):
        super().__init__()
        self.scorer = TokenScorer(dim, depth, num_heads)
        self.weight, self.detach_features = weight, detach_features

    def propose(self, tokens, ratio, generator, features=None):
        features = checked_features(features, tokens, "AdaptiveMasker", self.detach_features)  # [B, N, D]
        valid = tokens.valid_mask()
        logits = self.scorer(features, valid).masked_fill(~valid, float("-inf"))  # [B, N]
        log_probs = torch.log_softmax(logits, dim=1)
        uniform = random_scores(valid.shape, generator, valid.device).clamp(1e-12, 1 - 1e-7)
        perturbed = logits.detach() - torch.log(-torch.log(uniform))  # Gumbel top-k = sampling w/o replacement
        hidden = hide_lowest(perturbed, count_hidden(ratio, valid.sum(1)), valid)
        return hidden, {"log_probs": torch.where(valid, log_probs, torch.zeros_like(log_probs))}

    def aux_loss(self, mask: Mask, token_loss: torch.Tensor) -> torch.Tensor:
        """mask.aux['log_probs'] [B, N], token_loss [B, N] detached -> scalar policy-gradient term."""
        scored = mask.targets.float()  # [B, N]
        reward = token_loss.detach().float() * scored
        per_sample = -(mask.aux["log_probs"] * reward).sum(1) / scored.sum(1).clamp(min=1)
        return self.weight * per_sample.mean()


@gin.configurable
class HardPatchMasker(LearnedMasker):
    """HPM (Wang et al. CVPR 2023): predict each token's reconstruction loss and hide the
    tokens predicted hardest, mixed with random ones on an easy-to-hard schedule.

    Of the round(ratio * N) hidden tokens, floor(share * count) are the highest predicted
    losses and the rest are random, with share = max_hard * progress (HPM: (epoch + 1) /
    epochs * 0.5); progress comes from `after_step` and is a buffer, so it is checkpointed.
    The predictor learns HPM's relative objective: for every pair of scored tokens, a binary
    cross-entropy on which of the two had the larger real loss (relative=False: MSE to the
    per-sample standardized losses, HPM's other option). Pairs are [M, M] per sample, so
    beyond `pair_tokens` scored tokens a random subset of that many is compared.
    """

    def __init__(self, dim: int = gin.REQUIRED, depth: int = 1, num_heads: int = 4, max_hard: float = 0.5,
                 weight: float = 1.0, relative: bool = True, detach_features: bool = False, pair_tokens: int = 512):
        super().__init__()
        if not 0 <= max_hard <= 1:
            raise ValueError(f"HardPatchMasker.max_hard must lie in [0, 1], got {max_hard}")
        self.predictor = TokenScorer(dim, depth, num_heads)
        self.max_hard, self.weight, self.relative, self.detach_features = max_hard, weight, relative, detach_features
        self.pair_tokens = pair_tokens
        self.register_buffer("progress", torch.zeros(()))

    def after_step(self, progress: float):
        self.progress.fill_(float(progress))

    def hard_share(self) -> float:
        return self.max_hard * float(self.progress.clamp(0, 1))

    def propose(self, tokens, ratio, generator, features=None):
        features = checked_features(features, tokens, "HardPatchMasker", self.detach_features)  # [B, N, D]
        valid = tokens.valid_mask()
        predicted = self.predictor(features, valid)  # [B, N] predicted loss (a relative score)
        n_hide = count_hidden(ratio, valid.sum(1))
        n_hard = torch.floor(n_hide.float() * self.hard_share()).long()  # [B]
        hardest = hide_lowest(-predicted.detach(), n_hard, valid)  # [B, N] top predicted losses
        noise = random_scores(valid.shape, generator, valid.device)
        hidden = hide_lowest(noise - 2.0 * hardest.float(), n_hide, valid)  # hardest first, then random
        return hidden, {"predicted_loss": predicted}

    def aux_loss(self, mask: Mask, token_loss: torch.Tensor) -> torch.Tensor:
        """Train the predictor on the real per-token losses of the scored tokens. -> scalar."""
        scored = mask.targets
        if self.relative and int(scored.sum(1).max()) > self.pair_tokens:  # keep the [M, M] pairs affordable
            keep = torch.rand(scored.shape, device=scored.device).masked_fill(~scored, 2.0)
            scored = hide_lowest(keep, torch.full_like(scored.sum(1), self.pair_tokens), scored)
        ids, ids_valid = scored_ids(scored)  # [B, M] scored tokens
        predicted = gather_tokens(mask.aux["predicted_loss"], ids)  # [B, M]
        predicted = torch.where(ids_valid, predicted, torch.zeros_like(predicted))  # padding slots may be NaN
        real = gather_tokens(token_loss.detach().float(), ids)
        if self.relative:
            pair_valid = ids_valid[:, :, None] & ids_valid[:, None, :]  # [B, M, M]
            harder = (real[:, :, None] > real[:, None, :]) & pair_valid  # token i lost more than token j
            easier = (real[:, :, None] < real[:, None, :]) & pair_valid
            margin = predicted[:, :, None] - predicted[:, None, :]
            loss = (F.softplus(-margin) * harder + F.softplus(margin) * easier).sum()
            return self.weight * loss / (harder | easier).sum().clamp(min=1)
        count = ids_valid.sum(1, keepdim=True).clamp(min=1)
        mean = (real * ids_valid).sum(1, keepdim=True) / count
        std = (((real - mean) ** 2 * ids_valid).sum(1, keepdim=True) / (count - 1).clamp(min=1) + 1e-6).sqrt()
        error = ((predicted - (real - mean) / std) ** 2) * ids_valid
        return self.weight * error.sum() / ids_valid.sum().clamp(min=1)
