"""How good generated samples are, offline: distances in the feature space of a classifier the
project trained on the same data (no Inception weights can be downloaded here).

    frechet_distance      FID's formula (Heusel et al. 2017) on any features
    precision_recall      Kynkäänniemi et al. 2019: the share of generated samples inside the
                          real samples' k-NN balls (precision) and of real ones inside the
                          generated samples' balls (recall)
    classifier_outputs    a Classifier's pooled features and predictions of input batches; their
                          accuracy on class-conditional samples is CAS (Ravuri & Vinyals 2019)
"""
from __future__ import annotations

from typing import Iterable

import torch


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets a [N, D], b [M, D],
    in float64; the trace of the square root from the eigenvalues of S_a^(1/2) S_b S_a^(1/2)
    (symmetric, so real), which equals that of (S_a S_b)^(1/2)."""
    a, b = a.double(), b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of every row of x [N, D] to its k-th nearest other row -> [N]."""
    distances = torch.cdist(x, x)
    return distances.kthvalue(k + 1, dim=1).values  # the 0th is the row itself


def coverage(balls: torch.Tensor, radii: torch.Tensor, points: torch.Tensor) -> float:
    """The share of points [M, D] inside at least one ball (centres balls [N, D], radii [N])."""
    return float((torch.cdist(points, balls) <= radii[None]).any(1).double().mean())


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple:
    """(precision, recall) of generated features fake [M, D] against real ones [N, D], both in [0, 1]."""
    real, fake = real.double(), fake.double()
    return coverage(real, knn_radii(real, k), fake), coverage(fake, knn_radii(fake, k), real)


@torch.no_grad()
def classifier_outputs(classifier, batches: Iterable[dict]) -> tuple:
    """A Classifier's (features [N, D]: its pooled, normalized features, what its head reads;
    predictions [N]) over batches of its adapter's input."""
    classifier.eval()
    features, predictions = [], []
    for batch in batches:
        pooled = classifier.fc_norm(classifier.pooled_features(batch))
        features.append(pooled.float().cpu())
        predictions.append(classifier.head(pooled).argmax(-1).cpu())
    return torch.cat(features), torch.cat(predictions)
