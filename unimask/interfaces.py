"""Every contract the core calls, in one place: the adapter, the encoder and decoder, the masker
and its ratio schedule, the target and its loss, and the model the trainer runs (StepOutput,
PretrainingModel).

The models, weight loading, export, targets and probes talk to these parts only through the
attributes and calls declared here, each optional capability with its default, so a new modality
subclasses ModalityAdapter, a new backbone (a GNN, a cross-attention decoder, a Mamba stack)
Encoder or Decoder, a new masking rule Masker, a new prediction target Target, and a new method
family PretrainingModel; the core never asks a part whether it has an attribute. The shipped
implementations live below: maskers and schedules in unimask/masking/, targets in
unimask/targets/, losses in unimask/losses.py, models in unimask/models/.

    x [B, K, D] tokens in, key_valid [B, K] bool (False = padding), tokens: the batch's Tokens,
    ids [B, K] which token each row of x holds (a GNN reads the edges among them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Union

import torch
from torch import nn

from unimask.losses import MSELoss
from unimask.pos import sincos_pos
from unimask.tokens import TARGET_WEIGHT, Mask, Tokens, gather_rows, gather_tokens


class ModalityAdapter(nn.Module):
    """Everything a modality must tell the core, and nothing more. Subclasses set `target_dim`
    and `loss` and implement `tokenize`, `embed`, `render`; the rest has a default here.

    tokenize has no learned weights (patchify, FPS+kNN, fbank); embed is applied to the
    visible patches only, after the gather, so masked tokens cost nothing to embed.

    Optional capabilities (a grid of patches has them: modalities/grid.py's GridAdapter), each
    with the default of an adapter that lacks it:
      grid_positions()          fixed token grid of the input (weights in and out)   None
      learned_pos_table()       learned position table, state key `pos_table`         None
      resample_pos_table(t)     a table of another grid onto this one                 raises
      linear_from_conv(w, b)    a patch convolution -> this adapter's patch weights    raises
      conv_from_linear()        this adapter's patch weights as a convolution          raises
      sincos(coords, dim)       its fixed sin-cos codes (checked against a file's)     sincos_pos
      pos_axes                  axis order of those codes, 'ij' or 'xy'               None
      patch, in_chans           patch size per grid axis, input channels (HOGTarget)   None
    Parameters and submodules (`pos_table`) are reached through methods: a class attribute of
    the same name would shadow, or refuse, nn.Module's registration of them.
    """

    target_dim: int = 0
    loss: "Loss" = MSELoss()  # how the default target is scored (an adapter may set SCE, Chamfer, CE)
    batch_key: str = "input"  # the key of the raw batch dict this adapter reads
    pos_axes: Optional[str] = None  # 'ij': first grid axis first in the codes' width, 'xy': last first
    patch: Optional[tuple] = None  # patch size per grid axis (a grid adapter's)
    in_chans: Optional[int] = None  # input channels of a grid adapter

    def tokenize(self, batch) -> Tokens:
        raise NotImplementedError

    def embed(self, patches: torch.Tensor, tokens: Tokens, ids: torch.Tensor) -> torch.Tensor:
        """patches [B, K, P] (already gathered), ids [B, K] -> [B, K, D]."""
        raise NotImplementedError

    def pos(self, coords: torch.Tensor, dim: int) -> torch.Tensor:
        """coords [..., C] -> [..., dim]; fixed sin-cos by default (MAE)."""
        return sincos_pos(coords, dim)

    def target(self, tokens: Tokens) -> torch.Tensor:
        """[B, N, T] default prediction target: the raw patches."""
        return tokens.patches

    def random_patches(self, like: torch.Tensor, generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
        """'Random token' for BERT-style replace; None = take another token of the batch."""
        return None

    def render(self, tokens: Tokens, pred: torch.Tensor, mask, path: str) -> str:
        """Write a picture/sound of input | masked | reconstruction for sample 0; return path."""
        raise NotImplementedError(f"{type(self).__name__} cannot render reconstructions")

    def render_views(self, first: Tokens, second: Tokens, pred: torch.Tensor, mask, path: str) -> str:
        """Two views (SiamMAE, CropMAE): view 1 | masked view 2 | reconstruction of view 2."""
        raise NotImplementedError(f"{type(self).__name__} cannot draw two views")

    def raw_features(self, tokens: Tokens) -> torch.Tensor:
        """[B, N, F]: the input itself, per token, for the no-learning baseline probe (its patch
        values and its coordinates: a token's position may carry the shape). Adapters whose patches
        are not numbers (token ids) give an encoding of them instead."""
        return torch.cat([tokens.patches.float(), tokens.coords.float()], -1)

    def pretrained_parts(self) -> list:
        """Submodules that arrive with weights loaded from a file (a frozen VQ tokenizer whose codes
        are the tokens): the model's weight initialization leaves them alone. Default: none."""
        return []

    def float_input(self, batch):
        """The raw batch with its input as floats in the model's units, for augmentations that mix
        inputs (mixup, cutmix); an adapter that takes uint8 and normalizes in tokenize (a dataset
        that hands over uint8) converts here. Default: the batch as it is."""
        return batch

    def dense_input(self, tokens: Tokens) -> torch.Tensor:
        """The input of every token laid back out densely, in its natural units ([0, 1] for
        intensities), [B, C, *S]: what a network from outside the project reads (a timm or Hugging
        Face teacher, which resizes and normalizes it its own way). Grid adapters of
        normalized intensities give it; others have no dense layout."""
        raise NotImplementedError(f"{type(self).__name__} has no dense input layout for an outside teacher to read")

    def labels(self, batch) -> Optional[torch.Tensor]:
        """[B] class labels of a raw batch, for probes; None when the data has none."""
        label = batch.get("label") if isinstance(batch, dict) else None
        return label

    # ---- weights in and out (unimask/weights, tools/export.py) -------------------------------
    def grid_positions(self) -> Optional[torch.Tensor]:
        """[N, d] positions of every token of a fixed-size input, row-major; None when the input
        has no fixed size (or no grid)."""
        return None

    def learned_pos_table(self) -> Optional[nn.Parameter]:
        """The learned position table [N, D] (state key `pos_table`); None when the position
        codes are computed."""
        return None

    def resample_pos_table(self, table: torch.Tensor) -> torch.Tensor:
        """A learned table [N', D] of another grid -> this adapter's [N, D]."""
        raise NotImplementedError(f"{type(self).__name__} has no learned position table to resample into")

    def linear_from_conv(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> dict:
        """A patch convolution [D, C, *patch] (timm, MAE, VideoMAE) -> this adapter's state
        entries {'proj.weight', 'proj.bias'}; ValueError when its shape does not fit."""
        raise NotImplementedError(f"{type(self).__name__} has no patch embedding to load a patch convolution into")

    def conv_from_linear(self) -> tuple:
        """This adapter's patch embedding as the convolution it equals: (weight [D, C, *patch], bias [D])."""
        raise NotImplementedError(f"{type(self).__name__} has no patch embedding to write as a convolution")

    def sincos(self, coords: torch.Tensor, dim: int) -> torch.Tensor:
        """coords [..., C] -> [..., dim]: this adapter's fixed sin-cos codes (what a file's fixed
        position table is checked against)."""
        return sincos_pos(coords, dim)


class Encoder(nn.Module):
    """dim: width of x and of the output. pos_every_block: forward also takes `pos` [B, K, D], the
    position codes, to add again before every block (Point-MAE); the model adds them once to x
    either way. uses_tokens: forward reads `tokens` and `ids` (a GNN reads their edges), so it
    serves one modality's tokens only. rope: it rotates queries and keys by the tokens'
    coordinates (rotary positions; the hidden tokens of PositionPredictor cannot ride along).
    vit_layout: its state is timm's ViT encoder's (`blocks.{i}.*` timm Blocks, `norm.*`, an
    optional `cls_token`), so weights export to timm / Hugging Face names (unimask/weights).
    takes_block_masks: forward also takes block_masks= (one [B, 1, K, K] attention mask per
    block, block_count() of them: PositionPredictor's ride-along hidden tokens)."""

    dim: int
    pos_every_block: bool = False
    uses_tokens: bool = False
    rope: bool = False
    vit_layout: bool = False
    takes_block_masks: bool = False

    def forward(self, x: torch.Tensor, key_valid: Optional[torch.Tensor], tokens, ids: torch.Tensor,
                pos: Optional[torch.Tensor] = None) -> torch.Tensor:  # [B, K, D] -> [B, K, D]
        raise NotImplementedError

    def block_count(self) -> int:
        """How many transformer blocks it holds as `blocks.0` .. (layer-wise lr decay gives each
        its own scale); 0 for an encoder without them (a GNN)."""
        return 0

    def learned_cls_token(self) -> Optional[nn.Parameter]:
        """The learned [CLS] token [1, 1, dim] (state key `cls_token`); None without one. (A
        method, not a class attribute: that would refuse nn.Module's registration of the parameter.)"""
        return None

    def forward_with_cls(self, x: torch.Tensor, key_valid: Optional[torch.Tensor] = None,
                         pos: Optional[torch.Tensor] = None, tokens=None, ids=None) -> torch.Tensor:
        """Like forward, with the [CLS] token's output first: [B, K, D] -> [B, 1 + K, D]."""
        raise ValueError(f"{type(self).__name__} has no [CLS] token")

    def layer_outputs(self, x: torch.Tensor, key_valid: Optional[torch.Tensor], tokens, ids: torch.Tensor,
                      pos: Optional[torch.Tensor] = None) -> list:
        """Each layer's output [B, K, D], first to last (teachers average the top ones); an
        encoder without layers to show gives its output alone."""
        return [self(x, key_valid, tokens, ids, pos=pos)]

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        """The encoder's output from its last layer_outputs entry (a ViT's final LayerNorm), so one
        pass gives both the layers and the output; identity where that entry is the output."""
        return h


@dataclass(frozen=True)
class DecoderSpec:
    """How a decoder wants to be fed, declared once (Decoder.spec), so the models read one
    record instead of five loose flags.

    remask: hidden tokens' latents are replaced by the mask token (always true in drop mode;
    GraphMAE's re-mask in replace mode); use_pos: the model adds the adapter's position codes at
    decoder width; pos_every_block: forward also takes `pos` (Point-MAE adds it before every
    block); predicts_rows: forward(out_rows=[B, S]) returns only those rows (the model passes
    the scored ones), else forward returns every row it was given; cross_context: forward takes
    context= / context_valid= (another set of tokens read through cross-attention: SiamMAE's
    view 1), else the model appends context tokens to the decoded ones (MultiMAE's other
    modalities); window: local attention within windows of that many grid cells per axis
    (AudioMAE), None = global attention; a windowed decoder cannot take other modalities'
    tokens as context."""

    remask: bool = True
    use_pos: bool = True
    pos_every_block: bool = False
    predicts_rows: bool = False
    cross_context: bool = False
    window: Optional[tuple] = None


class Decoder(nn.Module):
    """embed: encoder width -> dim (applied to the latent); mask_token [1, 1, dim]: fills the places
    of tokens the decoder predicts; spec: how the model feeds it (DecoderSpec). init_head(out_dim)
    is called once the target's width is known."""

    dim: int
    embed: nn.Module
    mask_token: nn.Parameter
    spec: DecoderSpec = DecoderSpec()

    def init_head(self, out_dim: int):
        raise NotImplementedError

    def forward(self, x: torch.Tensor, key_valid: Optional[torch.Tensor], tokens, ids: torch.Tensor,
                out_rows: Optional[torch.Tensor] = None, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError  # [B, M, dim] -> [B, M, out_dim], or [B, S, out_dim] at out_rows


# ---- masking: what may be hidden, and how much --------------------------------------------
Ratio = Union[float, torch.Tensor]


def ratio_tensor(ratio: Ratio, batch_size: int, device, allow_all_hidden: bool = False) -> torch.Tensor:
    """float or [B] -> [B] float64, checked to lie in [0, 1) ([0, 1] with allow_all_hidden).

    float64 so that counts match the ratio as written: in float32, 0.9 * 25 is 22.4999995
    and would round to 22 instead of 23."""
    r = torch.as_tensor(ratio, dtype=torch.float64, device=device)
    if r.dim() == 0:
        r = r.expand(batch_size)
    if r.shape != (batch_size,):
        raise ValueError(f"mask ratio must be a float or a [B]={batch_size} tensor, got shape {tuple(r.shape)}")
    too_high = (r > 1) if allow_all_hidden else (r >= 1)
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()) or bool(too_high.any()):
        raise ValueError(f"mask ratio must lie in [0, {'1]' if allow_all_hidden else '1)'}, got {r.tolist()}")
    return r


class Masker:
    """Base: subclasses implement `hide(tokens, ratio [B], generator) -> [B, N] bool`.

    What the model may call on a masker, all defined here: __call__; needs_features (True: the
    model embeds every token and passes them as `features=`); aux_loss (a learning masker's own
    loss term, None for the rest); after_step (curricula that follow training progress);
    check_schedule (refuses a schedule the masker would ignore)."""

    needs_features = False
    # True lifts the [0, 1) ratio rule and the one-visible-token rule: masked generation (MaskGIT,
    # MAGE) trains with every token hidden in some samples. Only a model that sees hidden tokens
    # (replace mode) or brings its own context can use it; the default keeps both rules.
    allow_all_hidden = False

    def aux_loss(self, mask: Mask, token_loss: torch.Tensor) -> Optional[torch.Tensor]:
        """token_loss [B, N] detached -> the masker's own loss term (a scalar), or None."""
        return None

    def after_step(self, progress: float):
        """Called after every optimizer step with progress in [0, 1]."""

    def check_schedule(self, schedule) -> None:
        """Called once by a model with the ratio schedule bound beside this masker: a masker whose
        hidden share does not come from the ratio (MultiBlockMasker) refuses one that varies."""

    def hide(self, tokens: Tokens, ratio: torch.Tensor, generator) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, tokens: Tokens, ratio: Ratio, generator: Optional[torch.Generator] = None, **kwargs) -> Mask:
        """-> Mask. A sample without any real token (a modality missing from it, or nothing
        left for the decoder masker of dual masking) simply gets an empty mask."""
        ratio = ratio_tensor(ratio, tokens.batch_size, tokens.patches.device, self.allow_all_hidden)
        valid, maskable = tokens.valid_mask(), tokens.maskable_mask()
        if tokens.maskable is not None:  # units are counted over the tokens that may be hidden
            tokens = tokens.replace(valid=maskable)
        hidden = self.hide(tokens, ratio, generator, **kwargs) & maskable
        if not self.allow_all_hidden:
            hidden = keep_one_visible(hidden, valid)
        return Mask.from_hidden(hidden, valid, ratio)


def keep_one_visible(hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Un-hide the first valid token of any sample that would have none visible. [B, N] -> [B, N]."""
    none_visible = ~(valid & ~hidden).any(1)  # [B]
    if bool(none_visible.any()):
        first_valid = torch.argmax(valid.int(), dim=1)  # [B]
        fix = torch.zeros_like(hidden).scatter_(1, first_valid[:, None], True) & none_visible[:, None]
        hidden = hidden & ~fix
    return hidden


class RatioSchedule:
    """Base: subclasses give `value(progress) -> ratio`; __call__ broadcasts it to [B]."""

    def value(self, progress: float) -> float:
        raise NotImplementedError

    def __call__(self, progress: float, batch_size: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return torch.full((batch_size,), float(self.value(min(max(progress, 0.0), 1.0))), dtype=torch.float64)

    def state_dict(self) -> dict:
        """The schedule's settings (it has no other state: values are pure functions of progress).

        Saved in checkpoints so a run can be inspected, or resumed under the same curve even
        when gin now binds other numbers."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in vars(self).items()}

    def load_state_dict(self, state: dict):
        unknown = set(state) - set(vars(self))
        if unknown:
            raise KeyError(f"{type(self).__name__}.load_state_dict: unknown keys {sorted(unknown)} "
                           f"(expected {sorted(vars(self))})")
        for key, value in state.items():
            setattr(self, key, list(value) if isinstance(value, (list, tuple)) else value)


# ---- what is predicted, and how it is scored ----------------------------------------------
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

    takes_student = False  # begin_stage works: a teacher that can take the student's weights (dBOT)

    def begin_stage(self, model):
        """A new distillation stage (train.stages): the teacher takes the student's weights."""
        raise NotImplementedError(f"{type(self).__name__} has no teacher to hand the student to")

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


class Loss(Protocol):
    """How a target is scored, per token: (pred [B, M, T], target [B, M, T], weight [B, M, T] | None)
    -> [B, M]. The model reduces over the tokens it scores itself, so a learning masker can read
    the per-token values (HPM, AdaMAE) and ragged batches weigh each real token once.
    unimask/losses.py holds the shipped ones (MSE, L1, smooth L1, SCE, CE, Chamfer); any callable
    of this shape serves (a structural contract: losses need no base class)."""

    def __call__(self, pred: torch.Tensor, target: torch.Tensor,
                 weight: Optional[torch.Tensor] = None) -> torch.Tensor: ...


class Objective(nn.Module):
    """One named term of a model's loss beside its reconstruction (DESIGN v3's `objectives`): a
    teacher's features at the visible tokens (MaskAlign, MR-MAE), an intermediate layer's (DMAE),
    the edges hidden from the encoder. forward(out: StepOutput so far, src_ids [B, K], src_valid [B, K]:
    the tokens the encoder's latent out.extras['latent'] belongs to) -> the weighted scalar that is
    added to the loss and logged as loss_<name>. bind(model) builds what needs the model's parts
    (a head at the encoder's width); `layers` lists the encoder layers it reads, so the model
    keeps them (out.extras['layers']) only when some objective asks."""

    name: Optional[str] = None  # the logged term's name; None: aux_<index>_<class name>
    layers: tuple = ()

    def bind(self, model) -> None:
        """Called once by the model, before its weights are initialized."""

    def targets(self) -> list:
        """The Target modules this objective reads: loaded teachers the model must not re-initialize."""
        return []

    def after_step(self, progress: float):
        """After every optimizer step (an EMA teacher of its own moves here)."""


@dataclass
class StepOutput:
    """What a model's forward gives the trainer, the renderers and the objectives.

    loss: the scalar backward runs on (None for mask_only); terms: every named loss term, detached,
    logged as loss_<name> (a model whose loss is one term leaves it empty, so no column repeats
    `loss`); stats: other numbers to log (codebook usage, train top-1); mask: what was hidden
    (None for a classifier); pred: the predictions, for rendering ([B, M, T], or per modality);
    tokens: the batch's Tokens (per modality for a cross-modal model) that render and objectives
    read; extras: what one model family hands its own render or objectives (dec_ids [B, M],
    latent, token_loss, the first view, logits, aux_loss), by name."""

    loss: Optional[torch.Tensor] = None
    terms: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    mask: Any = None
    pred: Any = None
    tokens: Any = None
    extras: dict = field(default_factory=dict)


class PretrainingModel(nn.Module):
    """The base of every model the trainer runs (MaskedModel, SiameseModel, MultiModalModel,
    Classifier, VQTokenizer, and each new family): everything the trainer, weight loading,
    export and the probes call on a model, declared here with a default, so none of them asks a
    model what it has (no probing of its attributes) and a new family overrides what it does differently.

    forward(batch, progress, generator, mask=None, mask_only=False) -> StepOutput; mask_only
    stops once the mask is drawn (StepOutput with mask and tokens only: the trainer's fixed
    evaluation mask, drawn inside forward so wrappers such as FSDP gather a learned masker).
    """

    schedule = None  # the RatioSchedule the trainer checkpoints; None: the model does not mask
    init_from_fresh: tuple = ()  # key prefixes a weights file may lack (train.init_from, unimask/weights)
    init_from_drop: tuple = ()  # key prefixes of a weights file this model leaves out on purpose
    can_score: bool = False  # score_batch gives top-1 counts (train.eval_dataset: fine-tuning)
    restarts_stages: bool = False  # begin_stage works (train.stages > 1: dBOT's multi-stage distillation)

    def begin_stage(self, stage: int):
        """Stage `stage` (>= 1) of train.stages begins: the teacher takes the student's weights and
        the student starts again from a fresh initialization."""
        raise NotImplementedError(f"{type(self).__name__} cannot restart stages")

    def forward(self, batch, progress: float = 0.0, generator=None, mask=None,
                mask_only: bool = False) -> StepOutput:
        raise NotImplementedError

    def after_step(self, progress: float):
        """Called by the trainer after every optimizer step (EMA teachers, learned maskers)."""

    def param_groups(self, weight_decay: float = 0.05) -> list:
        """The optimizer's groups: MAE's no-decay rule, split by lr_scale and thaw_at (unimask/optim.py)."""
        from unimask.optim import param_groups  # optim reads this class: imported when called

        return param_groups(self, weight_decay)

    def lr_scale(self, name: str) -> Optional[float]:
        """The lr multiplier of parameter `name` (layer-wise decay when fine-tuning); None: no
        scaling, and the optimizer keeps MAE's two groups (decay / no decay)."""
        return None

    def thaw_at(self, name: str) -> float:
        """The fraction of the run parameter `name` waits frozen (LP-FT); 0: it trains from the start."""
        return 0.0

    def features(self, batch) -> tuple:
        """What probes read: frozen features with every token visible, (tokens [B, N, D], valid [B, N])."""
        raise NotImplementedError(f"{type(self).__name__} gives no probe features")

    def render(self, batch, out: StepOutput, path: str) -> str:
        """A picture (or sound) of sample 0 of `out` (the step on `batch`) at `path` -> the path written."""
        raise NotImplementedError(f"{type(self).__name__} draws no reconstruction")

    def probe_modalities(self, name: str):
        """Point features() (and the raw baseline) at one modality, or 'all' side by side (tools/eval.py
        --modality); a model of one modality refuses."""
        raise ValueError(f"--modality: {type(self).__name__} has one modality; --modality is for cross-modal models")

    def score_batch(self, batch, keep: torch.Tensor) -> dict:
        """-> {'top1': (correct, count), ...} over the rows keep [B] marks (models with can_score)."""
        raise NotImplementedError(f"{type(self).__name__} does not score labels")
