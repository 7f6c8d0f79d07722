"""SatelliteDataset: multi-band rasters (GeoTIFF, .npy / .npz cubes, .npz collections) ->
normalized [C, H, W] (or [T, C, H, W] with dates) crops, a no-data map and labels.

Per sample: the recipe's bands are picked by name (or checked by count), no-data pixels
(the file's or the recipe's nodata value, NaN, inf) are found, a crop is cut (random when
training, centred for probes), every band is normalized by the data set's statistics
(band_stats.json beside the data, tools/band_stats.py), and no-data pixels are filled with
their band's mean so the batch is finite; `valid_pixels` tells the adapter which values the
loss may score.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence

import gin
import numpy as np
import torch

from modalities.limits import MAX_ARRAY_BYTES, MAX_ELEMENTS, Declared, Limit, check_arrays, member_text
from modalities.satellite.bands import SATMAE_BANDS
from modalities.satellite.dates import SATMAE_MIN_YEAR, timestamps
from modalities.satellite.files import RASTER_EXTS, Raster, is_collection, read_raster, sidecar_metadata
from modalities.satellite.pixels import crop, crop_window, fill_nodata, select_bands, valid_pixels
from modalities.satellite.stats import (NORMALIZATIONS, BandAccumulator, normalize, read_stats, stats_for_bands,
                                        stats_path)
from modalities.satellite.synthetic import synthetic_stack
from unimask.data import SampleDataset
from unimask.files import as_roots, check_split, list_split_files, read_npz_split


@gin.configurable
class SatelliteDataset(SampleDataset):
    """Yields {'bands' [C, H, W] (or [T, C, H, W]) float32, 'valid_pixels' bool of the same shape,
    'timestamps' [T, 3] (temporal samples only), 'label', 'source' (the file, for errors)}.

    root: folders (class sub-folders give labels, split folders / list files / test_root as
    every dataset, unimask/files.py) of .tif/.tiff/.npy/.npz files, single files (a large
    scene: random crops of it), or an .npz collection with x_train / x_test [N, C, H, W]
    (+ y_*, bands, nodata). bands: the recipe's band names in order (None: as stored).
    crop_size: side of the square crop (None: whole rasters, which must then share a size).
    normalize: 'standard' (z-score per band), 'satmae' (mean +- 2 std -> [0, 1]) or 'none';
    stats: band_stats.json path (None: the one beside the data; computed from the training
    split with a warning when there is none). nodata: the no-data value when the files do not
    declare one (set it to override theirs). synthetic_dates: a temporal DEMO on single-date
    data: each sample repeated at these dates (modalities/satellite/synthetic.py).
    max_elements / max_array_bytes: size guards (modalities/limits.py): a raster declaring more
    values (one sample of a collection too), or a collection's array declaring more bytes, is
    refused before its pixels are read."""

    def __init__(self, root=gin.REQUIRED, bands: Optional[Sequence[str]] = SATMAE_BANDS, crop_size: Optional[int] = 96,
                 split: str = "train", augment: bool = True, hflip: bool = True, normalize: str = "standard",
                 stats: Optional[str] = None, nodata: Optional[float] = None,
                 synthetic_dates: Optional[Sequence] = None, min_year: int = SATMAE_MIN_YEAR,
                 skip_bad_samples: bool = False, limit: Optional[int] = None, test_root=None, stats_limit: int = 5000,
                 max_elements: Optional[int] = MAX_ELEMENTS, max_array_bytes: Optional[int] = MAX_ARRAY_BYTES):
        check_split(split, "SatelliteDataset.split")
        self.max_elements = Limit(max_elements, "SatelliteDataset.max_elements")
        self.max_array_bytes = Limit(max_array_bytes, "SatelliteDataset.max_array_bytes")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"SatelliteDataset.normalize={normalize!r}: use one of {NORMALIZATIONS}")
        if crop_size is not None and crop_size < 1:
            raise ValueError(f"SatelliteDataset.crop_size={crop_size} must be >= 1 (or None for whole rasters)")
        self.root, self.bands = root, None if bands is None else [str(b) for b in bands]
        self.crop_size, self.split, self.augment, self.hflip = crop_size, split, augment, hflip
        self.normalization, self.nodata, self.min_year = normalize, nodata, min_year
        self.synthetic_dates = list(synthetic_dates) if synthetic_dates else None
        self.skip_bad_samples = skip_bad_samples
        self.items, self.collections = [], {}  # items: (path, label, row | None)
        self.source = self._list(root, split, test_root)
        if limit is not None:
            self.items = self.items[:limit]
        if not self.items:
            raise ValueError(f"SatelliteDataset: no samples in {self.source}")
        self.mean = self.std = None
        if normalize != "none":
            self.mean, self.std = self._band_stats(stats, stats_limit)

    # ---- listing --------------------------------------------------------------------------
    def _list(self, root, split: str, test_root) -> str:
        """Fill self.items from collections and file roots -> where they came from."""
        from_test = split != "train" and test_root is not None
        roots = [str(r) for r in as_roots(test_root if from_test else root)]
        file_roots, sources = [], []
        for r in roots:
            if is_collection(r):
                self._add_collection(r, split, whole_file_ok=from_test or split == "train")
                sources.append(r)
            else:
                file_roots.append(r)
        if file_roots:
            if from_test:
                train_roots = [str(r) for r in as_roots(root) if not is_collection(str(r))] or file_roots
                found, how = list_split_files(train_roots, RASTER_EXTS, split, file_roots)
            else:
                found, how = list_split_files(file_roots, RASTER_EXTS, split)
            self.items += [(path, label, None) for path, label in found]
            sources.append(how.split(": ", 1)[1])
        return f"{split}: " + ", ".join(sources)

    def _add_collection(self, path: str, split: str, whole_file_ok: bool):
        def rows(key: str, declared: Declared):  # one sample of x_<split> [N, ...] within max_elements
            if (key == "x" or key.startswith("x_")) and declared.shape:
                self.max_elements.check(path, f"{member_text(key, declared)}: each sample",
                                        int(np.prod(declared.shape[1:])), "values")

        check_arrays(path, self.max_array_bytes, rows)
        x, y = read_npz_split(path, split, whole_file_ok)
        if x.ndim not in (4, 5):
            raise ValueError(f"{path}: x_{split} has shape {x.shape}; expected [N, C, H, W] or [N, T, C, H, W]")
        with np.load(path, allow_pickle=False) as npz:
            meta = Raster(np.empty(0), bands=list(map(str, npz["bands"])) if "bands" in npz else None,
                          nodata=float(npz["nodata"]) if "nodata" in npz else None,
                          dates=npz[f"dates_{split}"] if f"dates_{split}" in npz else None)
        self.collections[path] = (x, y, meta)
        self.items += [(path, None if y is None else int(y[i]), i) for i in range(len(x))]

    def describe(self, index: int) -> str:
        path, _, row = self.items[index]
        return path if row is None else f"{path}[{self.split} row {row}]"

    # ---- pixels ---------------------------------------------------------------------------
    def metadata_stop(self) -> str:
        """Where the search for JSON metadata above a file stops: the folder above the root."""
        return os.path.dirname(os.path.abspath(str(as_roots(self.root)[0])))

    def file_metadata(self, path: str) -> dict:
        """The JSON sidecars of a raster (<stem>.json, bands.json above it), packed into its shard."""
        return sidecar_metadata(path, self.metadata_stop())

    def root_files(self) -> list:
        """band_stats.json, where the root keeps one (the index's folder is where shards keep it)."""
        path = stats_path(self.root)
        return [path] if os.path.isfile(path) else []

    def raster(self, index: int) -> Raster:
        path, label, row = self.items[index]
        if row is None:
            raster = read_raster(path, stop=self.metadata_stop(), max_elements=self.max_elements)
            return raster if raster.label is not None or label is None else Raster(
                raster.data, raster.bands, raster.nodata, raster.dates, label)
        x, _, meta = self.collections[path]
        dates = None if meta.dates is None else list(meta.dates[row])
        return Raster(x[row], meta.bands, meta.nodata, dates, label)

    def measured(self, index: int) -> tuple:
        """The recipe's bands of one item, uncropped and unnormalized -> (cube [.., C, H, W]
        float32, valid bool, raster)."""
        raster = self.raster(index)
        where = self.describe(index)
        if not (np.issubdtype(raster.data.dtype, np.number) and not np.issubdtype(raster.data.dtype, np.complexfloating)):
            raise ValueError(f"{where}: pixel type {raster.data.dtype} is not a real number type")
        cube = select_bands(raster.data, raster.bands, self.bands, where)
        valid = valid_pixels(cube, self.nodata if self.nodata is not None else raster.nodata)
        return cube.astype(np.float32), valid, raster

    def band_names(self) -> list:
        """The bands as the recipe names them (or the first file's own names, band0.. if unnamed)."""
        if self.bands is not None:
            return self.bands
        raster = self.raster(0)
        return [str(b) for b in raster.bands] if raster.bands else [f"band{i}" for i in range(raster.data.shape[-3])]

    def statistics(self, limit: Optional[int] = None) -> dict:
        """Per-band statistics of the valid pixels of (the first `limit`) items: band_stats.json content."""
        accumulator = BandAccumulator(self.band_names())
        for i in range(len(self) if limit is None else min(limit, len(self))):
            cube, valid, _ = self.measured(i)
            accumulator.add(cube, valid)
        result = accumulator.result()
        result.update(source=self.source, nodata=self.nodata)
        return result

    def _band_stats(self, stats: Optional[str], limit: int) -> tuple:
        """(mean, std) [C] from band_stats.json, or computed from the training split when the data has none."""
        path = stats or stats_path(self.root)
        if os.path.isfile(path):
            return stats_for_bands(read_stats(path), self.band_names(), path)
        if stats is not None:
            raise FileNotFoundError(f"SatelliteDataset.stats={stats!r} does not exist "
                                    "(write it with python tools/band_stats.py)")
        train = self if self.split == "train" else SatelliteDataset(
            self.root, self.bands, crop_size=None, normalize="none", nodata=self.nodata, limit=limit,
            max_elements=self.max_elements.value, max_array_bytes=self.max_array_bytes.value)
        warnings.warn(f"no {path}: computing band statistics from {min(limit, len(train))} training items; store "
                      f"them with  python tools/band_stats.py --root {self.root}")
        return stats_for_bands(train.statistics(limit), self.band_names(), f"statistics of {train.source}")

    # ---- samples --------------------------------------------------------------------------
    def load(self, index: int) -> dict:
        where = self.describe(index)
        cube, valid, raster = self.measured(index)
        window = crop_window(*cube.shape[-2:], self.crop_size, self.augment, where)
        cube, valid = crop(cube, window), crop(valid, window)
        if self.augment and self.hflip and np.random.rand() < 0.5:
            cube, valid = cube[..., ::-1], valid[..., ::-1]
        if not valid.any():
            raise ValueError(f"{where}: the crop holds no valid pixel (every value is no-data or NaN)")
        cube = fill_nodata(normalize(cube, self.mean, self.std, self.normalization).astype(np.float32), valid)
        dates = self._dates(raster, cube, where)
        if self.synthetic_dates and cube.ndim == 3:
            cube, valid = synthetic_stack(cube, valid, self.synthetic_dates)
        sample = {"bands": torch.from_numpy(np.ascontiguousarray(cube, dtype=np.float32)),
                  "valid_pixels": torch.from_numpy(np.ascontiguousarray(valid)),
                  "label": -1 if raster.label is None else int(raster.label), "source": where}
        if dates is not None:
            sample["timestamps"] = torch.from_numpy(timestamps(dates, self.min_year, f"{where}: dates"))
        return sample

    def _dates(self, raster: Raster, cube: np.ndarray, where: str) -> Optional[list]:
        """The frames' dates: the file's for a [T, C, H, W] cube (which must have one per frame),
        the synthetic ones for a single-date demo, none for a single-date sample."""
        if cube.ndim == 4:
            if raster.dates is None or len(raster.dates) != cube.shape[0]:
                have = "no dates" if raster.dates is None else f"{len(raster.dates)} dates"
                raise ValueError(f"{where}: a stack of {cube.shape[0]} acquisitions with {have}; give one date per "
                                 "frame ('dates' in the .npz or a <file>.json beside it)")
            return list(raster.dates)
        return self.synthetic_dates

    def collate(self, samples: list) -> dict:
        """default_collate, after checking that every sample has the same raster size: a batch
        of mixed sizes is an error naming each file and its size."""
        shapes = [tuple(s["bands"].shape) for s in samples]
        if len(set(shapes)) > 1:
            listing = "; ".join(f"{s['source']}: {shape}" for s, shape in zip(samples, shapes))
            raise ValueError(f"a batch mixes raster sizes ({listing}); set SatelliteDataset.crop_size to cut "
                             "every sample to one size")
        return torch.utils.data.default_collate(samples)
