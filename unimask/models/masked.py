"""MaskedModel: tokenize -> mask -> encode -> decode -> loss, for any adapter.

drop mode (MAE): the encoder sees the visible tokens only and the decoder fills hidden
places with a mask token. replace mode (SimMIM, BERT, GraphMAE): hidden tokens become a
learned [MASK] embedding (or a random / kept token, `replace_probs`) and the encoder sees
all tokens. Dual masking (VideoMAE v2): `decoder_masker` picks the hidden tokens the
decoder reconstructs; the rest are never decoded.

The model talks to its parts through their base classes only, all in unimask/interfaces.py:
adapter, encoder, decoder, masker, schedule, target, loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import gin
import torch
from torch import nn

from unimask.encoders import embed_ids, encode_all, encode_ids, encode_layers, position_codes
from unimask.interfaces import ModalityAdapter, Objective, PretrainingModel, StepOutput, Target
from unimask.position_prediction import accepts_block_masks
from unimask.tokens import INPUT_PATCHES, Mask, Tokens, gather_rows, gather_tokens, select_ids


LOSS_WEIGHTINGS = ("tokens", "inverse_ratio")


@dataclass
class Decoded:
    """The decoder's predictions pred [B, M, T] for the tokens ids [B, M] (valid [B, M]), and which
    of them the loss scores, found once per step: rows [B, S] (valid rows_valid) into M, or None
    when every valid row is scored (a decoder that `predicts_rows` returns only those)."""
    pred: torch.Tensor
    ids: torch.Tensor
    valid: torch.Tensor
    rows: Optional[torch.Tensor] = None
    rows_valid: Optional[torch.Tensor] = None


class OneEncoderModel(PretrainingModel):
    """What the trainer and the probes call on a model with one adapter, one encoder, one masker
    and one target (MaskedModel, SiameseModel): frozen features and the per-step hook."""

    @torch.no_grad()
    def features(self, batch) -> tuple:
        """Frozen-encoder features with every token visible: (tokens [B, N, D], valid [B, N]).
        A two-view model's adapter reads view 1 (its batch key), so probes see one view."""
        return encode_all(self.adapter, self.encoder, batch)

    def after_step(self, progress: float):
        """Called by the trainer after every optimizer step (EMA teachers, masker curricula)."""
        self.target.after_step(progress)
        self.masker.after_step(progress)

    def full_prediction(self, out: StepOutput) -> torch.Tensor:
        """Scatter decoder predictions back to all tokens: [B, N, T] (zeros where not decoded)."""
        pred, dec_ids, tokens = out.pred, out.extras["dec_ids"], out.tokens
        full = torch.zeros(tokens.batch_size, tokens.num_tokens, pred.shape[-1], dtype=pred.dtype, device=pred.device)
        return full.scatter(1, dec_ids[..., None].expand_as(pred), pred)


@gin.configurable
class MaskedModel(OneEncoderModel):
    # train.init_from (unimask/weights): parts an encoder-only file (timm) lacks, and a classifier's parts
    init_from_fresh = ("decoder.", "target.", "enc_mask_token", "masker.", "objectives.", "position_predictor.")
    init_from_drop = ("head.", "fc_norm.")

    @classmethod
    def from_checkpoint(cls, path: str, gin_files=(), gin_params=(), strict: bool = True) -> nn.Module:
        """The model of a unimask checkpoint (its own gin config) or, with gin files describing
        the model, of a timm / MAE / VideoMAE / Hugging Face file, weights loaded and reported."""
        from unimask.weights.build import model_from_checkpoint

        return model_from_checkpoint(path, gin_files, gin_params, strict=strict, verbose=True)[0]

    def __init__(self, adapter, masker, schedule, encoder, decoder, target: Optional[Target] = None,
                 loss=None, mode: str = "drop", decoder_masker=None, decoder_ratio: float = 0.5,
                 replace_probs: Sequence[float] = (1.0, 0.0, 0.0), objectives: Sequence[Objective] = (),
                 loss_weighting: str = "tokens", position_predictor: Optional[nn.Module] = None):
        """position_predictor: PCP-MAE's (unimask/position_prediction.py): the decoder reads the
        encoder's predicted positions of the hidden tokens instead of their true ones (drop mode).
        objectives: terms beside the reconstruction (unimask/objectives.py: a teacher's features
        at the visible tokens, edges hidden from the encoder), each logged by name; decoder=None leaves them alone
        (MaskAlign: no reconstruction at all)."""
        super().__init__()
        if isinstance(adapter, dict):
            raise TypeError("MaskedModel takes one adapter; for several modalities and one encoder use "
                            "MultiModalModel (unimask/models/multimodal.py: adapters, decoders, targets, losses per modality)")
        if mode not in ("drop", "replace"):
            raise ValueError(f"MaskedModel.mode must be 'drop' or 'replace', got {mode!r}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"MaskedModel.loss_weighting must be one of {LOSS_WEIGHTINGS}, got {loss_weighting!r}")
        self.loss_weighting = loss_weighting
        if abs(sum(replace_probs) - 1) > 1e-6 or len(replace_probs) != 3:
            raise ValueError(f"MaskedModel.replace_probs must be 3 numbers (mask, random, keep) summing to 1, got {replace_probs}")
        self.adapter, self.encoder, self.decoder = adapter, encoder, decoder
        self.masker, self.schedule, self.decoder_masker = masker, schedule, decoder_masker
        masker.check_schedule(schedule)  # a masker that sets its own share refuses a varying ratio
        if masker.allow_all_hidden and mode != "replace":
            raise ValueError(f"{type(masker).__name__}.allow_all_hidden=True needs MaskedModel.mode='replace' "
                             "(in drop mode a sample with every token hidden leaves the encoder nothing to read)")
        self.decoder_ratio, self.mode, self.replace_probs = decoder_ratio, mode, tuple(replace_probs)
        self.target = target if target is not None else Target()
        self.loss_fn = loss if loss is not None else adapter.loss
        if decoder is None and (not objectives or position_predictor is not None or decoder_masker is not None):
            raise ValueError("MaskedModel.decoder=None needs objectives to score (and no position_predictor or "
                             "decoder_masker, which feed a decoder)")
        if decoder is not None:
            self.decoder.init_head(self.target.dim(adapter))
        self.enc_mask_token = nn.Parameter(torch.zeros(1, 1, encoder.dim)) if mode == "replace" else None
        self.objectives = nn.ModuleList(objectives)  # objective(out, src_ids, src_valid) -> weighted scalar
        for objective in self.objectives:
            objective.bind(self)
        self.keep_layers = any(objective.layers for objective in self.objectives)
        init_model_weights(self, self.loaded_targets())
        if self.enc_mask_token is not None:
            nn.init.normal_(self.enc_mask_token, std=0.02)
        if position_predictor is not None and mode != "drop":
            raise ValueError("MaskedModel.position_predictor needs mode='drop' (the hidden tokens ride along "
                             "through the encoder without their positions)")
        if position_predictor is not None and not accepts_block_masks(encoder):
            raise ValueError(f"MaskedModel.position_predictor needs an encoder with transformer blocks and "
                             f"per-block attention masks (ViTEncoder: forward(..., block_masks=)); "
                             f"got {type(encoder).__name__}")
        self.position_predictor = position_predictor
        if position_predictor is not None:
            position_predictor.reset_token()
        self.target.attach(self)  # a teacher copies the student once its weights are initialized

    def loaded_targets(self) -> list:
        """The model's target and its objectives' (teachers, tokenizers): what initialization skips."""
        return [self.target, *(t for objective in self.objectives for t in objective.targets())]

    def after_step(self, progress: float):
        super().after_step(progress)
        for objective in self.objectives:
            objective.after_step(progress)

    @property
    def restarts_stages(self) -> bool:
        return self.target.takes_student

    def begin_stage(self, stage: int):
        """dBOT: the teacher takes the student's weights, then every student weight is drawn again
        (seeded by the stage, so a resumed run draws the same ones)."""
        self.target.begin_stage(self)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stage)
            reinitialize(self, self.loaded_targets())

    # ---- masking -------------------------------------------------------------------------
    def make_mask(self, tokens: Tokens, progress: float, generator=None) -> Mask:
        ratio = self.schedule(progress, tokens.batch_size, generator)
        # a learning masker reads every embedded token
        kwargs = {"features": self.embed_tokens(tokens, all_ids(tokens))} if self.masker.needs_features else {}
        mask = self.masker(tokens, ratio, generator, **kwargs)
        return self.add_decoder_mask(tokens, mask, generator)

    def add_decoder_mask(self, tokens: Tokens, mask: Mask, generator=None) -> Mask:
        """Dual masking: set `mask.decode` to the hidden tokens the decoder keeps (no-op without
        a decoder_masker)."""
        if self.decoder_masker is not None:
            hidden = Tokens(tokens.patches, tokens.coords, mask.masked & tokens.valid_mask(), tokens.grid, tokens.group)
            decode = self.decoder_masker(hidden, self.decoder_ratio, generator)
            mask.decode = mask.masked & ~decode.masked  # the part of the hidden tokens the decoder keeps
        return mask

    # ---- encoder -------------------------------------------------------------------------
    def embed_tokens(self, tokens: Tokens, ids: torch.Tensor) -> torch.Tensor:
        """The encoder's input for the tokens ids [B, K]: embedded + position codes -> [B, K, D]."""
        x = embed_ids(self.adapter, tokens, ids)
        return x + position_codes(self.adapter, tokens, ids, x)

    def encode(self, tokens: Tokens, mask: Mask, generator=None):
        """-> latent [B, K, D], ids [B, K] of the tokens it belongs to, their validity [B, K], and
        every layer's output (a list of [B, K, D]) when an objective reads one, else []."""
        if self.mode == "drop":
            ids, valid, x = mask.ids_keep, mask.keep_valid, None
        else:
            ids, valid = all_ids(tokens), tokens.valid_mask()
            seen = tokens.replace(patches=mask.aux[INPUT_PATCHES]) if INPUT_PATCHES in mask.aux else tokens  # MFM
            x = self.replace_hidden(embed_ids(self.adapter, seen, ids), tokens, mask, ids, generator)  # [B, N, D]
        if not self.keep_layers:
            return encode_ids(self.adapter, self.encoder, tokens, ids, valid, x=x), ids, valid, []
        layers = encode_layers(self.adapter, self.encoder, tokens, ids, valid, x=x)
        return self.encoder.final_norm(layers[-1]), ids, valid, layers

    def replace_hidden(self, x, tokens, mask, ids, generator):
        """BERT 80/10/10: hidden tokens -> [MASK] / a random token / themselves. x [B, N, D]."""
        p_mask, p_random, _ = self.replace_probs
        device = x.device
        gen_device = generator.device if generator is not None else device
        u = torch.rand(mask.masked.shape, generator=generator, device=gen_device).to(device)
        to_mask = mask.masked & (u < p_mask)
        to_random = mask.masked & (u >= p_mask) & (u < p_mask + p_random)
        if bool(to_random.any()):
            random_patches = self.adapter.random_patches(tokens.patches, generator)
            if random_patches is None:  # another real token of the batch
                flat_valid = torch.nonzero(tokens.valid_mask().flatten()).squeeze(1)
                pick = torch.randint(len(flat_valid), mask.masked.shape, generator=generator, device=gen_device).to(device)
                random_patches = tokens.patches.flatten(0, 1)[flat_valid[pick]]
            x = torch.where(to_random[..., None], self.adapter.embed(random_patches, tokens, ids), x)
        return torch.where(to_mask[..., None], self.enc_mask_token.to(x.dtype), x)

    # ---- decoder and loss ------------------------------------------------------------------
    def decode(self, latent, src_ids, src_valid, tokens: Tokens, mask: Mask) -> Decoded:
        """Latent of some tokens -> predictions for the tokens the decoder predicts (decode_latent)."""
        return decode_latent(self.adapter, self.decoder, latent, src_ids, src_valid, tokens, mask)

    def score(self, decoded: Decoded, tokens: Tokens, mask: Optional[Mask] = None) -> tuple:
        """-> (loss [], token_loss [B, M]) over the scored tokens (score_decoded). With
        loss_weighting='inverse_ratio' (masked diffusion: MDLM, MD4), each sample's token losses
        are weighted by 1 / its mask ratio and summed over the maskable tokens: the continuous-time
        bound for a linear schedule, sum_b (1 / t_b) sum_hidden CE / sum_b n_b. The maskers hide
        exactly k_b = round(t_b n_b) tokens, so 1 / t_b is taken as n_b / k_b, the ratio that was
        realized (unbiased for the exact-count form; 1 / t_b would give one hidden token of a
        short sequence a weight near 2 n_b, and a sample with none hidden a finite weight)."""
        if self.loss_weighting == "tokens" or mask is None:
            return score_decoded(self.adapter, self.target, self.loss_fn, decoded, tokens, mask)
        _, token_loss = score_decoded(self.adapter, self.target, self.loss_fn, decoded, tokens, mask)
        maskable = tokens.maskable_mask()
        hidden = (mask.masked & maskable).sum(1)  # [B] k_b
        weight = maskable.sum(1).to(token_loss.dtype) / hidden.clamp(min=1).to(token_loss.dtype)  # [B] n_b / k_b
        weighted = token_loss * weight[:, None]
        return weighted.sum() / maskable.sum().clamp(min=1), weighted

    # ---- whole pipeline --------------------------------------------------------------------
    def forward(self, batch, progress: float = 0.0, generator=None, mask: Optional[Mask] = None,
                mask_only: bool = False) -> StepOutput:
        """The whole pipeline -> StepOutput(loss, terms, mask, pred [B, M, T], tokens, extras:
        dec_ids [B, M], latent [B, K, D], token_loss [B, M], aux_loss). mask_only: stop once the
        mask is drawn (the trainer's fixed evaluation mask; drawn here, inside forward, so that
        wrappers such as FSDP gather a learned masker's weights)."""
        tokens = self.adapter.tokenize(batch)
        if mask is None:
            mask = self.make_mask(tokens, progress, generator)
        if mask_only:
            return StepOutput(mask=mask, tokens=tokens)
        decoder_tokens, position_loss, layers = tokens, None, []
        if self.position_predictor is not None:  # PCP-MAE: the decoder reads predicted positions
            latent, decoder_tokens, position_loss = self.position_predictor(self.adapter, self.encoder, tokens, mask)
            src_ids, src_valid = mask.ids_keep, mask.keep_valid
        else:
            latent, src_ids, src_valid, layers = self.encode(tokens, mask, generator)
        out = StepOutput(mask=mask, tokens=tokens, extras={"latent": latent, "layers": layers})
        terms = {}  # every term beside the reconstruction, each logged as loss_<name> with recon beside it
        if self.decoder is not None:
            decoded = self.decode(latent, src_ids, src_valid, decoder_tokens, mask)
            out.loss, token_loss = self.score(decoded, tokens, mask)
            out.pred = decoded.pred
            out.extras.update(dec_ids=decoded.ids, token_loss=token_loss)
            out.stats = dict(self.target.log_stats())
            terms["recon"] = out.loss.detach()
        if position_loss is not None:
            terms["position"] = position_loss.detach()
            out.loss = out.loss + self.position_predictor.weight * position_loss
        for i, objective in enumerate(self.objectives):  # teacher features, edges...: each its own term
            term = objective(out, src_ids, src_valid)
            terms[objective.name or f"aux_{i}_{type(objective).__name__}"] = term.detach()
            out.loss = term if out.loss is None else out.loss + term
        if self.decoder is not None:
            full_loss = torch.zeros(mask.masked.shape, device=latent.device).scatter(
                1, decoded.ids, token_loss.detach().float())
            aux = self.masker.aux_loss(mask, full_loss)  # [B, N] token losses -> a learning masker's term
            if aux is not None:
                out.extras["aux_loss"], terms["masker"] = aux, aux.detach()
                out.loss = out.loss + aux
        if len(terms) > 1 or "recon" not in terms:  # a plain MAE's one term is its loss: no column repeats it
            out.terms = terms
        return out

    def render(self, batch, out: StepOutput, path: str) -> str:
        """The adapter's picture (or sound) of input | masked | reconstruction of out's sample 0;
        NotImplementedError where the adapter cannot draw or the target is not the input."""
        if out.pred is None:
            raise NotImplementedError("MaskedModel.decoder=None: nothing is reconstructed to draw")
        pred = self.target.invert(self.full_prediction(out), out.tokens, self.adapter)
        return self.adapter.render(out.tokens, pred, out.mask, path)


def decode_latent(adapter, dec, latent, src_ids, src_valid, tokens: Tokens, mask: Mask,
                  context: Optional[torch.Tensor] = None, context_valid: Optional[torch.Tensor] = None) -> Decoded:
    """Latent of some tokens -> predictions for the tokens the decoder predicts.

    The decoder attends over every token it sees (visible + decoded); one that `predicts_rows`
    computes its output at the scored rows (mask.targets) only, others return all they see.
    latent [B, K, D], src_ids/src_valid [B, K] -> Decoded. One modality's adapter and decoder:
    the cross-modal model calls this once per modality, with the other modalities' latents as
    context [B, C, Dd] (valid [B, C]): attended to, never predicted."""
    z = dec.embed(latent)  # [B, K, Dd]
    batch, n = tokens.batch_size, tokens.num_tokens
    keep_latent = src_valid & ~(gather_tokens(mask.masked, src_ids) if dec.spec.remask else torch.zeros_like(src_valid))
    mask_token = dec.mask_token.to(z.dtype)
    z = torch.where(keep_latent[..., None], z, mask_token)
    full = mask_token.expand(batch, n, z.shape[-1]).clone()
    full.scatter_(1, src_ids[..., None].expand_as(z), z)  # [B, N, Dd]
    valid = tokens.valid_mask()
    seen = valid & (~mask.masked | mask.targets)
    if bool(seen.all()):  # the decoder sees every token: no gather needed
        dec_ids, dec_valid, x = all_ids(tokens), valid, full
    else:
        dec_ids, dec_valid = select_ids(seen)
        x = gather_tokens(full, dec_ids)
    pos = None
    if dec.spec.use_pos:
        pos = position_codes(adapter, tokens, dec_ids, x)
        x = x + pos
    m = x.shape[1]
    seq, seq_ids, seq_valid = x, dec_ids, dec_valid
    kwargs = {}
    if context is not None and dec.spec.cross_context:  # read through the decoder's cross-attention
        kwargs, context = {"context": context.to(x.dtype), "context_valid": context_valid}, None
    if context is not None:  # attended to after the decoded rows; predictions stop at row m
        seq, seq_valid = torch.cat([x, context.to(x.dtype)], 1), torch.cat([dec_valid, context_valid], 1)
        seq_ids = torch.cat([dec_ids, torch.zeros_like(context_valid, dtype=dec_ids.dtype)], 1)
        pos = None if pos is None else torch.cat([pos, torch.zeros_like(context, dtype=pos.dtype)], 1)
    kwargs.update({"pos": pos} if dec.spec.pos_every_block else {})
    scored = gather_tokens(mask.targets, dec_ids) & dec_valid  # [B, M]
    if dec.spec.predicts_rows and not bool(scored.all()):  # the last block and the head skip the rows nobody scores
        rows, rows_valid = select_ids(scored)  # [B, S] places in M of the scored tokens
        pred = dec(seq, seq_valid, tokens, seq_ids, out_rows=rows, **kwargs)
        return Decoded(pred, gather_tokens(dec_ids, rows), rows_valid)
    pred = dec(seq, seq_valid, tokens, seq_ids, **kwargs)[:, :m]
    if bool(scored.all()):
        return Decoded(pred, dec_ids, dec_valid)
    rows, rows_valid = select_ids(scored)
    return Decoded(pred, dec_ids, dec_valid, rows, rows_valid)


def score_decoded(adapter, target, loss_fn, decoded: Decoded, tokens: Tokens, mask: Optional[Mask] = None) -> tuple:
    """Loss over the scored tokens -> (mean loss [], token_loss [B, M] zero where not scored).
    The target is computed for the scored tokens only (gathered first, normalized after), and
    the loss runs on those rows only."""
    pred, ids, valid = decoded.pred, decoded.ids, decoded.valid
    if decoded.rows is not None:
        pred, ids, valid = gather_rows(pred, decoded.rows), gather_tokens(ids, decoded.rows), decoded.rows_valid
    if ids.shape[1] == 0:  # no sample scores a token (a modality absent from the whole batch): zero, still differentiable
        return pred.sum() * 0.0, pred.new_zeros(decoded.valid.shape)
    if target.needs_mask:  # a target that depends on what was hidden (MFM's removed band)
        values, weight = target.select(tokens, adapter, ids, mask=mask)  # [B, S, T]
    else:
        values, weight = target.select(tokens, adapter, ids)  # [B, S, T]
    if values.is_floating_point():  # integer targets (codes, token ids) stay integers: bf16 would round 511 to 512
        values = values.to(pred.dtype)
    row_loss = loss_fn(pred, values, weight) * valid  # [B, S]
    loss = row_loss.sum() / valid.sum().clamp(min=1)  # nothing scored: 0, not 0/0
    if decoded.rows is None:
        return loss, row_loss
    return loss, row_loss.new_zeros(decoded.valid.shape).scatter(1, decoded.rows, row_loss)


def all_ids(tokens: Tokens) -> torch.Tensor:
    """[B, N]: every token, in order."""
    return torch.arange(tokens.num_tokens, device=tokens.patches.device).expand(tokens.batch_size, -1)


def init_weights(module: nn.Module):
    """MAE's init: xavier-uniform linears, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def loaded_modules(model: nn.Module, targets) -> set:
    """ids of the modules whose weights come from files or teachers, not from initialization: the
    targets' (a frozen teacher, a VQ tokenizer) and every adapter's pretrained_parts()."""
    loaded = [*targets, *(part for module in model.modules() if isinstance(module, ModalityAdapter)
                          for part in module.pretrained_parts())]
    return {id(module) for part in loaded for module in part.modules()}


def reinitialize(model: nn.Module, targets) -> None:
    """A fresh student (dBOT's next stage): init_model_weights again, torch layers without MAE's
    rule reset their own way, and the parameters modules hold directly (mask and class tokens,
    learned position tables) drawn from N(0, 0.02), as MAE and timm initialize them."""
    init_model_weights(model, targets)
    skip = loaded_modules(model, targets)
    for module in model.modules():
        if id(module) in skip or isinstance(module, (nn.Linear, nn.LayerNorm)):
            continue
        reset = getattr(module, "reset_parameters", None)  # torch's own layers (conv, batch norm, embedding)
        if reset is not None:
            reset()
            continue
        for param in module.parameters(recurse=False):
            nn.init.normal_(param, std=0.02)


def init_model_weights(model: nn.Module, targets) -> None:
    """init_weights over the model as nn.Module.apply does (children first, same order), except
    inside the targets: a frozen teacher or a VQ tokenizer arrives with its weights loaded from a
    checkpoint, and re-initializing it would leave a random network behind the target (its
    buffers, e.g. a codebook, would survive and hide it); likewise every adapter's
    pretrained_parts() (a frozen tokenizer whose codes are the tokens)."""
    skip = loaded_modules(model, targets)

    def visit(module: nn.Module):
        if id(module) in skip:
            return
        for child in module.children():
            visit(child)
        init_weights(module)

    visit(model)
