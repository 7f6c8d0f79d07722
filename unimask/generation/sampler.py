"""Iterative unmasking (MaskGIT, Chang et al. 2022; MDLM / MD4's ancestral sampler).

`iterative_unmask(predict, ids, hidden, steps)` takes `steps` steps over the places `hidden`
marks. At each step `predict(ids, hidden)` gives logits at every place, a token is drawn at each
still-hidden place, and some of them are kept (decided for good: MDLM's carry-over):
    order='random'      each hidden place is kept with probability (h_t - h_s) / h_t, where h is
                        the schedule's hidden share before (t) and after (s) the step (MDLM's
                        ancestral rule: at the end every place is decided);
    order='confidence'  the places whose drawn token is most probable are kept, as many as
                        leave round(n * h_s) hidden (MaskGIT). choice_temperature > 0 adds
                        MaskGIT's Gumbel noise to the log-probabilities, annealed linearly to 0
                        over the steps, so early choices are less greedy.
The schedule of the hidden share after step i of T: 'linear' 1 - (i + 1) / T (MDLM), 'cosine'
cos(pi / 2 * (i + 1) / T) (MaskGIT: few tokens decided early, many late).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Optional

import torch

ORDERS = ("random", "confidence")
SCHEDULES = ("linear", "cosine")


@contextlib.contextmanager
def all_hidden_as_mask(model):
    """Within: the model in eval mode and every hidden token fed as [MASK] (replace_probs (1, 0, 0)),
    whatever 80/10/10 split it was trained with: predictions for generation and fill-in read
    [MASK] at every place they predict."""
    probs, training = model.replace_probs, model.training
    model.replace_probs = (1.0, 0.0, 0.0)
    model.eval()
    try:
        yield model
    finally:
        model.replace_probs = probs
        model.train(training)


def hidden_share(step: int, steps: int, schedule: str) -> float:
    """The share of the places still hidden after `step` steps of `steps` (1 at step 0, 0 at the end)."""
    progress = step / steps
    if schedule == "linear":
        return 1.0 - progress
    return math.cos(0.5 * math.pi * progress)


def draw(logits: torch.Tensor, temperature: float, generator: Optional[torch.Generator]) -> tuple:
    """logits [B, L, V] -> (tokens [B, L], their probabilities [B, L]); temperature 0 = argmax."""
    probs = torch.softmax(logits / max(temperature, 1e-6), -1) if temperature > 0 else torch.softmax(logits, -1)
    if temperature > 0:
        tokens = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(probs.shape[:2])
    else:
        tokens = probs.argmax(-1)
    return tokens, torch.gather(probs, 2, tokens[..., None])[..., 0]


def check_settings(steps: int, order: str, schedule: str, choice_temperature: float):
    """A clear error naming the setting, before any model call."""
    rules = ((order in ORDERS, f"order={order!r}: use one of {ORDERS}"),
             (schedule in SCHEDULES, f"schedule={schedule!r}: use one of {SCHEDULES}"),
             (steps >= 1, f"steps={steps} must be >= 1"),
             (choice_temperature >= 0, f"choice_temperature={choice_temperature} must be >= 0"))
    for ok, message in rules:
        if not ok:
            raise ValueError(message)


@torch.no_grad()
def iterative_unmask(predict: Callable, ids: torch.Tensor, hidden: torch.Tensor, steps: int,
                     order: str = "confidence", schedule: str = "linear", temperature: float = 1.0,
                     choice_temperature: float = 0.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """predict(ids [B, L], hidden [B, L] bool) -> logits [B, L, V] (only hidden places are read);
    ids [B, L] long (hidden places may hold anything), hidden [B, L] bool -> ids [B, L] with every
    hidden place decided. Deterministic for a seeded generator (CPU draws)."""
    check_settings(steps, order, schedule, choice_temperature)
    ids, hidden = ids.clone(), hidden.clone()
    n_places = hidden.sum(1).double()  # [B]
    for step in range(steps):
        before, after = hidden_share(step, steps, schedule), hidden_share(step + 1, steps, schedule)
        tokens, confidence = draw(predict(ids, hidden), temperature, generator)  # [B, L] x2
        if order == "random":
            keep = hidden & (torch.rand(hidden.shape, generator=generator) < (before - after) / before)
        else:
            n_keep = hidden.sum(1) - torch.round(n_places * after).long()  # [B]
            score = confidence.clamp(min=1e-30).log()
            if choice_temperature > 0:  # MaskGIT: Gumbel noise, annealed to 0 over the steps
                gumbel = -torch.log(-torch.log(torch.rand(score.shape, generator=generator).clamp(1e-20, 1.0)))
                score = score + choice_temperature * (1.0 - (step + 1) / steps) * gumbel
            score = torch.where(hidden, score, torch.full_like(score, float("-inf")))
            rank = torch.argsort(torch.argsort(score, dim=1, descending=True, stable=True), dim=1, stable=True)
            keep = hidden & (rank < n_keep[:, None])
        ids = torch.where(keep, tokens, ids)
        hidden = hidden & ~keep
    return ids
