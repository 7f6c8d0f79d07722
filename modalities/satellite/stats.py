"""Per-band statistics of a data set, stored beside the data in band_stats.json.

tools/band_stats.py computes them once over the valid pixels of the training split (no-data
and NaN pixels left out); SatelliteDataset reads them to normalize every band on its own
scale (Sentinel-2 reflectances in the thousands, Landsat DNs in 0-255), as SatMAE normalizes
by its per-band means and standard deviations.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import numpy as np

STATS_NAME = "band_stats.json"
NORMALIZATIONS = ("standard", "satmae", "none")


class BandAccumulator:
    """Running per-band count, sum, sum of squares, min and max in float64."""

    def __init__(self, bands: Sequence[str]):
        self.bands = list(bands)
        c = len(self.bands)
        self.count, self.total, self.total_sq = np.zeros(c), np.zeros(c), np.zeros(c)
        self.low, self.high = np.full(c, np.inf), np.full(c, -np.inf)
        self.files = 0

    def add(self, cube: np.ndarray, valid: np.ndarray):
        """cube [..., C, H, W] (any frames first), valid the same shape bool."""
        c = len(self.bands)
        values = np.moveaxis(cube.reshape(-1, c, *cube.shape[-2:]), 1, 0).reshape(c, -1).astype(np.float64)
        keep = np.moveaxis(valid.reshape(-1, c, *valid.shape[-2:]), 1, 0).reshape(c, -1)
        for b in range(c):
            v = values[b][keep[b]]
            if v.size:
                self.count[b] += v.size
                self.total[b] += v.sum()
                self.total_sq[b] += np.square(v).sum()
                self.low[b], self.high[b] = min(self.low[b], v.min()), max(self.high[b], v.max())
        self.files += 1

    def result(self) -> dict:
        empty = [b for b, n in zip(self.bands, self.count) if n == 0]
        if empty:
            raise ValueError(f"bands {empty} have no valid pixel in the data: no statistics")
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.total_sq / self.count - mean ** 2, 0.0))
        return {"bands": self.bands, "mean": mean.tolist(), "std": std.tolist(), "min": self.low.tolist(),
                "max": self.high.tolist(), "valid_pixels": self.count.astype(int).tolist(), "files": self.files}


def stats_path(root) -> str:
    """Where a root's statistics live: root/band_stats.json for a folder, the file's folder
    for a file root (an .npz collection, a scene, a list file); the first root of several."""
    first = root if isinstance(root, (str, os.PathLike)) else list(root)[0]
    first = os.path.expanduser(str(first))
    folder = first if os.path.isdir(first) else os.path.dirname(os.path.abspath(first))
    return os.path.join(folder, STATS_NAME)


def write_stats(stats: dict, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(stats, f, indent=2)
        f.write("\n")
    return path


def stats_for_bands(stats: dict, bands: Sequence[str], where: str) -> tuple:
    """(mean [C], std [C]) float32 in the recipe's band order, picked by name."""
    have = list(stats.get("bands", []))
    missing = [b for b in bands if b not in have]
    if missing:
        raise ValueError(f"{where}: has statistics for bands {have}, not for {missing}; recompute them with "
                         f"python tools/band_stats.py --root <data> --bands {' '.join(bands)}")
    pick = [have.index(b) for b in bands]
    mean = np.asarray(stats["mean"], dtype=np.float32)[pick]
    std = np.asarray(stats["std"], dtype=np.float32)[pick]
    if not np.all(std > 0):
        flat = [b for b, s in zip(bands, std) if not s > 0]
        raise ValueError(f"{where}: bands {flat} have standard deviation 0 (constant): they cannot be normalized")
    return mean, std


def read_stats(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def normalize(cube: np.ndarray, mean: Optional[np.ndarray], std: Optional[np.ndarray], how: str) -> np.ndarray:
    """cube [..., C, H, W] float32 -> normalized per band. 'standard': (x - mean) / std;
    'satmae': SatMAE's SentinelNormalize (clip to mean +- 2 std, scaled to [0, 1]); 'none'."""
    if how == "none":
        return cube
    shape = (len(mean), 1, 1)
    mean, std = mean.reshape(shape), std.reshape(shape)
    if how == "standard":
        return (cube - mean) / std
    if how == "satmae":
        low = mean - 2 * std
        return np.clip((cube - low) / (4 * std), 0.0, 1.0)
    raise ValueError(f"SatelliteDataset.normalize={how!r}: use one of {NORMALIZATIONS}")


def band_stats(root, bands=None, nodata=None, split: str = "train", limit=None) -> dict:
    """-> band_stats.json contents for the files (or .npz collection rows) under root: the
    training split only, read and band-selected as SatelliteDataset reads them (tools/band_stats.py)."""
    from modalities.satellite.dataset import SatelliteDataset

    data = SatelliteDataset(root=root, bands=bands, crop_size=None, split=split, augment=False, normalize="none",
                            nodata=nodata, limit=limit)
    return data.statistics()
