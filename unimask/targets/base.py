"""The Target contract: target(tokens, adapter) -> (values [B, N, T], weight [B, N, T] | None).

What the model may call on a target, all defined on Target: dim, select (the scored rows only),
attach (once, after the model's weights are initialized), after_step, invert (for pictures),
log_stats (numbers to log about the last select);
needs_mask: select also receives the step's Mask (a target that depends on what was hidden).
"""
from __future__ import annotations

from torch import nn

from unimask.tokens import TARGET_WEIGHT, gather_rows, gather_tokens


def target_weight(tokens, ids):
    """The documented per-value weights of the target (Tokens.extras[TARGET_WEIGHT], 0 = no-data)
    at the tokens ids [B, S] -> [B, S, T] | None."""
    weight = tokens.extras.get(TARGET_WEIGHT)
    return None if weight is None else gather_rows(weight, ids).float()


class Target(nn.Module):
    """Base: default = the adapter's own target (raw patches)."""

    needs_mask = False  # True: select(tokens, adapter, ids, mask=...) gets the step's Mask

    def forward(self, tokens, adapter):
        return adapter.target(tokens), None

    def dim(self, adapter) -> int:
        return adapter.target_dim

    def select(self, tokens, adapter, ids):
        """(values, weight) of the tokens ids [B, S] only -> [B, S, T]. Here: all, then gathered;
        per-token targets override it to compute only those rows."""
        values, weight = self(tokens, adapter)
        if weight is None:
            return gather_tokens(values, ids), target_weight(tokens, ids)
        return gather_tokens(values, ids), gather_tokens(weight, ids)

    def attach(self, model):
        """Targets that need the model (a teacher copying the student) take it here."""

    def after_step(self, progress: float):
        """Targets with weights of their own (EMA teachers) update here."""

    def teacher_parts(self):
        """(adapter, encoder) of the teacher network this target reads, for probing it (I-JEPA
        evaluates the target encoder); None for targets without one (pixels, HOG, codes)."""
        return None

    def log_stats(self) -> dict:
        """Numbers about the last select() for the trainer to log ({name: 0-d tensor}, e.g. a
        cluster target's `cluster_entropy`); the model merges them into StepOutput.stats, where
        they replace its own of the same name. None by default."""
        return {}

    def invert(self, pred, tokens, adapter):
        """Predictions [B, N, T] back in patch space, for pictures; identity by default."""
        return pred
