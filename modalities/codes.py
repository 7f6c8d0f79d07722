"""CodesAdapter: any batch a frozen VQ tokenizer reads becomes a grid of its discrete codes, the
tokens of masked generation (MaskGIT, Chang et al. 2022; MAGE, Li et al. 2023).

    batch --tokenizer.adapter.tokenize--> Tokens --tokenizer.codes--> codes [B, N] long
      Tokens: patches [B, N', 1] long, coords the tokenizer's grid coords, grid kept
      (class-conditional, num_classes > 0: a class token first, id num_codes + label, never
      hidden, coords -1, so N' = 1 + N and the grid is dropped: a masker sees a flat set)

The encoder reads code_embed(id) + the tokenizer grid's sin-cos position codes; the target is the
code itself (cross-entropy, `CELoss`), so `MaskedModel(mode='replace')` over these tokens is
MaskGIT's bidirectional transformer. A batch may also carry the codes themselves
({'codes': [B, N] long, 'label': [B]}): the sampler's input, where there is no picture yet.
Codes decode back to the tokenizer's input (pixels, fbank) through its decoder: `decode`, and
`render` / `save_samples` draw them. The tokenizer is the shipped one
(data/sample/tokenizers/fashion_vq512_pixels.pt), one trained by gin/vq_tokenizer_pixels.gin, or
any VQTokenizer checkpoint; it is frozen, gets no gradient and is saved with the model.
"""
from __future__ import annotations

from typing import Optional

import gin
import torch
from torch import nn

from modalities.grid import save_rows
from unimask.interfaces import ModalityAdapter
from unimask.losses import CELoss
from unimask.patches import unpatchify
from unimask.tokens import Mask, Tokens

CODES_KEY = "codes"  # a batch of code ids [B, N] instead of the tokenizer's input
IGNORE = -100  # torch's cross-entropy ignore index


@gin.configurable
class CodesAdapter(ModalityAdapter):
    loss = CELoss()

    def __init__(self, tokenizer=gin.REQUIRED, checkpoint: Optional[str] = gin.REQUIRED, dim: int = 768,
                 num_classes: int = 0, label_dropout: float = 0.0):
        """tokenizer: a VQTokenizer built by gin (gin/vq_tokenizer_arch.gin's scope); checkpoint: its
        trained weights (None: keep the built ones, for tests); dim: the encoder width;
        num_classes > 0: class-conditional through a class token (MaskGIT's class-conditional
        ImageNet model); label -1 is "no class" (one more embedding row), what classifier-free
        guidance's unconditional branch reads. label_dropout: in training, each sample's class is
        replaced by "no class" with this probability (10% in the CFG literature after MaskGIT), so
        one model learns both branches; drawn from torch's generator, which the trainer seeds per
        step (resume stays exact)."""
        super().__init__()
        from unimask.train.checkpoint import load_checkpoint, load_model_state

        if num_classes < 0:
            raise ValueError(f"CodesAdapter.num_classes={num_classes}: 0 (unconditional) or the number of classes")
        if not 0.0 <= label_dropout < 1.0 or (label_dropout > 0 and not num_classes):
            raise ValueError(f"CodesAdapter.label_dropout={label_dropout}: a probability in [0, 1), for a "
                             "class-conditional adapter (num_classes > 0)")
        self.label_dropout = float(label_dropout)
        self.tokenizer = tokenizer
        if checkpoint is not None:
            load_model_state(self.tokenizer, load_checkpoint(checkpoint)["model"])
        self.tokenizer.requires_grad_(False).eval()
        self.num_codes, self.num_classes, self.dim = tokenizer.quantizer.num_codes, int(num_classes), dim
        self.batch_key = tokenizer.adapter.batch_key
        self.target_dim = self.num_codes
        extra = self.num_classes + 1 if self.num_classes else 0  # the classes, then "no class"
        self.code_embed = nn.Embedding(self.num_codes + extra, dim)  # class ids after the codes
        nn.init.normal_(self.code_embed.weight, std=0.02)

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: no codebook update, no dropout
        return self

    def pretrained_parts(self) -> list:
        return [self.tokenizer]  # loaded from its checkpoint: the model's init must not redraw it

    # ---- tokens -------------------------------------------------------------------------------
    def inner_tokens(self, batch) -> Tokens:
        """The tokenizer's own Tokens of a raw batch (its grid and coords)."""
        return self.tokenizer.adapter.tokenize(batch)

    def code_grid(self, device) -> Tokens:
        """Tokens of one blank input of the tokenizer's fixed grid: its coords and grid, for code
        batches that come without a picture (the sampler's)."""
        positions = self.tokenizer.adapter.grid_positions()
        if positions is None:
            raise ValueError("CodesAdapter: a batch of codes needs a tokenizer whose adapter has a fixed grid")
        n = positions.shape[0]
        grid = tuple(int(g) for g in (positions.max(0).values + 1).tolist())
        return Tokens(torch.zeros(1, n, 1, device=device), positions[None].float().to(device), grid=grid)

    def tokenize(self, batch) -> Tokens:
        """{batch_key: input, 'label': [B]} or {'codes': [B, N] long, 'label': [B]} -> Tokens of code ids."""
        if CODES_KEY in batch:
            codes = batch[CODES_KEY].long()
            layout = self.code_grid(codes.device)
            coords, grid = layout.coords.expand(codes.shape[0], -1, -1), layout.grid
        else:
            inner = self.inner_tokens(batch)
            codes, coords, grid = self.tokenizer.codes(inner), inner.coords.float(), inner.grid
        patches = codes[..., None]  # [B, N, 1]
        if not self.num_classes:
            return Tokens(patches, coords, grid=grid, patch_shape=(1,))
        class_token = self.class_ids(self.labels(batch), codes.device)[:, None, None]  # [B, 1, 1]
        b, n = codes.shape
        maskable = torch.ones(b, 1 + n, dtype=torch.bool, device=codes.device)
        maskable[:, 0] = False  # the condition is never hidden
        coords = torch.cat([coords.new_full((b, 1, coords.shape[-1]), -1.0), coords], 1)
        return Tokens(torch.cat([class_token, patches], 1), coords, patch_shape=(1,), maskable=maskable)

    def class_ids(self, labels: Optional[torch.Tensor], device) -> torch.Tensor:
        """labels [B] (-1 = no class) -> class-token ids [B]: num_codes + label, or the "no class"
        id num_codes + num_classes (for -1, and for dropped labels in training)."""
        if labels is None or bool(((labels < -1) | (labels >= self.num_classes)).any()):
            raise ValueError(f"CodesAdapter.num_classes={self.num_classes}: every sample needs a 'label' in "
                             f"[0, {self.num_classes}) (or -1: no class)")
        labels = labels.long().to(device)
        if self.training and bool((labels < 0).all()):
            raise ValueError("CodesAdapter: a training batch without any label: the data has none, and a "
                             "class-conditional model would learn nothing of its classes")
        if self.training and self.label_dropout > 0:
            dropped = (torch.rand(labels.shape) < self.label_dropout).to(device)
            labels = labels.masked_fill(dropped, -1)
        return self.num_codes + torch.where(labels < 0, self.num_classes, labels)

    def embed(self, patches, tokens, ids):
        """patches [B, K, 1] ids -> [B, K, dim]."""
        return self.code_embed(patches[..., 0].long())

    def target(self, tokens):
        """[B, N', 1] long: the codes (CELoss's target); the class token, never hidden, gets -100,
        cross-entropy's ignore index, so a padding row that gathers it scores nothing."""
        if not self.num_classes:
            return tokens.patches
        return torch.cat([torch.full_like(tokens.patches[:, :1], IGNORE), tokens.patches[:, 1:]], 1)

    def raw_features(self, tokens):
        """One-hot codes [B, N, num_codes] (ids as numbers would mean nothing to a probe)."""
        ids = tokens.patches[..., 0].long().clamp(max=self.num_codes - 1)
        return nn.functional.one_hot(ids, self.num_codes).float()

    def random_patches(self, like, generator=None):
        """BERT-style random replacement: uniform codes. like [B, N, 1]."""
        device = generator.device if generator is not None else like.device
        return torch.randint(self.num_codes, like.shape, generator=generator, device=device).to(like.device)

    # ---- back to the tokenizer's input -------------------------------------------------------------
    def code_part(self, tokens: Tokens, values: torch.Tensor) -> torch.Tensor:
        """values [B, N', ...] over these tokens -> the code places only [B, N, ...] (class token dropped)."""
        return values[:, 1:] if self.num_classes else values

    @torch.no_grad()
    def decoded_tokens(self, codes: torch.Tensor) -> Tokens:
        """codes [B, N] long -> Tokens of the tokenizer adapter's grid holding the decoded input's
        patches [B, N, T] (pixels, fbank), in its normalized units."""
        layout = self.code_grid(codes.device)
        b = codes.shape[0]
        tokens = Tokens(layout.patches.expand(b, -1, -1), layout.coords.expand(b, -1, -1), grid=layout.grid)
        patches = self.tokenizer.decode_codes(codes, tokens).float()  # [B, N, T]
        return tokens.replace(patches=self.tokenizer.target.invert(patches, tokens, self.tokenizer.adapter))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, N] long -> the tokenizer adapter's input [B, C, *spatial], in its normalized units."""
        decoded, inner = self.decoded_tokens(codes), self.tokenizer.adapter
        return unpatchify(decoded.patches, decoded.grid, inner.patch, inner.in_chans)

    def render(self, tokens: Tokens, pred: torch.Tensor, mask, path: str) -> str:
        """Sample 0 as the tokenizer adapter draws it: its codes decoded | the hidden codes' places
        blanked | the predicted codes at the hidden places decoded."""
        codes = self.code_part(tokens, tokens.patches[..., 0].long())[:1]  # [1, N]
        hidden = self.code_part(tokens, mask.masked)[:1]
        guessed = torch.where(hidden, self.code_part(tokens, pred)[:1].argmax(-1), codes)
        decoded = self.decoded_tokens(torch.cat([codes, guessed]))  # [2, N, T]: real, reconstruction
        shown = Mask.from_hidden(hidden, torch.ones_like(hidden), hidden.sum(1).double() / hidden.shape[1])
        return self.tokenizer.adapter.render(decoded, decoded.patches[1:], shown, path)

    @staticmethod
    def scaled(x: torch.Tensor, lo, hi) -> torch.Tensor:
        return ((x - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1)

    def save_samples(self, codes: torch.Tensor, path: str, per_row: int) -> str:
        """Generated codes [B, N] -> one PNG grid of their decoded pictures, per_row to a row, each
        scaled to its own range."""
        pictures = [self.scaled(x, x.min(), x.max()) for x in self.decode(codes).float()]
        rows = [pictures[i:i + per_row] for i in range(0, len(pictures), per_row)]
        rows[-1] += [torch.ones_like(pictures[0])] * (per_row - len(rows[-1]))
        return save_rows(rows, path)


def hidden_mask(tokens: Tokens, hidden: torch.Tensor) -> Mask:
    """A Mask hiding exactly the code places hidden [B, N] marks (the class token stays seen)."""
    valid = tokens.valid_mask()
    full = torch.zeros_like(valid)
    full[:, valid.shape[1] - hidden.shape[1]:] = hidden
    share = hidden.sum(1).double() / hidden.shape[1]
    return Mask.from_hidden(full & valid, valid, share)


@torch.no_grad()
def sample_codes(model, n: int, labels: Optional[torch.Tensor] = None, steps: int = 8, order: str = "confidence",
                 schedule: str = "cosine", temperature: float = 1.0, choice_temperature: float = 4.5,
                 seed: int = 0, cfg: float = 0.0) -> torch.Tensor:
    """MaskGIT decoding with a model over CodesAdapter tokens: from every code hidden, `steps`
    rounds of predict-all, keep-the-most-confident (unimask/generation/sampler.py; MaskGIT's
    defaults: cosine schedule, choice temperature 4.5). labels [n] long (a class-conditional
    model needs them) -> codes [n, N] long. cfg > 0: classifier-free guidance, logits
    cond + cfg (cond - uncond), the unconditional branch reading "no class" (a model trained with
    CodesAdapter.label_dropout > 0 has learned it; both branches run in one batch)."""
    from unimask.generation import all_hidden_as_mask, iterative_unmask

    adapter = model.adapter
    if adapter.num_classes and labels is None:
        raise ValueError(f"the model is class-conditional ({adapter.num_classes} classes): give labels (--label)")
    if cfg and not adapter.num_classes:
        raise ValueError(f"cfg={cfg}: classifier-free guidance needs a class-conditional model")
    device = next(model.parameters()).device
    n_codes = adapter.code_grid(device).num_tokens

    def logits_of(codes: torch.Tensor, hidden: torch.Tensor, rows_labels) -> torch.Tensor:  # -> [R, N, num_codes]
        batch = {CODES_KEY: codes, **({} if rows_labels is None else {"label": rows_labels.to(device)})}
        with all_hidden_as_mask(model):  # eval mode first: no label dropout while sampling
            tokens = adapter.tokenize(batch)
            out = model(batch, mask=hidden_mask(tokens, hidden), generator=torch.Generator(device="cpu").manual_seed(0))
        return adapter.code_part(tokens, model.full_prediction(out)).float().cpu()

    def predict(codes: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:  # [n, N] x2 -> [n, N, num_codes]
        codes, hidden = codes.to(device), hidden.to(device)
        if not cfg:
            return logits_of(codes, hidden, labels)
        both = logits_of(codes.repeat(2, 1), hidden.repeat(2, 1), torch.cat([labels, torch.full_like(labels, -1)]))
        cond, uncond = both.chunk(2)
        return cond + cfg * (cond - uncond)

    start = torch.zeros(n, n_codes, dtype=torch.long)
    return iterative_unmask(predict, start, torch.ones_like(start, dtype=torch.bool), steps, order=order,
                            schedule=schedule, temperature=temperature, choice_temperature=choice_temperature,
                            generator=torch.Generator().manual_seed(seed))
