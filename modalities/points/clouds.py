"""Preparing one cloud in a DataLoader worker (numpy): surface samples of a mesh, a fixed point
count, unit-sphere normalization, Point-MAE's scale-and-translate augmentation, and point sets
drawn from grayscale images (PointNet++'s MNIST experiment)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from modalities.points.sampling import farthest_point_sample


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Area-weighted uniform samples on a triangle mesh: [V, 3], [F, 3] -> [n, 3]. A mesh
    whose triangles all have zero area falls back to its vertices."""
    corners = vertices[faces]  # [F, 3, 3]
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    total = area.sum()
    if not total > 0:
        return vertices[np.unique(faces)]
    face = rng.choice(len(faces), n, p=area / total)
    sqrt_r1, r2 = np.sqrt(rng.random(n))[:, None], rng.random(n)[:, None]
    a, b, c = corners[face, 0], corners[face, 1], corners[face, 2]
    return (1 - sqrt_r1) * a + sqrt_r1 * (1 - r2) * b + sqrt_r1 * r2 * c


def resample(points: np.ndarray, n: int, method: str, rng: np.random.Generator) -> np.ndarray:
    """[N, 3] -> [n, 3]. More points than n: a random subset (ShapeNet-55's) or FPS (ModelNet's).
    Fewer (either method): every point once plus random repeats (sampling with replacement),
    so a small cloud still fills the fixed size; the adapter's FPS never picks a repeat twice."""
    if len(points) < n:
        extra = rng.choice(len(points), n - len(points), replace=True)
        return points[np.concatenate([np.arange(len(points)), extra])]
    if method == "random":
        return points[rng.choice(len(points), n, replace=False)]
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    ids = farthest_point_sample(torch.from_numpy(points).float()[None], n, random_start=True, generator=gen)[0]
    return points[ids.numpy()]


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Point-MAE's pc_norm: centre on the mean, scale so the farthest point has norm 1."""
    centred = points - points.mean(0)
    radius = np.linalg.norm(centred, axis=1).max()
    if not radius > 0:
        raise ValueError("all points coincide; the cloud cannot be normalized")
    return centred / radius


def scale_and_translate(points: np.ndarray, scale_range: Sequence[float], translate: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Point-MAE's PointcloudScaleAndTranslate: a random scale per axis, then a random shift."""
    scale = rng.uniform(scale_range[0], scale_range[1], size=3)
    return points * scale + rng.uniform(-translate, translate, size=3)


def image_to_points(image: np.ndarray, n: int, depth: float, rng: np.random.Generator) -> np.ndarray:
    """A grayscale image [H, W] -> [n, 3] points: pixels drawn with probability proportional to
    intensity (with replacement), jittered uniformly inside the pixel; x, y in pixel units, z =
    depth x intensity in [0, 1] (MNIST-style point sets, as in PointNet++'s MNIST experiment)."""
    weight = image.astype(np.float64).ravel()
    total = weight.sum()
    if not total > 0:
        raise ValueError("the image is blank: no pixel to draw points from")
    pixel = rng.choice(weight.size, n, p=weight / total)
    row, col = np.divmod(pixel, image.shape[1])
    xy = np.stack([col, image.shape[0] - 1 - row], 1) + rng.random((n, 2))  # y up, as a plot
    return np.concatenate([xy, depth * image.shape[0] * (weight[pixel] / weight.max())[:, None]], 1)
