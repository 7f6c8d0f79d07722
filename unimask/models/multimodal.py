"""MultiModalModel: several adapters, one shared encoder (MultiMAE, OmniMAE, CAV-MAE).

    per modality m:  batch[m] --adapter_m.tokenize--> Tokens_m   (valid=False where m is missing)
    masking:         one budget masker over all tokens (DirichletMasker: the visible count split
                     across modalities, Tokens.group = modality), or one masker per modality
    encoder input:   for each modality in sorted name order: its visible tokens embedded
                     by adapter_m + adapter_m's position codes + a learned modality embedding,
                     concatenated -> one encoder -> split back per modality
    per modality m:  decoder_m sees its own latents and mask tokens, plus the other modalities'
                     latents as context (so a fully hidden modality is predicted from the others),
                     target_m, loss_m; the loss is the sum of loss_weights[m] * loss_m

Each modality keeps its own Tokens, Mask, decoder, target and loss, as the single-modality
MaskedModel does (this file reuses its decode_latent / score_decoded). A modality missing from a
sample (batch['present'][m] False) contributes no encoder tokens and no loss.
"""
from __future__ import annotations

from typing import Dict, Optional

import gin
import torch
from torch import nn

from unimask.encoders import embed_ids, position_codes
from unimask.interfaces import PretrainingModel, StepOutput, Target
from unimask.models.masked import decode_latent, init_model_weights, score_decoded
from unimask.probe.features import pool_rows
from unimask.tokens import Mask, Tokens, select_ids


class MultiMask(dict):
    """{modality: Mask}; `ratio` [B] is the share of all real tokens hidden, for the trainer's log."""

    @property
    def ratio(self) -> torch.Tensor:
        hidden = sum(m.masked.sum(1).double() for m in self.values())
        total = sum((m.masked | is_visible(m)).sum(1).double() for m in self.values())
        return (hidden / total.clamp(min=1)).float()


def is_visible(mask: Mask) -> torch.Tensor:
    """[B, N] bool: the tokens the encoder sees."""
    visible = torch.zeros_like(mask.masked)
    return visible.scatter(1, mask.ids_keep, mask.keep_valid)


class ScheduleSet:
    """Per-modality ratio schedules behind one state_dict (what the trainer checkpoints)."""

    def __init__(self, schedules: dict):
        self.schedules = schedules

    def state_dict(self) -> dict:
        return {name: schedule.state_dict() for name, schedule in self.schedules.items()}

    def load_state_dict(self, state: dict):
        for name, schedule in self.schedules.items():
            schedule.load_state_dict(state[name])


def as_dict(value, names, what: str) -> dict:
    """One value for every modality, or a dict naming each one."""
    if isinstance(value, dict):
        missing, extra = set(names) - set(value), set(value) - set(names)
        if missing or extra:
            raise ValueError(f"MultiModalModel.{what} must name the modalities {list(names)}; "
                             f"missing {sorted(missing)}, unknown {sorted(extra)}")
        return dict(value)
    return {name: value for name in names}


@gin.configurable
class MultiModalModel(PretrainingModel):
    """adapters: {modality: adapter}, its keys are batch keys (batch[m] is adapter m's input);
    the encoder sees the modalities in sorted name order. decoders / targets / losses / loss_weights: one per
    modality (a dict) or one for all. masker + schedule: one budget masker (over all modalities'
    tokens, group = modality) or dicts of per-modality maskers and schedules. modality_embedding:
    a learned vector per modality added to its encoder input (MultiMAE); OmniMAE has none, so
    one model treats inputs of different adapters on one grid alike."""

    def __init__(self, adapters: dict = gin.REQUIRED, encoder=gin.REQUIRED, decoders=gin.REQUIRED,
                 masker=gin.REQUIRED, schedule=gin.REQUIRED, targets=None, losses=None,
                 loss_weights: Optional[dict] = None, modality_embedding: bool = True):
        super().__init__()
        if not isinstance(adapters, dict) or len(adapters) < 1:
            raise ValueError("MultiModalModel.adapters must be a dict {modality: adapter}")
        if encoder.uses_tokens:
            raise ValueError(f"MultiModalModel needs an encoder over a set of tokens (a ViT); {type(encoder).__name__} "
                             "reads one modality's Tokens")
        self.names = sorted(adapters)  # the encoder's input order: sorted, as gin's config_str keeps dicts
        self.adapters, self.encoder = nn.ModuleDict(adapters), encoder
        self.decoders = nn.ModuleDict(as_dict(decoders, self.names, "decoders"))
        if any(d.spec.window is not None for d in self.decoders.values()):
            raise ValueError("MultiModalModel: local-window decoders cannot take the other modalities as context")
        self.targets = nn.ModuleDict({n: t if t is not None else Target()
                                      for n, t in as_dict(targets, self.names, "targets").items()})
        losses = as_dict(losses, self.names, "losses")
        self.loss_fns = {n: (fn if fn is not None else self.adapters[n].loss) for n, fn in losses.items()}
        self.loss_weights = as_dict(1.0 if loss_weights is None else loss_weights, self.names, "loss_weights")
        self.per_modality_masking = isinstance(masker, dict)
        self.maskers = as_dict(masker, self.names, "masker") if self.per_modality_masking else {None: masker}
        if any(m.needs_features for m in self.maskers.values()):
            raise ValueError("MultiModalModel: learned maskers are not supported across modalities")
        if self.per_modality_masking:
            self.schedule = ScheduleSet(as_dict(schedule, self.names, "schedule"))
        elif isinstance(schedule, dict):
            raise ValueError("MultiModalModel: one budget masker takes one schedule")
        else:
            self.schedule = schedule
        for name, masker in self.maskers.items():
            masker.check_schedule(self.schedule.schedules[name] if self.per_modality_masking else self.schedule)
        self.modality_embed = nn.ParameterDict({n: nn.Parameter(torch.zeros(1, 1, encoder.dim)) for n in self.names}
                                               if modality_embedding else {})
        for name in self.names:
            self.decoders[name].init_head(self.targets[name].dim(self.adapters[name]))
        init_model_weights(self, self.targets.values())
        for parameter in self.modality_embed.values():
            nn.init.normal_(parameter, std=0.02)
        for target in self.targets.values():
            target.attach(self)
        self.feature_modalities = tuple(self.names)  # what features() encodes; tools/eval.py --modality sets it
        self.features_per_modality = False  # features(): one mean row per modality (--modality all)

    # ---- tokens and masks -----------------------------------------------------------------
    def tokenize(self, batch, names=None) -> Dict[str, Tokens]:
        """{modality: Tokens}, padding where batch['present'][m] is False (a missing modality)."""
        present = batch.get("present", {}) if isinstance(batch, dict) else {}
        tokens = {}
        for name in names or self.names:
            if name not in batch:
                raise KeyError(f"the batch has no {name!r} (MultiModalModel.adapters names the batch keys): "
                               f"keys {sorted(batch)}")
            t = self.adapters[name].tokenize(batch[name])
            if name in present:
                t = t.replace(valid=t.valid_mask() & present[name].to(t.patches.device).bool()[:, None])
            tokens[name] = t
        return tokens

    def make_mask(self, tokens: Dict[str, Tokens], progress: float, generator=None) -> MultiMask:
        batch = next(iter(tokens.values())).batch_size
        if self.per_modality_masking:
            ratios = {n: s(progress, batch, generator) for n, s in self.schedule.schedules.items()}
            return MultiMask({n: self.maskers[n](t, ratios[n], generator) for n, t in tokens.items()})
        joint = joint_tokens(tokens)
        ratio = self.schedule(progress, batch, generator)
        hidden = self.maskers[None](joint, ratio, generator).masked  # [B, sum N]
        masks, start = MultiMask(), 0
        for name, t in tokens.items():
            masks[name] = Mask.from_hidden(hidden[:, start:start + t.num_tokens], t.valid_mask(), ratio)
            start += t.num_tokens
        return masks

    # ---- encoder -----------------------------------------------------------------------------
    def encode(self, tokens: Dict[str, Tokens], ids: Dict[str, torch.Tensor], valid: Dict[str, torch.Tensor]) -> dict:
        """The tokens ids[m] [B, K_m] of every modality through the one encoder, in sorted name order
        -> {modality: latent [B, K_m, D]}."""
        xs, codes = [], []
        for name, t in tokens.items():
            x = embed_ids(self.adapters[name], t, ids[name])
            codes.append(position_codes(self.adapters[name], t, ids[name], x))
            x = x + codes[-1]
            xs.append(x + self.modality_embed[name].to(x.dtype) if name in self.modality_embed else x)
        x, key_valid, pos = torch.cat(xs, 1), torch.cat([valid[n] for n in tokens], 1), torch.cat(codes, 1)
        latent = self.encoder(x, key_valid, None, None, pos=pos if self.encoder.pos_every_block else None)
        out, start = {}, 0
        for name in tokens:
            out[name] = latent[:, start:start + ids[name].shape[1]]
            start += ids[name].shape[1]
        return out

    # ---- the pipeline ---------------------------------------------------------------------------
    def forward(self, batch, progress: float = 0.0, generator=None, mask: Optional[MultiMask] = None,
                mask_only: bool = False) -> StepOutput:
        """-> StepOutput with one entry per modality in mask, tokens, pred, terms and extras
        (latent, dec_ids, token_loss): every modality's term is logged."""
        tokens = self.tokenize(batch)
        if mask is None:
            mask = self.make_mask(tokens, progress, generator)
        if mask_only:
            return StepOutput(mask=mask, tokens=tokens)
        latent = self.encode(tokens, {n: m.ids_keep for n, m in mask.items()}, {n: m.keep_valid for n, m in mask.items()})
        out = StepOutput(mask=mask, tokens=tokens, pred={},
                         extras={"latent": latent, "dec_ids": {}, "token_loss": {}})
        loss = 0.0
        for name in self.names:
            context, context_valid = self.context_for(name, latent, mask)
            decoded = decode_latent(self.adapters[name], self.decoders[name], latent[name], mask[name].ids_keep,
                                    mask[name].keep_valid, tokens[name], mask[name], context, context_valid)
            term, token_loss = score_decoded(self.adapters[name], self.targets[name], self.loss_fns[name], decoded,
                                             tokens[name], mask[name])
            out.pred[name], out.extras["dec_ids"][name], out.extras["token_loss"][name] = (decoded.pred, decoded.ids,
                                                                                          token_loss)
            out.terms[name] = term.detach()
            loss = loss + self.loss_weights[name] * term
        out.loss = loss
        return out

    def context_for(self, name: str, latent: dict, mask: MultiMask) -> tuple:
        """The other modalities' latents at decoder `name`'s width: ([B, C, Dd], valid [B, C])."""
        others = [n for n in self.names if n != name]
        if not others:
            return None, None
        decoder = self.decoders[name]
        context = torch.cat([decoder.embed(latent[n]) for n in others], 1)
        return context, torch.cat([mask[n].keep_valid for n in others], 1)

    @torch.no_grad()
    def features(self, batch) -> tuple:
        """Encoder features with every token of `feature_modalities` visible (the others left
        out): (tokens [B, sum N_m, D], valid), all modalities encoded together.

        With `features_per_modality` (tools/eval.py --modality all): one row per modality
        instead, the mean of its tokens' features -> ([B, M, D], valid [B, M] = the sample has
        it), so a probe can set the modalities side by side (pool 'flatten') and weigh each on
        its own, rather than read one mean in which every modality's features are summed."""
        tokens = self.tokenize(batch, self.feature_modalities)
        ids, valid = {}, {}
        for name, t in tokens.items():
            ids[name], valid[name] = select_ids(t.valid_mask())
        latent = self.encode(tokens, ids, valid)
        if self.features_per_modality:
            rows = [pool_rows(latent[n], valid[n], "mean") for n in tokens]  # [B, D] each
            return torch.stack(rows, 1), torch.stack([valid[n].any(1) for n in tokens], 1)
        return torch.cat([latent[n] for n in tokens], 1), torch.cat([valid[n] for n in tokens], 1)

    def probe_modalities(self, name: str):
        """features() reads modality `name` alone, or with 'all' every modality, one mean row each."""
        if name != "all" and name not in self.names:
            raise ValueError(f"--modality {name!r}: the model's modalities are {self.names} (or 'all')")
        self.feature_modalities = tuple(self.names) if name == "all" else (name,)
        self.features_per_modality = name == "all"

    def after_step(self, progress: float):
        for target in self.targets.values():
            target.after_step(progress)
        for masker in self.maskers.values():
            masker.after_step(progress)

    def full_prediction(self, out: StepOutput, name: str) -> torch.Tensor:
        """Modality `name`'s predictions scattered back to all its tokens: [B, N, T]."""
        pred, dec_ids, t = out.pred[name], out.extras["dec_ids"][name], out.tokens[name]
        full = torch.zeros(t.batch_size, t.num_tokens, pred.shape[-1], dtype=pred.dtype, device=pred.device)
        return full.scatter(1, dec_ids[..., None].expand_as(pred), pred)

    def render(self, batch, out: StepOutput, path: str) -> str:
        """One figure per modality that can draw (path with _<modality> before the extension);
        returns the first one written."""
        import os

        written = []
        root, ext = os.path.splitext(path)
        for name in self.names:
            try:
                pred = self.targets[name].invert(self.full_prediction(out, name), out.tokens[name],
                                                 self.adapters[name])
                written.append(self.adapters[name].render(out.tokens[name], pred, out.mask[name],
                                                          f"{root}_{name}{ext}"))
            except NotImplementedError:
                continue
        if not written:
            raise NotImplementedError("no modality of this model can draw its reconstruction")
        return written[0]

    # ---- what probes read -----------------------------------------------------------------------
    @property
    def adapter(self):
        """The probes' view of the data: labels, and the raw tokens of `feature_modalities`."""
        return JointView(self)


def joint_tokens(tokens: Dict[str, Tokens]) -> Tokens:
    """All modalities' tokens as one set for a budget masker: validity and group (= modality
    index) only; patches are placeholders. -> Tokens [B, sum N, 1]."""
    first = next(iter(tokens.values()))
    valid = torch.cat([t.valid_mask() for t in tokens.values()], 1)
    group = torch.cat([torch.full((t.num_tokens,), i, dtype=torch.long, device=valid.device)
                       for i, t in enumerate(tokens.values())])
    placeholder = torch.zeros(first.batch_size, valid.shape[1], 1, device=valid.device)
    return Tokens(placeholder, placeholder, valid, group=group)


class JointView:
    """model.adapter for probes (tools/eval.py, unimask/probe): labels from the batch, and the
    raw tokens of the modalities being probed, patches zero-padded to one width."""

    def __init__(self, model: MultiModalModel):
        self.model = model

    def labels(self, batch):
        return batch.get("label") if isinstance(batch, dict) else None

    def tokenize(self, batch) -> Tokens:
        tokens = self.model.tokenize(batch, self.model.feature_modalities)
        width = max(t.patches.shape[-1] for t in tokens.values())
        patches = torch.cat([nn.functional.pad(t.patches.float(), (0, width - t.patches.shape[-1]))
                             for t in tokens.values()], 1)
        joint = joint_tokens(tokens)
        return Tokens(patches, torch.zeros_like(patches[..., :1]), joint.valid, group=joint.group)

    def raw_features(self, tokens: Tokens) -> torch.Tensor:  # [B, N, F]: the joint patches (the raw baseline)
        return torch.cat([tokens.patches.float(), tokens.coords.float()], -1)
