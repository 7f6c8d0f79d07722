"""FrequencyTarget (Masked Frequency Modeling): the band of the spectrum FrequencyMasker removed,
as patches of the input it makes up (original - filtered), so the per-token MSE the model
scores is, by Parseval, the squared distance between the predicted and the true spectrum on the
removed frequencies (plus a push towards zero on the kept ones). MFM averages the unsquared
complex distance |F(pred) - F(x)| over the removed frequencies instead; both are zero exactly
when the missing band is restored.
"""
from __future__ import annotations

import gin

from unimask.interfaces import Target
from unimask.tokens import INPUT_PATCHES, gather_rows


@gin.configurable
class FrequencyTarget(Target):
    needs_mask = True

    def forward(self, tokens, adapter):
        raise ValueError("FrequencyTarget needs the step's Mask (made by FrequencyMasker): the model passes it to select")

    def select(self, tokens, adapter, ids, mask=None):
        """The removed band at the tokens ids [B, S] -> [B, S, P] float."""
        if mask is None or INPUT_PATCHES not in mask.aux:
            raise ValueError("FrequencyTarget needs FrequencyMasker's mask (Mask.aux holds the filtered input)")
        residual = tokens.patches.float() - mask.aux[INPUT_PATCHES].float()  # [B, N, P]
        return gather_rows(residual, ids), None
