"""View samplers for two-view masked modeling (SiamMAE, CropMAE): two views of one scene per
item, view 1 under the dataset's key and view 2 under the key + '_2' (unimask/models/siamese.py).

    FramePairs  two frames of a video a random gap apart (SiamMAE: 4-48 frames), one crop and
                flip for both, so what differs is what moved
    CropPairs   a global crop of an image and a local crop inside it (CropMAE: global scale
                0.1-1 of the image, local 0.3-0.6 of the global crop), each resized to the image
                size, so the second is a zoomed part of the first
The recipes still read their data through VideoDataset / ImageDataset (root, splits, skips).
"""
from __future__ import annotations

from typing import Sequence

import gin
import numpy as np
import torch
from torchvision.transforms import v2 as T

from modalities.video import ClipTransform, VideoDataset, VideoReader
from unimask.data import SampleDataset


@gin.configurable
class FramePairs(SampleDataset):
    """dataset: a VideoDataset (its files, decoder backend, image size and normalization are
    used; its clip sampling is not). Yields {'image': [3, H, W], 'image_2': [3, H, W], 'label'}.

    Probes (augment=False) of a VideoDataset with a label-free `probe` take that dataset's own
    evenly spaced windows and labels instead (e.g. probe='identity': which video is this frame
    from, train frames from the first half of each video, test frames from the last 30%): view 1
    is a window's first frame, view 2 its last, so the window's length is the gap."""

    def __init__(self, dataset: VideoDataset = gin.REQUIRED, min_gap: int = 4, max_gap: int = 48,
                 img_size: int = 224, min_scale: float = 0.5, augment: bool = True):
        if not 1 <= min_gap <= max_gap:
            raise ValueError(f"FramePairs needs 1 <= min_gap <= max_gap, got {min_gap}, {max_gap}")
        self.dataset, self.min_gap, self.max_gap, self.augment = dataset, min_gap, max_gap, augment
        self.probe_windows = not augment and dataset.probe is not None
        self.items = dataset.items if self.probe_windows else [(path, label) for path, label, *_ in dataset.items]
        self.source, self.skip_bad_samples = dataset.source, dataset.skip_bad_samples
        self.to_clip = ClipTransform(img_size, min_scale, augment)

    def load(self, index):
        if self.probe_windows:
            sample = self.dataset.load(index)  # {'video': [3, T, S, S], 'label'}
            return {"image": sample["video"][:, 0], "image_2": sample["video"][:, -1], "label": sample["label"]}
        path, label = self.items[index]
        reader = VideoReader(path, self.dataset.backend, *self.dataset.limits)
        if len(reader) <= self.min_gap:
            raise ValueError(f"{path}: {len(reader)} frames, too few for two frames {self.min_gap} apart")
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        gap = int(rng.integers(self.min_gap, min(self.max_gap, len(reader) - 1) + 1)) if self.augment else \
            min(self.max_gap, len(reader) - 1)
        first = int(rng.integers(0, len(reader) - gap)) if self.augment else (len(reader) - gap) // 2
        clip = self.to_clip(reader.get(np.array([first, first + gap])))  # [3, 2, H, W], one crop for both
        return {"image": clip[:, 0], "image_2": clip[:, 1], "label": -1 if label is None else label}


@gin.configurable
class CropPairs(SampleDataset):
    """dataset: an ImageDataset built with augment=False (the whole image at its size); view 1 a
    random resized crop of global_scale of it, view 2 one of local_scale of view 1, both flipped
    together. Yields {'image': [C, S, S], 'image_2': [C, S, S], 'label'}."""

    def __init__(self, dataset: SampleDataset = gin.REQUIRED, global_scale: Sequence[float] = (0.1, 1.0),
                 local_scale: Sequence[float] = (0.3, 0.6), augment: bool = True):
        self.dataset, self.augment = dataset, augment
        self.items, self.source = dataset.items, getattr(dataset, "source", "")
        self.skip_bad_samples = False
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)

    def describe(self, index):
        return self.dataset.describe(index)

    def load(self, index):
        sample = self.dataset[(index, int(np.random.randint(2**31)))]
        image = sample["image"]  # [C, S, S]
        size = image.shape[-1]
        if not self.augment:  # probes: the image whole, and its centre
            centre = T.Resize((size, size), antialias=True)(T.CenterCrop(int(size * 0.6))(image))
            return {"image": image, "image_2": centre, "label": sample["label"]}
        first = T.RandomResizedCrop(size, scale=self.global_scale, antialias=True)(image)
        second = T.RandomResizedCrop(size, scale=self.local_scale, antialias=True)(first)
        if torch.rand(()) < 0.5:
            first, second = first.flip(-1), second.flip(-1)
        return {"image": first, "image_2": second, "label": sample["label"]}
