"""Datasets that yield several modalities per sample, for MultiModalModel.

    PairedDataset     items of several datasets side by side: by index (aligned data), by label
                      (AV-MNIST-style: a digit image with a spoken digit of the same class) or one
                      of them per item ('either': OmniMAE's images and videos in one batch)
    DerivedViews      extra modalities computed from one (MultiMAE-style: an image and its
                      gradient-magnitude view), from the same augmented sample

Every item carries `present` {modality: bool}: a modality an item does not have is zeros in the
batch and padding for the model (valid=False), so it is neither encoded nor scored.
"""
from __future__ import annotations

from typing import Dict, Optional

import gin
import numpy as np
import torch
import torch.nn.functional as F

from unimask.data import SampleDataset

PAIRINGS = ("index", "label", "either")


@gin.configurable
class PairedDataset(SampleDataset):
    """datasets: {modality: dataset}; keys: {modality: the key of that dataset's items that holds
    it} (default: the modality name); driver: the dataset whose items make the epoch and give the
    label (default: the first name in sorted order; gin does not keep a dict's order through a
    checkpoint's config); pairing: 'index' (item i of each), 'label' (each other dataset gives a
    random item of the driver's label, the same one for a given sample seed), 'either' (items of
    all datasets one after the other, the others missing).
    drop: {modality: probability} of leaving a present modality out (modality dropout; never the
    last one of an item). With 'either', balance=True interleaves the datasets so each gives
    every n-th item (a big image set does not drown four videos), cycling the smaller ones."""

    def __init__(self, datasets: Dict[str, SampleDataset] = gin.REQUIRED, keys: Optional[Dict[str, str]] = None,
                 pairing: str = "index", drop: Optional[Dict[str, float]] = None, balance: bool = True,
                 driver: Optional[str] = None):
        if pairing not in PAIRINGS:
            raise ValueError(f"PairedDataset.pairing must be one of {PAIRINGS}, got {pairing!r}")
        self.names = sorted(datasets)
        driver = driver or self.names[0]
        if driver not in datasets:
            raise ValueError(f"PairedDataset.driver={driver!r} is not one of the datasets {self.names}")
        self.names = [driver] + [n for n in self.names if n != driver]
        self.datasets, self.pairing = {n: datasets[n] for n in self.names}, pairing
        self.keys = {name: (keys or {}).get(name, name) for name in self.names}
        self.drop = dict(drop or {})
        first = self.datasets[self.names[0]]
        if pairing == "index" and any(len(d) != len(first) for d in self.datasets.values()):
            raise ValueError(f"PairedDataset(pairing='index') needs datasets of one length, got "
                             f"{ {n: len(d) for n, d in self.datasets.items()} }")
        if pairing == "either" and balance:
            longest = max(len(d) for d in self.datasets.values())
            self.items = [(name, i % len(self.datasets[name])) for i in range(longest) for name in self.names]
        elif pairing == "either":
            self.items = [(name, i) for name in self.names for i in range(len(self.datasets[name]))]
        else:
            self.items = [(self.names[0], i) for i in range(len(first))]
        self.by_label = {name: labels_index(d) for name, d in self.datasets.items()} if pairing == "label" else {}
        self.source = "; ".join(f"{n}: {getattr(d, 'source', type(d).__name__)}" for n, d in self.datasets.items())
        self.skip_bad_samples = False  # each dataset skips (and counts) its own bad files
        self._blank = {}

    def describe(self, index):
        name, i = self.items[index]
        return self.datasets[name].describe(i)

    def blank(self, name: str) -> torch.Tensor:
        """Zeros shaped like the modality, for items that do not have it (one real item measured once)."""
        if name not in self._blank:
            self._blank[name] = torch.zeros_like(self.datasets[name][(0, 0)][self.keys[name]])
        return self._blank[name]

    def member(self, name: str, index: int, seed: int) -> dict:
        return self.datasets[name][(index, seed)]

    def load(self, index):
        driver, i = self.items[index]
        seed = int(np.random.randint(2**31))  # seeded per (index, seed) by SampleDataset
        lead = self.member(driver, i, seed)
        sample = {"label": lead["label"], "present": {}, "n_bad": lead.get("n_bad", 0)}
        for name in self.names:
            if name == driver:
                item = lead
            elif self.pairing == "index":
                item = self.member(name, i, seed)
            elif self.pairing == "label":
                candidates = self.by_label[name].get(int(lead["label"]), [])
                if not candidates:
                    raise ValueError(f"no item of {name!r} has the label {int(lead['label'])}")
                item = self.member(name, int(candidates[np.random.randint(len(candidates))]), seed)
            else:
                item = None
            sample[name] = item[self.keys[name]] if item is not None else self.blank(name)
            sample["present"][name] = item is not None
        for name, probability in self.drop.items():
            others = [n for n in self.names if n != name and sample["present"][n]]
            if sample["present"][name] and others and np.random.rand() < probability:
                sample[name], sample["present"][name] = self.blank(name), False
        return sample


def labels_index(dataset) -> dict:
    """{label: [item indices]} of a dataset whose items list labels in `items[i][1]`."""
    index = {}
    for i, item in enumerate(dataset.items):
        label = item[1]
        if label is not None and label >= 0:
            index.setdefault(int(label), []).append(i)
    return index


def gradient_magnitude(image: torch.Tensor) -> torch.Tensor:
    """[C, H, W] -> [1, H, W]: Sobel gradient magnitude of the channel mean, standardized (an
    edge / depth-like view of the same pixels, MultiMAE-style pseudo-labels without a network)."""
    gray = image.float().mean(0, keepdim=True)[None]  # [1, 1, H, W]
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([kx, kx.T])[:, None]  # [2, 1, 3, 3]
    grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)  # [1, 2, H, W]
    magnitude = grad.square().sum(1).sqrt()  # [1, H, W]
    return (magnitude - magnitude.mean()) / magnitude.std().clamp(min=1e-6)


VIEWS = {"sobel": gradient_magnitude}


class Derived(SampleDataset):
    """Base of datasets that change another one's items after it loaded (and augmented) them:
    subclasses implement change(sample) -> sample; the items, their names and skips stay the
    inner dataset's."""

    def __init__(self, dataset: SampleDataset):
        self.dataset, self.items = dataset, dataset.items
        self.source, self.skip_bad_samples = getattr(dataset, "source", ""), False

    def describe(self, index):
        return self.dataset.describe(index)

    def change(self, sample: dict) -> dict:
        raise NotImplementedError

    def load(self, index):
        return self.change(self.dataset[(index, int(np.random.randint(2**31)))])


@gin.configurable
class DerivedViews(Derived):
    """Another dataset's items plus views computed from one of their tensors, after its
    augmentation (so every view shows the same crop): views {modality: 'sobel'} from `source`."""

    def __init__(self, dataset: SampleDataset = gin.REQUIRED, source: str = "image",
                 views: Optional[Dict[str, str]] = None):
        views = dict(views or {"edges": "sobel"})
        unknown = sorted(set(views.values()) - set(VIEWS))
        if unknown:
            raise ValueError(f"DerivedViews.views: unknown view(s) {unknown}; known: {sorted(VIEWS)}")
        super().__init__(dataset)
        self.source_key, self.views = source, views

    def change(self, sample):
        for name, view in self.views.items():
            sample[name] = VIEWS[view](sample[self.source_key])
        return sample


@gin.configurable
class ImagesAsClips(Derived):
    """Another dataset's images [C, H, W] as clips [C, frames, H, W] of one still frame repeated
    (OmniMAE: an image is a video of one tubelet, so one patch embedding serves both)."""

    def __init__(self, dataset: SampleDataset = gin.REQUIRED, key: str = "image", frames: int = 2):
        if frames < 1:
            raise ValueError(f"ImagesAsClips.frames={frames} must be >= 1")
        super().__init__(dataset)
        self.key, self.frames = key, frames

    def change(self, sample):
        sample[self.key] = sample[self.key][:, None].expand(-1, self.frames, -1, -1).contiguous()
        return sample
