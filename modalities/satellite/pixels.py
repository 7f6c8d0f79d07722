"""One sample's pixels: the recipe's bands picked by name, no-data found, cropped, flipped,
and no-data filled so nothing non-finite ever reaches the model.

Shapes: cubes are [..., C, H, W] (a time axis first when there is one), `valid` the same
shape bool: True where a pixel holds a measurement.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def select_bands(data: np.ndarray, file_bands: Optional[Sequence[str]], bands: Optional[Sequence[str]],
                 where: str) -> np.ndarray:
    """[..., C_file, H, W] -> [..., C, H, W] in the recipe's band order.

    A file that names its bands gives the recipe's bands by name (reordered, extra bands
    left out); an unnamed one must have exactly the recipe's band count, taken in order.
    Either way a mismatch is an error naming the file and the expected bands."""
    have = data.shape[-3]
    if bands is None:
        return data
    if file_bands is not None:
        file_bands = [str(b) for b in file_bands]
        if len(file_bands) != have:
            raise ValueError(f"{where}: its metadata names {len(file_bands)} bands {file_bands} but it holds {have}")
        missing = [b for b in bands if b not in file_bands]
        if missing:
            raise ValueError(f"{where}: has bands {file_bands}, lacks {missing}; the recipe expects "
                             f"{list(bands)} (SatelliteDataset.bands)")
        order = [file_bands.index(b) for b in bands]
        return data if order == list(range(have)) else data[..., order, :, :]
    if have != len(bands):
        raise ValueError(f"{where}: has {have} bands, the recipe expects {len(bands)}: {list(bands)} "
                         "(SatelliteDataset.bands; name the file's bands in a bands.json beside it to pick some)")
    return data


def valid_pixels(data: np.ndarray, nodata: Optional[float]) -> np.ndarray:
    """[..., C, H, W] -> bool, False at NaN / infinite values and at the no-data value."""
    if np.issubdtype(data.dtype, np.floating):
        valid = np.isfinite(data)
    else:
        valid = np.ones(data.shape, dtype=bool)
    if nodata is not None and np.isfinite(nodata):
        valid &= data != nodata
    return valid


def crop_window(height: int, width: int, size: Optional[int], random: bool, where: str) -> tuple:
    """(top, left, size_h, size_w) of a size x size window: random (training) or centred; the
    whole raster when size is None. A raster smaller than the window is an error."""
    if size is None:
        return 0, 0, height, width
    if height < size or width < size:
        raise ValueError(f"{where}: raster is {height} x {width}, smaller than SatelliteDataset.crop_size={size}")
    if random:
        return int(np.random.randint(height - size + 1)), int(np.random.randint(width - size + 1)), size, size
    return (height - size) // 2, (width - size) // 2, size, size


def crop(data: np.ndarray, window: tuple) -> np.ndarray:
    top, left, h, w = window
    return data[..., top:top + h, left:left + w]


def fill_nodata(cube: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace no-data values by the mean of the valid pixels of the same band and frame
    (0, the data set's mean after normalization, where a band has none): finite, and flat so
    the encoder reads no pattern into it. The loss ignores them through the target weight."""
    if valid.all():
        return cube
    count = valid.sum((-2, -1), keepdims=True)
    total = np.where(valid, cube, 0).sum((-2, -1), keepdims=True)
    mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return np.where(valid, cube, mean).astype(np.float32)
