"""SiameseModel: two views of one scene, one shared encoder (SiamMAE, CropMAE).

    view 1 = batch[key]     --adapter--> Tokens --(view1_masker or none)--> encoder --> context
    view 2 = batch[key_2]   --adapter--> Tokens --masker (0.95-0.985)--> encoder (same weights)
    decoder: view 2's visible latents + mask tokens, cross-attending to view 1's latents
    loss:    view 2's hidden tokens only

The views come from a view sampler (modalities/views.py: two time steps of a clip at a random
gap, two nested crops of one input) that puts view 1 under the adapter's batch key and view 2 under
the same key with the suffix '_2', so every single-view tool (probes, figures) reads view 1.
"""
from __future__ import annotations

from typing import Optional

import gin

from unimask.encoders import encode_ids
from unimask.interfaces import StepOutput, Target
from unimask.models.masked import OneEncoderModel, decode_latent, init_model_weights, score_decoded
from unimask.tokens import Mask, select_ids

VIEW_2_SUFFIX = "_2"


@gin.configurable
class SiameseModel(OneEncoderModel):
    """adapter, encoder (shared by both views), decoder (reads view 1 as context: a
    CrossSelfDecoder), masker + schedule for view 2, view1_masker + view1_ratio to mask view 1
    too (None: view 1 is seen whole), target / loss as MaskedModel's."""

    def __init__(self, adapter=gin.REQUIRED, encoder=gin.REQUIRED, decoder=gin.REQUIRED, masker=gin.REQUIRED,
                 schedule=gin.REQUIRED, target: Optional[Target] = None, loss=None, view1_masker=None,
                 view1_ratio: float = 0.0):
        super().__init__()
        if not decoder.spec.cross_context:
            raise ValueError(f"SiameseModel needs a decoder that reads view 1 through cross-attention "
                             f"(CrossSelfDecoder), got {type(decoder).__name__}")
        self.adapter, self.encoder, self.decoder = adapter, encoder, decoder
        self.masker, self.schedule, self.view1_masker, self.view1_ratio = masker, schedule, view1_masker, view1_ratio
        masker.check_schedule(schedule)
        self.target = target if target is not None else Target()
        self.loss_fn = loss if loss is not None else adapter.loss
        self.decoder.init_head(self.target.dim(adapter))
        init_model_weights(self, [self.target])
        self.target.attach(self)

    def views(self, batch) -> tuple:
        key = self.adapter.batch_key
        if key not in batch or key + VIEW_2_SUFFIX not in batch:
            raise KeyError(f"SiameseModel needs two views, batch[{key!r}] and batch[{key + VIEW_2_SUFFIX!r}] (a view "
                           f"sampler: FramePairs, CropPairs); the batch has {sorted(batch)}")
        return self.adapter.tokenize(batch[key]), self.adapter.tokenize(batch[key + VIEW_2_SUFFIX])

    def make_masks(self, first, second, progress: float, generator=None) -> tuple:
        """(view 1's mask or None, view 2's mask)."""
        masked = self.masker(second, self.schedule(progress, second.batch_size, generator), generator)
        seen = self.view1_masker(first, self.view1_ratio, generator) if self.view1_masker is not None else None
        return seen, masked

    def forward(self, batch, progress: float = 0.0, generator=None, mask: Optional[Mask] = None,
                mask_only: bool = False) -> StepOutput:
        """-> StepOutput on view 2 (mask, pred, tokens) with extras dec_ids, latent, token_loss,
        view1 (its Tokens) and view1_latent."""
        first, second = self.views(batch)
        view1_mask, mask = (self.make_masks(first, second, progress, generator) if mask is None else (None, mask))
        if mask_only:
            return StepOutput(mask=mask, tokens=second)
        ids1, valid1 = (view1_mask.ids_keep, view1_mask.keep_valid) if view1_mask is not None else \
            select_ids(first.valid_mask())
        context = encode_ids(self.adapter, self.encoder, first, ids1, valid1)  # view 1: the same encoder
        latent = encode_ids(self.adapter, self.encoder, second, mask.ids_keep, mask.keep_valid)
        decoded = decode_latent(self.adapter, self.decoder, latent, mask.ids_keep, mask.keep_valid, second, mask,
                                context=self.decoder.embed(context), context_valid=valid1)
        loss, token_loss = score_decoded(self.adapter, self.target, self.loss_fn, decoded, second, mask)
        return StepOutput(loss=loss, mask=mask, pred=decoded.pred, tokens=second,
                          extras={"dec_ids": decoded.ids, "latent": latent, "token_loss": token_loss, "view1": first,
                                  "view1_latent": context})

    def render(self, batch, out: StepOutput, path: str) -> str:
        """view 1 | masked view 2 | reconstruction of view 2 (the adapter's render_views)."""
        pred = self.target.invert(self.full_prediction(out), out.tokens, self.adapter)
        return self.adapter.render_views(out.extras["view1"], out.tokens, pred, out.mask, path)
