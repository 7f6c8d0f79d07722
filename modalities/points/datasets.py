"""Point-cloud datasets: mesh and cloud files (ModelNet / ShapeNet layouts, list files), and
labeled point sets made from an image .npz."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import gin
import numpy as np
import torch

from modalities.limits import MAX_ARRAY_BYTES, MAX_POINTS, Limit, check_arrays
from modalities.points.clouds import image_to_points, normalize_unit_sphere, resample, sample_surface, scale_and_translate
from modalities.points.files import POINT_EXTS, check_cloud, read_geometry
from unimask.data import SampleDataset
from unimask.files import check_split, list_split_files, read_npz_split, take_shots


@gin.configurable
class PointCloudDataset(SampleDataset):
    """Point files found under `root` (folders, recursive, class sub-folders give labels as in
    ModelNet40 / ShapeNet layouts; list files of `path [label]`; single files). Meshes are
    sampled on their surface (`mesh_samples` points, as ShapeNet-55's 8192), every cloud is
    resampled to `num_points` (`resample` 'random' or 'fps'; fewer points: with replacement),
    unit-sphere normalized and, with `augment`, scaled per axis and translated as Point-MAE.
    split: 'train' | 'val' | 'test' (ModelNet's <class>/train|test/ folders, split folders,
    list files side by side, or `test_root`; see unimask/files.py). shots: k labeled items per
    class of the train split (label-scarce fine-tuning and probes; unimask.files.take_shots), and
    episode which draw of them (0, 1, ...: few-shot results average several episodes).
    max_points: the size guard: a file declaring more vertices (PLY header, .npy header, or read
    from a text format) is refused before it is read, naming this binding (modalities/limits.py).
    Yields {'points': [num_points, 3] float32, 'label': int, -1 when none}."""

    def __init__(self, root=gin.REQUIRED, num_points: int = 1024, resample: str = "random",
                 mesh_samples: int = 8192, augment: bool = True, scale_range: Sequence[float] = (2 / 3, 3 / 2),
                 translate_range: float = 0.2, skip_bad_samples: bool = False, limit: Optional[int] = None,
                 split: str = "train", test_root=None, shots: Optional[int] = None, episode: int = 0,
                 max_points: Optional[int] = MAX_POINTS):
        if resample not in ("random", "fps"):
            raise ValueError(f"PointCloudDataset.resample must be 'random' or 'fps', got {resample!r}")
        check_split(split, "PointCloudDataset.split")
        self.items, self.source = list_split_files(root, POINT_EXTS, split, test_root)
        if episode and shots is None or int(episode) < 0:
            raise ValueError(f"PointCloudDataset.episode={episode}: " + (
                "episodes count from 0" if int(episode) < 0 else "a draw of the shots needs PointCloudDataset.shots"))
        if shots is not None and split == "train":  # fewer labels to learn from; val / test stay whole
            self.items = take_shots(self.items, shots, "PointCloudDataset.shots", episode)
        self.items = self.items[:limit] if limit is not None else self.items
        self.num_points, self.resample, self.mesh_samples = num_points, resample, max(mesh_samples, num_points)
        self.augment, self.scale_range, self.translate_range = augment, tuple(scale_range), translate_range
        self.skip_bad_samples = skip_bad_samples
        self.max_points = Limit(max_points, "PointCloudDataset.max_points")

    def load(self, index):
        path, label = self.items[index]
        rng = np.random.default_rng(np.random.randint(2**31))  # seeded per (index, seed) by SampleDataset
        vertices, faces = read_geometry(path, self.max_points)
        check_cloud(vertices)
        vertices = vertices - vertices.mean(0)  # centre in float64 first: LiDAR UTM coordinates
        cloud = vertices if faces is None else sample_surface(vertices, faces, self.mesh_samples, rng)
        check_cloud(cloud)
        cloud = normalize_unit_sphere(resample(cloud, self.num_points, self.resample, rng))
        if self.augment:
            cloud = scale_and_translate(cloud, self.scale_range, self.translate_range, rng)
        return {"points": torch.from_numpy(cloud.astype(np.float32)), "label": -1 if label is None else label}


@gin.configurable
class ImagePointSetDataset(SampleDataset):
    """Labeled point sets made from an image .npz (x_<split>/y_<split>, the Fashion-MNIST sample
    by default): each image becomes `num_points` points drawn where it is bright, then unit-
    sphere normalized and, with `augment`, scaled and translated as Point-MAE. A real labeled
    train/test split for Point-MAE on data that ships with the repository.
    max_array_bytes: the size guard on the .npz's declared arrays (modalities/limits.py).
    Yields {'points': [num_points, 3] float32, 'label': int}."""

    def __init__(self, root=gin.REQUIRED, split: str = "train", num_points: int = 512, depth: float = 0.25,
                 augment: bool = True, scale_range: Sequence[float] = (2 / 3, 3 / 2), translate_range: float = 0.2,
                 skip_bad_samples: bool = False, limit: Optional[int] = None,
                 max_array_bytes: Optional[int] = MAX_ARRAY_BYTES):
        if os.path.isfile(str(root)):  # read_npz_split names a missing root
            check_arrays(str(root), Limit(max_array_bytes, "ImagePointSetDataset.max_array_bytes"))
        self.images, labels = read_npz_split(str(root), split)
        if self.images.ndim != 3:
            raise ValueError(f"{root}: point sets are made from grayscale images [N, H, W], got "
                             f"{tuple(self.images.shape)}")
        rows = range(len(self.images) if limit is None else min(limit, len(self.images)))
        self.items = [(f"{root}[{split}][{i}]", -1 if labels is None else int(labels[i])) for i in rows]
        self.num_points, self.depth, self.augment = num_points, depth, augment
        self.scale_range, self.translate_range, self.skip_bad_samples = tuple(scale_range), translate_range, skip_bad_samples

    def load(self, index):
        # training: seeded per (index, seed) by SampleDataset; probes: the same cloud every time
        rng = np.random.default_rng(np.random.randint(2**31) if self.augment else index)
        cloud = normalize_unit_sphere(image_to_points(self.images[index], self.num_points, self.depth, rng))
        if self.augment:
            cloud = scale_and_translate(cloud, self.scale_range, self.translate_range, rng)
        return {"points": torch.from_numpy(cloud.astype(np.float32)), "label": self.items[index][1]}
