"""Maskers over token groups (Tokens.group): channel groups (SatMAE) and a visible budget
split across groups or sub-modalities (MultiMAE)."""
from __future__ import annotations

import math

import gin
import torch

from unimask.interfaces import Masker
from unimask.masking.base import (count_hidden, group_ids, hide_lowest, hide_random_units, random_normal,
                                  random_rank_in_group, random_scores, spread_units, top_up, unit_validity)

MODES = ("independent", "consistent")


def position_in_group(ids: torch.Tensor, n_groups: int) -> torch.Tensor:
    """[N] long: how many earlier tokens share the token's group (its place in the group)."""
    one_hot = torch.nn.functional.one_hot(ids, n_groups)  # [N, G]
    return (torch.cumsum(one_hot, 0) - 1).gather(1, ids[:, None]).squeeze(1)


@gin.configurable
class ChannelGroupMasker(Masker):
    """SatMAE (Cong et al. 2022) masking of grouped-channel tokens.

    Tokens carry `Tokens.group` [N]; the k-th token of every group sits at the same
    place (a group-major layout such as a (groups, H, W) grid).
    'independent': every group hides round(ratio * its valid tokens) at random places of
    its own (unit = token; random top-up/trim to the exact total).
    'consistent': the same places are hidden in every group (unit = group column).
    """

    def __init__(self, mode: str = "independent"):
        if mode not in MODES:
            raise ValueError(f"ChannelGroupMasker.mode must be one of {MODES}, got {mode!r}")
        self.mode = mode

    def hide(self, tokens, ratio, generator):
        ids, n_groups = group_ids(tokens)
        valid = tokens.valid_mask()  # [B, N]
        if self.mode == "consistent":
            sizes = torch.bincount(ids, minlength=n_groups)
            sizes = sizes[sizes > 0]
            if bool((sizes != sizes[0]).any()):
                raise ValueError(f"ChannelGroupMasker('consistent') needs groups of equal size, got {sizes.tolist()}")
            place = position_in_group(ids, n_groups)  # [N]
            hidden_places = hide_random_units(unit_validity(valid, place, int(sizes[0])), ratio, generator)
            return spread_units(hidden_places, place)
        valid_per_group = torch.zeros(valid.shape[0], n_groups, dtype=torch.long, device=valid.device)
        valid_per_group.index_add_(1, ids, valid.long())  # [B, G]
        want_per_group = count_hidden(ratio[:, None], valid_per_group)  # [B, G]
        rank = random_rank_in_group(ids, n_groups, valid, generator)  # [B, N]
        hidden = valid & (rank < want_per_group[:, ids])
        return top_up(hidden, count_hidden(ratio, valid.sum(1)), valid, generator)


def sample_gamma(concentration: float, shape, generator, device, tries: int = 16) -> torch.Tensor:
    """Gamma(concentration, 1) from the masking generator (Marsaglia-Tsang, vectorized).

    `tries` proposals per value, the first accepted one kept (each is accepted with
    probability > 0.95); concentration < 1 uses Gamma(a + 1) * U^(1/a).
    """
    boost = concentration < 1
    a = concentration + 1 if boost else concentration
    d = a - 1 / 3
    c = 1 / math.sqrt(9 * d)
    x = random_normal((*shape, tries), generator, device)
    u = random_scores((*shape, tries), generator, device)
    v = (1 + c * x) ** 3
    accept = (v > 0) & (torch.log(u) < 0.5 * x ** 2 + d - d * v + d * torch.log(v.clamp(min=1e-12)))
    first = torch.argmax(accept.int(), dim=-1, keepdim=True)
    sample = torch.where(accept.any(-1), (d * v).gather(-1, first).squeeze(-1), d)
    if boost:
        sample = sample * random_scores(shape, generator, device).clamp(min=1e-12) ** (1 / concentration)
    return sample


@gin.configurable
class DirichletMasker(Masker):
    """MultiMAE (Bachmann et al. 2022): the visible budget n_valid - round(ratio * n_valid)
    is split across groups (`Tokens.group`: sub-modalities or channel groups) by a
    Dirichlet(alpha) sample per sample; small alpha gives lopsided splits.

    Visible tokens are apportioned by the Sainte-Lague rule (the k-th visible token of
    group g has priority (k + 1/2) / share_g, lowest priorities kept), so the total is exact
    and a group with fewer tokens than its share passes the rest on to the others.
    """

    def __init__(self, alpha: float = 1.0):
        if alpha <= 0:
            raise ValueError(f"DirichletMasker.alpha must be > 0, got {alpha}")
        self.alpha = alpha

    def shares(self, batch: int, n_groups: int, generator, device) -> torch.Tensor:
        """[B, G] Dirichlet(alpha) proportions."""
        gamma = sample_gamma(self.alpha, (batch, n_groups), generator, device).clamp(min=1e-20)
        return gamma / gamma.sum(1, keepdim=True)

    def hide(self, tokens, ratio, generator):
        ids, n_groups = group_ids(tokens) if tokens.group is not None else (
            torch.zeros(tokens.num_tokens, dtype=torch.long, device=ratio.device), 1)  # one group: random masking
        valid = tokens.valid_mask()  # [B, N]
        n_valid = valid.sum(1)
        n_visible = n_valid - count_hidden(ratio, n_valid)  # [B]
        share = self.shares(tokens.batch_size, n_groups, generator, valid.device)[:, ids]  # [B, N]
        rank = random_rank_in_group(ids, n_groups, valid, generator)
        priority = (rank + 0.5) / share.clamp(min=1e-30)
        visible = hide_lowest(priority, n_visible, valid)
        return valid & ~visible
