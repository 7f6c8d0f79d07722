"""Held-out evaluation of a text model: masked-token accuracy and a perplexity bound.

masked_acc / masked_ce: BERT's view. `ratio` of the tokens that may be hidden (RandomMasker,
    every one replaced by [MASK]) are predicted; accuracy of the argmax, mean cross-entropy.
nll_bound / ppl_bound: the masked-diffusion ELBO (MDLM, MD4 with alpha_t = 1 - t), in the form
    for exactly k of a sequence's n maskable tokens hidden (the counting rule; any-order
    autoregressive bound): -log p(x) <= n E_{k~U{1..n}} [ (1/k) sum over the k hidden tokens of
    CE ]. Estimated with `n_times` stratified draws k_j = ceil((j + 1/2) / n_times * n) per
    sequence and divided by the maskable tokens: nats per token (bits_per_token = nll_bound /
    ln 2, bits per byte with the byte tokenizer). [CLS], [SEP] and padding are given, never
    scored. Valid for any model that predicts [MASK]ed tokens; tight for one trained on every
    ratio (text_mdm), loose for one trained at 15% only (text_mlm).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from modalities.text.inference import predict_logits
from unimask.masking import RandomMasker


def loader_of(dataset, batch_size: int):
    from unimask.probe import make_loader

    return make_loader(dataset, range(len(dataset)), batch_size)


@torch.no_grad()
def hidden_ce(model, batch, ratio: torch.Tensor, generator) -> tuple:
    """One masking of a batch at ratios [B] -> (ce [B, N] at hidden places, hidden [B, N], ok [B, N])."""
    tokens = model.adapter.tokenize(batch)
    mask = RandomMasker()(tokens, ratio, generator)
    logits = predict_logits(model, batch["ids"], mask.masked, batch.get("word_ids"), ratio)
    target = batch["ids"].to(logits.device)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # [B, N]
    hidden = mask.masked.to(logits.device)
    correct = (logits.argmax(-1) == target) & hidden
    return torch.where(hidden, ce, 0.0), hidden, correct


@torch.no_grad()
def evaluate_text(model, dataset, ratio: float = 0.15, n_times: int = 8, batch_size: int = 32,
                  max_batches: Optional[int] = None, seed: int = 0) -> dict:
    """-> {'masked_acc', 'masked_ce', 'masked_ppl', 'nll_bound', 'ppl_bound', 'bits_per_token',
    'tokens', 'sequences'} over the dataset (or its first max_batches batches)."""
    generator = torch.Generator().manual_seed(seed)
    ce_sum = correct_sum = hidden_sum = bound_sum = 0.0
    scored_tokens = sequences = 0
    for i, batch in enumerate(loader_of(dataset, batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        b = batch["ids"].shape[0]
        ce, hidden, correct = hidden_ce(model, batch, torch.full((b,), float(ratio), dtype=torch.float64), generator)
        ce_sum, correct_sum, hidden_sum = ce_sum + float(ce.sum()), correct_sum + float(correct.sum()), \
            hidden_sum + float(hidden.sum())
        n = model.adapter.tokenize(batch).maskable_mask().sum(1).cpu().double()  # [B]
        for j in range(n_times):
            k = torch.ceil((j + 0.5) / n_times * n).clamp(min=1)  # [B] tokens to hide
            ce_k, hidden_k, _ = hidden_ce(model, batch, ((k - 0.25) / n.clamp(min=1)).clamp(min=0), generator)
            per_seq = ce_k.sum(1).cpu().double() * n / hidden_k.sum(1).cpu().double().clamp(min=1)  # [B]
            bound_sum += float(per_seq.sum()) / n_times
        scored_tokens += int(n.sum())
        sequences += b
    if scored_tokens == 0:
        raise ValueError("evaluate_text: the data holds no tokens to score")
    masked_ce = ce_sum / max(hidden_sum, 1.0)
    nll = bound_sum / scored_tokens
    return {"masked_acc": correct_sum / max(hidden_sum, 1.0), "masked_ce": masked_ce,
            "masked_ppl": math.exp(min(masked_ce, 700)), "nll_bound": nll, "ppl_bound": math.exp(min(nll, 700)),
            "bits_per_token": nll / math.log(2), "tokens": scored_tokens, "sequences": sequences}
