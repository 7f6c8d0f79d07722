"""Probes: how much do the encoder's features know about labels it never saw?

Features come from `model.features(batch)` (every token visible) and labels from
`model.adapter.labels(batch)`, so the same code probes any adapter: [B] labels give one
row per sample (tokens pooled), [B, N] labels (-1 = unlabeled) give one row per labeled
token. Probes are deterministic (fixed seeds, full-batch L-BFGS by default), so two
checkpoints are compared on one number that does not move between reruns.

    extract_features  frozen features  -> (x [M, D], y [M])
    extract_raw       the input itself -> (x [M, P'], y [M]), the no-learning baseline
    linear_probe      standardized multinomial logistic regression (L-BFGS or AdamW)
    knn_probe         cosine kNN, DINO's temperature-weighted vote or a plain majority
    knn_probe_sharded the same with train rows sharded over torchrun ranks (equal predictions)
    finetune          a few epochs of encoder + linear head, end to end
"""
from unimask.probe.classifiers import accuracy, choose_wd, fit_logistic, linear_probe, standardize  # noqa: F401
from unimask.probe.data import HoldOutLabels, IndexBatches, holdout_mask, make_loader  # noqa: F401
from unimask.probe.features import (POOLS, NoLabelsError, encode_all, extract_features, extract_raw,  # noqa: F401
                                    labeled_batches, no_labels_error, pool_rows, recompute_norm_stats,
                                    rows_and_labels, token_labels_for)
from unimask.probe.knn import knn_predict, knn_predict_sharded, knn_probe, knn_probe_sharded  # noqa: F401
from unimask.probe.finetune import batch_logits, finetune  # noqa: F401
