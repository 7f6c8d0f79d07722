"""Fine-tuning a pretrained encoder on labels (MAE's main_finetune.py, VideoMAE's
run_class_finetuning.py), trained by the same trainer as pretraining.

Every token is visible; the encoder's output is pooled (mean over the valid tokens then a
LayerNorm, MAE's global_pool; the [CLS] token; or max- and mean-pooled side by side, the set
features of Point-BERT / Point-MAE), dropped out and classified by a linear head initialized
small (MAE: trunc-normal, std 2e-5), or by Point-MAE's MLP head (`head_hidden=(256, 256)`: each
hidden layer Linear, BatchNorm, ReLU, Dropout). mixup / cutmix come from timm's Mixup over the
adapter's input tensor (dims between the batch and the last two folded into channels, so a clip
gets one box through all its frames), soft targets from timm's SoftTargetCrossEntropy, label
smoothing from torch's cross-entropy when mixing is off. Layer-wise lr decay is `lr_scale`,
which unimask/optim.py puts on the parameter groups. `linear_probe_first` is LP-FT (Kumar et al.
2022, "Fine-tuning can distort pretrained features"): the first part of the run trains the head
alone on the frozen encoder's features (no backward through the encoder), then every weight
trains, the encoder from a fresh warmup (`thaw_at` on its parameter groups), so the encoder's
gradients start from a head that already reads its features instead of a random one.
`freeze_encoder` is the linear probe as a training run (MAE's main_linprobe.py): the adapter,
encoder and fc_norm never train (out of the optimizer, no autograd, eval mode: no drop path, their
BatchNorm statistics kept), only the head does; `head_norm='batchnorm'` puts MAE's
BatchNorm1d(affine=False) before the linear head, which standardizes the frozen features per
channel (their scales differ by orders of magnitude) so LARS can train one layer on them.
`score_batch` gives the trainer top-1 (and top-5) on `train.eval_dataset`.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import gin
import torch
import torch.nn.functional as F
from torch import nn

from unimask.encoders import encode_all
from unimask.interfaces import PretrainingModel, StepOutput
from unimask.models.masked import init_model_weights
from unimask.optim import layer_decay_scales, still_frozen
from unimask.probe.features import pool_rows

POOLS = ("mean", "cls", "max+mean")


@gin.configurable
class Classifier(PretrainingModel):
    init_from_fresh = ("head.", "fc_norm.")  # a pretraining checkpoint has no classifier
    init_from_drop = ("decoder.", "target.", "enc_mask_token", "masker.", "objectives.",
                      "position_predictor.")  # pretraining only
    can_score = True

    def __init__(self, adapter=gin.REQUIRED, encoder=gin.REQUIRED, num_classes: int = gin.REQUIRED,
                 pool: str = "mean", head_dropout: float = 0.0, head_init_std: float = 2e-5,
                 head_hidden: tuple = (), layer_decay: Optional[float] = 0.75, label_smoothing: float = 0.1,
                 mixup: float = 0.0, cutmix: float = 0.0, mix_prob: float = 1.0, switch_prob: float = 0.5,
                 linear_probe_first: float = 0.0, freeze_encoder: bool = False, head_norm: Optional[str] = None):
        """pool: 'mean' (mean + fc_norm, MAE's default), 'cls' (needs ViTEncoder.class_token) or
        'max+mean' (max and mean over the valid tokens, [B, 2D], + fc_norm: Point-MAE's head reads
        max-pooled tokens beside its [CLS]; a pretraining checkpoint without a [CLS] has the mean);
        head_hidden: widths of an MLP head (Point-MAE: (256, 256)); head_dropout then sits after
        each hidden layer, as Point-MAE's, instead of before a linear head;
        layer_decay: lr x decay^(depth + 1 - layer) (MAE: 0.75 ViT-B/L, 0.65 in its ViT-B recipe);
        None = one lr. mixup / cutmix: timm's alphas (0.8 / 1.0 in MAE and VideoMAE; 0 = off).
        linear_probe_first: the fraction of the run (0 <= f < 1) that trains only fc_norm and the
        head, the adapter and encoder frozen (LP-FT); 0 = every weight from the first step.
        freeze_encoder: only the head ever trains (the linear probe; MAE's main_linprobe freezes fc_norm too).
        head_norm: None, or 'batchnorm' (MAE's linear probe: BatchNorm1d(affine=False, eps=1e-6) first)."""
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"Classifier.pool must be one of {POOLS}, got {pool!r}")
        if any(int(width) < 1 for width in head_hidden):
            raise ValueError(f"Classifier.head_hidden={tuple(head_hidden)}: every width must be >= 1")
        if pool == "cls" and encoder.learned_cls_token() is None:
            raise ValueError("Classifier.pool='cls' needs an encoder with a [CLS] token (ViTEncoder.class_token=True)")
        if not 0.0 <= linear_probe_first < 1.0:
            raise ValueError(f"Classifier.linear_probe_first={linear_probe_first}: a fraction of the run in [0, 1)")
        if head_norm not in (None, "batchnorm"):
            raise ValueError(f"Classifier.head_norm must be None or 'batchnorm', got {head_norm!r}")
        if freeze_encoder and linear_probe_first:
            raise ValueError("Classifier.freeze_encoder=True freezes the encoder for the whole run; "
                             "linear_probe_first (LP-FT) must then be 0")
        if num_classes < 2:
            raise ValueError(f"Classifier.num_classes={num_classes}: at least 2 classes")
        self.adapter, self.encoder, self.pool, self.num_classes = adapter, encoder, pool, num_classes
        width = encoder.dim * (2 if pool == "max+mean" else 1)
        self.fc_norm = nn.LayerNorm(width, eps=1e-6) if pool != "cls" else nn.Identity()
        self.head_dropout = nn.Dropout(0.0 if head_hidden else head_dropout)
        self.head = mlp_head(width, tuple(int(w) for w in head_hidden), num_classes, head_dropout)
        if head_norm == "batchnorm":  # MAE main_linprobe's "hack": head = Sequential(BatchNorm1d, head)
            self.head = nn.Sequential(nn.BatchNorm1d(width, affine=False, eps=1e-6), *self.head_layers())
        init_model_weights(self, [])  # as self.apply(init_weights), an adapter's pretrained parts kept
        nn.init.trunc_normal_(self.head_layers()[-1].weight, std=head_init_std)
        self.label_smoothing = label_smoothing
        self.mixer = None
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mixer = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mix_prob, switch_prob=switch_prob,
                               label_smoothing=label_smoothing, num_classes=num_classes)
        depth = encoder.block_count()
        self.layer_scales = layer_decay_scales(depth, layer_decay, self.layer_of) if layer_decay else None
        self.linear_probe_first = float(linear_probe_first)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:  # out of the optimizer (optim.param_groups skips them) and out of DDP's buckets
            for part in (self.adapter, self.encoder, self.fc_norm):
                part.requires_grad_(False)
            self.train()

    def head_layers(self) -> list:
        """The head as a list of layers (a bare Linear is one); the last is the classifier."""
        return list(self.head) if isinstance(self.head, nn.Sequential) else [self.head]

    def train(self, mode: bool = True):
        """A frozen encoder stays in eval mode while the head trains (its BatchNorm1d statistics
        update): no drop path, no dropout, and an adapter's BatchNorm keeps its pretrained statistics."""
        super().train(mode)
        if self.freeze_encoder:
            self.adapter.eval()
            self.encoder.eval()
        return self

    def lr_scale(self, name: str) -> Optional[float]:
        """Layer-wise lr decay (MAE's fine-tuning): decay^(depth + 1 - layer); None without it."""
        return self.layer_scales(name) if self.layer_scales is not None else None

    def thaw_at(self, name: str) -> float:
        """The fraction of the run a parameter waits frozen: the adapter's and encoder's wait for
        the linear probe phase (LP-FT), fc_norm and the head train from the start."""
        return self.linear_probe_first if name.startswith(("adapter.", "encoder.")) else 0.0

    def layer_of(self, name: str) -> int:
        """MAE's get_layer_id_for_vit: 0 = adapter (patch embedding, positions) and [CLS], i + 1 =
        encoder block i, depth + 1 = everything after the blocks (final norm, fc_norm, head)."""
        depth = len(self.encoder.blocks)
        if name.startswith("adapter.") or name == "encoder.cls_token":
            return 0
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        return depth + 1

    # ---- forward ---------------------------------------------------------------------------
    def pooled_features(self, batch) -> torch.Tensor:
        """batch -> pooled features [B, D] ([B, 2D] for 'max+mean'; before fc_norm), every token visible."""
        if self.pool == "cls":
            return encode_all(self.adapter, self.encoder, batch, with_cls=True)[0][:, 0]
        latent, valid = encode_all(self.adapter, self.encoder, batch)  # [B, K, D], [B, K]
        return pool_rows(latent, valid, self.pool)

    def logits(self, batch, frozen_backbone: bool = False) -> torch.Tensor:  # -> [B, num_classes]
        """frozen_backbone: features without autograd (LP-FT's first phase: the encoder still runs
        in train mode, its BatchNorm statistics and drop path as when it trains)."""
        with torch.no_grad() if frozen_backbone else contextlib.nullcontext():
            features = self.pooled_features(batch)
        return self.head(self.head_dropout(self.fc_norm(features)))

    def labels_of(self, batch) -> torch.Tensor:
        labels = self.adapter.labels(batch)
        if labels is None:
            raise ValueError("Classifier: the batch has no 'label' (fine-tuning needs a labeled dataset)")
        return labels.long()

    def forward(self, batch, progress: float = 0.0, generator=None, mask=None,
                mask_only: bool = False) -> StepOutput:
        """The trainer's interface: StepOutput(loss, stats: train_top1, extras: logits [B, classes]), no mask."""
        if mask_only:
            return StepOutput()
        labels = self.labels_of(batch)
        if bool((labels < 0).any()):
            raise ValueError("Classifier: unlabeled samples (label -1) in a fine-tuning batch; the dataset's "
                             "split has files outside class folders")
        frozen = self.training and (self.freeze_encoder or still_frozen(progress, self.linear_probe_first))
        if self.training and self.mixer is not None:
            batch, soft = self.mix(batch, labels)
            logits = self.logits(batch, frozen)
            loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()  # timm SoftTargetCE
        else:
            logits = self.logits(batch, frozen)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing if self.training else 0.0)
        accuracy = (logits.argmax(-1) == labels).float().mean()
        return StepOutput(loss=loss, stats={"train_top1": accuracy.detach() * 100}, extras={"logits": logits})

    def mix(self, batch: dict, labels: torch.Tensor) -> tuple:
        """timm's Mixup on the adapter's input: (mixed batch, soft targets [B, classes])."""
        key = self.adapter.batch_key
        batch = self.adapter.float_input(batch)  # uint8 images are mixed as normalized floats
        x = batch[key]
        if x.shape[0] % 2:
            raise ValueError(f"Classifier mixup/cutmix needs an even batch per step, got {x.shape[0]}")
        folded = x.reshape(x.shape[0], -1, *x.shape[-2:])  # [B, C x T, H, W]: cutmix boxes through every frame
        mixed, soft = self.mixer(folded.clone(), labels)
        return {**batch, key: mixed.reshape(x.shape)}, soft

    @torch.no_grad()
    def score_batch(self, batch, keep: torch.Tensor) -> dict:
        """-> {'top1': (correct, count), 'top5': ...} over the rows keep [B] marks."""
        logits, labels = self.logits(batch), self.labels_of(batch)
        keep = keep & (labels >= 0)
        ranked = logits.topk(min(5, self.num_classes), dim=-1).indices  # [B, k]
        hits = ranked == labels[:, None]
        out = {"top1": ((hits[:, 0] & keep).sum(), keep.sum())}
        if self.num_classes > 5:
            out["top5"] = ((hits.any(-1) & keep).sum(), keep.sum())
        return out



def mlp_head(width: int, hidden: tuple, num_classes: int, dropout: float) -> nn.Module:
    """[B, width] -> [B, num_classes]: a linear layer, or Point-MAE's cls_head_finetune (each
    hidden width: Linear, BatchNorm1d, ReLU, Dropout) ending in one."""
    if not hidden:
        return nn.Linear(width, num_classes)
    layers = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, num_classes))
