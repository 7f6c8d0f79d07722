"""JEPAModel: latent prediction (I-JEPA, Assran et al., CVPR 2023; V-JEPA, Bardes et al., 2024).

    raw batch --adapter.tokenize--> Tokens --masker--> Mask (context visible, target_blocks [B, M, N])
    context tokens (gathered) --adapter.embed + pos--> encoder --> latent [B, K, D]
    latent + mask tokens at one block's places + pos --predictor--> prediction per target token
    target(Tokens) (the EMA teacher on the full input, no_grad) at those places --loss--> scalar

No pixel decoder: the target is the target encoder's latents (EMATeacherTarget: last layer
layer-normed as I-JEPA, or data2vec's top-k average), scored with L2 (I-JEPA) or L1 (V-JEPA).
The teacher is `self.target`, so the optimizer leaves it out (unimask/optim.py skips `target.`)
and the checkpoint keeps it. Collapse shows in the logged `target_std`.

A plain subclass of PretrainingModel: the trainer calls forward / after_step / features /
param_groups as on any model and needs no change.
"""
from __future__ import annotations

from typing import Optional

import gin
import torch

from unimask.encoders import encode_all, encode_ids
from unimask.interfaces import PretrainingModel, StepOutput, Target
from unimask.losses import MSELoss
from unimask.models.masked import init_model_weights
from unimask.tokens import Mask, Tokens, select_ids


@gin.configurable
class JEPAModel(PretrainingModel):
    """adapter, masker (MultiBlockMasker; any masker works: without target_blocks its hidden tokens
    are one block), encoder (the context encoder), predictor (JEPAPredictor), target (the target
    encoder: EMATeacherTarget), loss (MSELoss = I-JEPA's L2, L1Loss = V-JEPA's; default L2),
    schedule: None for MultiBlockMasker (its blocks set the share; a varying schedule is refused),
    a schedule for a masker that reads the ratio. per_block: one predictor sequence per target
    block (I-JEPA; a token in two overlapping blocks is scored twice), False: one per sample over
    all its target tokens (V-JEPA). probe_target_encoder: features() reads the EMA teacher
    instead of the online encoder (I-JEPA evaluates the target encoder)."""

    init_from_fresh = ("predictor.", "target.", "masker.")  # parts an encoder-only weights file lacks
    init_from_drop = ("head.", "fc_norm.")

    def __init__(self, adapter=gin.REQUIRED, masker=gin.REQUIRED, encoder=gin.REQUIRED, predictor=gin.REQUIRED,
                 target: Target = gin.REQUIRED, loss=None, schedule=None, per_block: bool = True,
                 probe_target_encoder: bool = False):
        super().__init__()
        masker.check_schedule(schedule)
        if probe_target_encoder and target.teacher_parts() is None:
            raise ValueError(f"JEPAModel.probe_target_encoder=True needs a teacher target (EMATeacherTarget, "
                             f"TeacherTarget), got {type(target).__name__}")
        self.adapter, self.masker, self.schedule, self.encoder, self.predictor = adapter, masker, schedule, encoder, predictor
        self.target, self.loss_fn = target, loss if loss is not None else MSELoss()
        self.per_block, self.probe_target_encoder = per_block, probe_target_encoder
        self.predictor.init_head(target.dim(adapter))
        init_model_weights(self, [self.target])
        self.target.attach(self)  # an EMA teacher copies the initialized adapter + encoder

    def make_mask(self, tokens: Tokens, progress: float, generator=None) -> Mask:
        ratio = self.schedule(progress, tokens.batch_size, generator) if self.schedule is not None else 0.0
        return self.masker(tokens, ratio, generator)

    def forward(self, batch, progress: float = 0.0, generator=None, mask: Optional[Mask] = None,
                mask_only: bool = False) -> StepOutput:
        """-> StepOutput(loss, stats {'target_std'}, mask, pred [R, S, T], tokens, extras: owner [R]
        (the sample of each predicted sequence), pred_ids / pred_valid [R, S], latent [B, K, D],
        token_loss [R, S])."""
        tokens = self.adapter.tokenize(batch)
        if mask is None:
            mask = self.make_mask(tokens, progress, generator)
        if mask_only:
            return StepOutput(mask=mask, tokens=tokens)
        latent = encode_ids(self.adapter, self.encoder, tokens, mask.ids_keep, mask.keep_valid)  # context only
        rows, ids, valid, block_ids = target_sequences(mask, self.per_block)
        owner = torch.div(rows, block_ids.shape[1], rounding_mode="floor")  # [R] the sample of each sequence
        pred = self.predictor.predict(self.adapter, tokens, latent, mask.ids_keep, mask.keep_valid, owner, ids, valid)
        # the target of every block's tokens (a teacher runs once on the full input), then the kept rows
        values, weight = self.target.select(tokens, self.adapter, block_ids.flatten(1))  # [B, M * S, T]
        values, weight = (None if v is None else v.unflatten(1, block_ids.shape[1:]).flatten(0, 1)[rows]
                          for v in (values, weight))  # [R, S, T]
        if values.is_floating_point():
            values = values.to(pred.dtype)
        token_loss = self.loss_fn(pred, values, weight) * valid  # [R, S]
        loss = token_loss.sum() / valid.sum().clamp(min=1) if ids.numel() else pred.sum() * 0.0
        stats = {"target_std": feature_std(values, valid), **self.target.log_stats()}  # a target's own replace it
        return StepOutput(loss=loss, stats=stats, mask=mask, pred=pred, tokens=tokens,
                          extras={"owner": owner, "pred_ids": ids, "pred_valid": valid, "latent": latent,
                                  "token_loss": token_loss})

    def after_step(self, progress: float):
        """The EMA teacher's momentum step (its schedule reads progress), then the masker's."""
        self.target.after_step(progress)
        self.masker.after_step(progress)

    @torch.no_grad()
    def features(self, batch) -> tuple:
        """Every token visible through the online encoder, or the EMA teacher's (probe_target_encoder):
        (tokens [B, N, D], valid [B, N])."""
        if self.probe_target_encoder:
            return encode_all(*self.target.teacher_parts(), batch)
        return encode_all(self.adapter, self.encoder, batch)

    def render(self, batch, out: StepOutput, path: str) -> str:
        raise NotImplementedError("JEPAModel predicts target-encoder latents: there are no pixels to draw")


def target_sequences(mask: Mask, per_block: bool) -> tuple:
    """The predictor's sequences: one per non-empty target block (per_block) or per sample with
    targets. -> rows [R] long (which of the B * M (sample, block) pairs, sample-major), ids [R, S] and
    valid [R, S] (its target tokens), block_ids [B, M, S] (every block's tokens, padded; M = 1
    without per_block)."""
    blocks = mask.target_blocks if per_block and mask.target_blocks is not None else mask.targets[:, None]
    batch, m, n = blocks.shape
    ids, valid = select_ids(blocks.reshape(batch * m, n))  # [B * M, S]
    rows = valid.any(1).nonzero().squeeze(1)  # [R] the non-empty blocks
    return rows, ids[rows], valid[rows], ids.view(batch, m, -1)


def feature_std(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Std of the target features over every scored token of the batch, averaged over channels: 0
    when the targets collapse to one vector. Masked sums, so no host sync on a GPU.
    values [R, S, T], valid [R, S] -> [] float (detached)."""
    v, w = values.detach().float(), valid[..., None].float()
    count = w.sum()
    mean = (v * w).sum((0, 1)) / count.clamp(min=1)  # [T]
    var = ((v - mean).square() * w).sum((0, 1)) / (count - 1).clamp(min=1)
    return var.sqrt().mean()
