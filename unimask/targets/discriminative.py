"""DMT-JEPA's discriminative targets (Mo & Yun, 2024): the target of a hidden token is not its own
teacher feature but an aggregate of the features of its most similar neighbours in the teacher's map.

    teacher(Tokens, every token visible) --> features [B, N, D]
    for each scored token i: candidates = its `candidates` nearest tokens in coordinate space
        (8: the 3 x 3 window around a grid cell, DMT-JEPA's patch_k_size 3) or the whole map (None)
    top_k of them by cosine similarity to i's feature (DMT-JEPA: 4; i itself left out, as there)
    target_i = their mean (or a softmax(cos / temperature) weighted mean), layer-normed

What differs from the paper: DMT-JEPA aggregates the top-k features with two learned
cross-attention blocks (the image's mean token as query), an EMA of a head the student's
predictions also pass through; here the aggregation has no weights (a mean, or attention by the
cosine itself), so the target needs no head on the student's side and plugs into any model
(JEPAModel, MaskedModel) through the Target contract. Neighbours on a grid are the nearest cells
without wrapping around the border (the paper's window wraps modulo the grid).

The teacher is any teacher target (EMATeacherTarget, TeacherTarget) built by gin, so its own
bindings (momentum, layer norm, top-k layers) stay the ones the recipe already has.
"""
from __future__ import annotations

from typing import Optional

import gin
import torch
import torch.nn.functional as F

from unimask.interfaces import Target
from unimask.targets.teachers import TeacherFeatures
from unimask.tokens import gather_tokens


def neighbour_aggregate(features: torch.Tensor, coords: torch.Tensor, valid: torch.Tensor, ids: torch.Tensor,
                        top_k: int, candidates: Optional[int] = None, temperature: Optional[float] = None,
                        include_self: bool = False) -> torch.Tensor:
    """For each token ids [B, S]: the (weighted) mean of the features [B, N, D] of its top_k most
    cosine-similar real tokens (valid [B, N]) among its `candidates` nearest by coords [B, N, C]
    (None: all of them). A token with no candidate at all keeps its own feature. -> [B, S, D] float."""
    feats = features.float()
    n = feats.shape[1]
    unit = F.normalize(feats, dim=-1)
    cos = torch.einsum("bsd,bnd->bsn", gather_tokens(unit, ids), unit)  # [B, S, N]
    allowed = valid[:, None, :].expand_as(cos).clone()
    if not include_self:
        allowed.scatter_(2, ids[..., None], False)
    if candidates is not None and candidates < n:
        dist = torch.cdist(gather_tokens(coords.float(), ids), coords.float())  # [B, S, N]
        near = dist.masked_fill(~allowed, float("inf")).topk(candidates, dim=-1, largest=False).indices
        allowed &= torch.zeros_like(allowed).scatter_(2, near, True)
    top, idx = cos.masked_fill(~allowed, float("-inf")).topk(min(top_k, n), dim=-1)  # [B, S, k]
    ok = torch.isfinite(top)  # fewer than k candidates: the missing ones weigh nothing
    if temperature is None:
        weight = ok.float()
    else:
        weight = torch.softmax(torch.where(ok, top / temperature, torch.full_like(top, -1e30)), -1) * ok
    weight = weight / weight.sum(-1, keepdim=True).clamp(min=1e-12)
    b, s, k = idx.shape
    picked = feats.gather(1, idx.reshape(b, s * k, 1).expand(-1, -1, feats.shape[-1])).view(b, s, k, -1)
    out = (weight[..., None] * picked).sum(2)  # [B, S, D]
    return torch.where(ok.any(-1, keepdim=True), out, gather_tokens(feats, ids))


@gin.configurable
class DiscriminativeTarget(Target):
    """teacher: the teacher target whose features are aggregated (EMATeacherTarget, or a frozen
    TeacherTarget); top_k: how many neighbours make a target (DMT-JEPA: 4); candidates: the nearest
    tokens in coordinate space they are chosen from (8: the 3 x 3 window of a grid cell, as the
    paper's patch_k_size 3; on point groups the 8 nearest centres), None: the whole map;
    temperature: None averages them, a float weighs them by softmax(cos / temperature);
    include_self: the token is its own candidate (DMT-JEPA: no); normalize: a layer norm of the
    aggregate (the paper's head ends in one)."""

    def __init__(self, teacher: TeacherFeatures = gin.REQUIRED, top_k: int = 4, candidates: Optional[int] = 8,
                 temperature: Optional[float] = None, include_self: bool = False, normalize: bool = True):
        super().__init__()
        if top_k < 1 or (candidates is not None and candidates < 1):
            raise ValueError(f"DiscriminativeTarget: top_k={top_k} and candidates={candidates} must be >= 1")
        if temperature is not None and temperature <= 0:
            raise ValueError(f"DiscriminativeTarget.temperature={temperature} must be > 0 (or None: a plain mean)")
        self.teacher, self.top_k, self.candidates = teacher, top_k, candidates
        self.temperature, self.include_self, self.normalize = temperature, include_self, normalize

    def dim(self, adapter) -> int:
        return self.teacher.dim(adapter)

    def attach(self, model):
        self.teacher.attach(model)

    def teacher_parts(self):
        return self.teacher.teacher_parts()

    def after_step(self, progress: float):
        self.teacher.after_step(progress)

    @torch.no_grad()
    def select(self, tokens, adapter, ids):
        """The teacher runs once on every token (the neighbours are anywhere), the aggregate is
        computed for the tokens ids [B, S] only -> ([B, S, D], None)."""
        features, _ = self.teacher(tokens, adapter)  # [B, N, D], no grad
        out = neighbour_aggregate(features, tokens.coords, tokens.valid_mask(), ids, self.top_k, self.candidates,
                                  self.temperature, self.include_self)
        return (F.layer_norm(out, out.shape[-1:]) if self.normalize else out), None

    def forward(self, tokens, adapter):
        ids = torch.arange(tokens.num_tokens, device=tokens.patches.device).expand(tokens.batch_size, -1)
        return self.select(tokens, adapter, ids)

    def invert(self, pred, tokens, adapter):
        raise NotImplementedError("DiscriminativeTarget predicts aggregated teacher latents: there is nothing to draw")
