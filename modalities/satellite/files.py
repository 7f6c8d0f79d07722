"""Reading rasters: GeoTIFF (tifffile; rasterio is never needed), .npy and .npz cubes.

Every reader returns a `Raster`: values [C, H, W] or [T, C, H, W] (bands first, as stored
or moved there), plus what the file says about itself: band names, the no-data value and
acquisition dates. What the file does not say can come from a JSON beside it (`<stem>.json`)
or from `bands.json` in its folder or a folder above it (the sample data's layout), so the
recipe's band check has names to compare wherever they are written. Every reader checks the
size a file declares (TIFF series shape, .npy headers) against SatelliteDataset.max_elements
before reading its pixels (modalities/limits.py).
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from modalities.limits import MAX_ELEMENTS, Limit, check_elements, declared_arrays
from unimask.shards import open_sample, packed_metadata, readable

TIFF_EXTS = (".tif", ".tiff")
RASTER_EXTS = TIFF_EXTS + (".npy", ".npz")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
GDAL_METADATA_TAG, GDAL_NODATA_TAG = 42112, 42113
FOLDER_METADATA = "bands.json"
CUBE_KEYS = ("image", "cube", "data")  # the array of a one-sample .npz
DEFAULT_LIMIT = Limit(MAX_ELEMENTS, "SatelliteDataset.max_elements")


@dataclass
class Raster:
    """One file's pixels and self-description.

    data    [C, H, W] or [T, C, H, W] numeric array, bands first
    bands   band names in the file's order, or None when the file does not name them
    nodata  the value that marks missing pixels (NaN is always missing), or None
    dates   one date per frame (ISO strings, or [year, month, hour] triples), or None
    label   the sample's class when the file carries one, else None
    """

    data: np.ndarray
    bands: Optional[list] = None
    nodata: Optional[float] = None
    dates: Optional[list] = None
    label: Optional[int] = None


def check_tiff(path: str):
    """A clear error for a file with a TIFF name that is no TIFF (an HTML error page, a PNG...)."""
    with open_sample(path) as f:
        head = f.read(4)
    if head not in TIFF_MAGIC:
        raise ValueError(f"{path}: not a TIFF file (it starts with {head!r}, a TIFF with II*\\0 or MM\\0*)")


def gdal_band_names(xml: str, count: int) -> Optional[list]:
    """Band names from GDAL's metadata tag (<Item name="DESCRIPTION" sample="i" role="description">),
    as GDAL and rasterio write them; None unless every band has one."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    names = {}
    for item in root.iter("Item"):
        if item.get("role") == "description" and item.get("sample") is not None and item.text:
            names[int(item.get("sample"))] = item.text.strip()
    return [names[i] for i in range(count)] if len(names) == count and set(names) == set(range(count)) else None


def bands_first(array: np.ndarray, axes: str, path: str) -> np.ndarray:
    """tifffile's series -> [C, H, W] or [T, C, H, W]: samples (S) moved in front of Y, X;
    a single band gets C = 1; a leading page axis (I, Q, C, Z, T) is the band or time axis."""
    axes = axes.upper()
    if axes.endswith("S") and array.ndim >= 3:  # pixel-interleaved: [.., H, W, C]
        array = np.moveaxis(array, -1, -3)
    if array.ndim == 2:
        array = array[None]
    if array.ndim not in (3, 4):
        raise ValueError(f"{path}: TIFF series has axes {axes!r} (shape {array.shape}); expected bands x rows x "
                         "columns, optionally with a time axis first")
    return array


def read_tiff(path: str, max_elements: Limit = DEFAULT_LIMIT) -> Raster:
    """GeoTIFF / TIFF -> Raster (first series: full resolution, overviews ignored); the series'
    declared shape is checked against max_elements before its pages are decoded."""
    import tifffile

    check_tiff(path)
    try:
        with tifffile.TiffFile(readable(path)) as tif:
            series = tif.series[0]
            count = int(np.prod(series.shape, dtype=np.float64))
            max_elements.check(path, f"the TIFF series (shape {tuple(series.shape)}, {series.dtype})", count, "values",
                               count * np.dtype(series.dtype).itemsize)
            data = bands_first(series.asarray(), series.axes, path)
            tags = tif.pages[0].tags
            nodata_tag = tags.get(GDAL_NODATA_TAG)
            meta_tag = tags.get(GDAL_METADATA_TAG)
    except tifffile.TiffFileError as err:
        raise ValueError(f"{path}: unreadable TIFF ({err})") from err
    nodata = None
    if nodata_tag is not None:
        text = str(nodata_tag.value).strip().strip("\x00")
        nodata = float(text) if text.lower() not in ("", "none") else None
    bands = gdal_band_names(str(meta_tag.value), data.shape[-3]) if meta_tag is not None else None
    return Raster(data, bands=bands, nodata=nodata)


def read_npy(path: str, max_elements: Limit = DEFAULT_LIMIT) -> Raster:
    check_elements(path, declared_arrays(path), max_elements)
    return Raster(np.load(readable(path), allow_pickle=False))


def read_npz_cube(path: str, max_elements: Limit = DEFAULT_LIMIT) -> Raster:
    """A one-sample .npz: `image` (or `cube`, `data`) [C, H, W] / [T, C, H, W], optional `bands`,
    `dates`, `nodata`, `label`; every member's declared size within max_elements."""
    check_elements(path, declared_arrays(path), max_elements)
    with np.load(readable(path), allow_pickle=False) as npz:
        key = next((k for k in CUBE_KEYS if k in npz), None)
        if key is None:
            raise KeyError(f"{path}: no cube array (looked for {'/'.join(CUBE_KEYS)}; keys: {list(npz.keys())}); "
                           "a collection of samples uses x_train / x_test")
        extra = {k: npz[k] for k in ("bands", "dates", "nodata", "label") if k in npz}
        data = npz[key]
    return Raster(data, bands=list(map(str, extra["bands"])) if "bands" in extra else None,
                  nodata=float(extra["nodata"]) if "nodata" in extra else None,
                  dates=extra["dates"].tolist() if "dates" in extra else None,
                  label=int(extra["label"]) if "label" in extra else None)


def is_collection(path: str) -> bool:
    """An .npz holding many samples (x_train / x_test / x arrays, N first) rather than one cube."""
    if not path.lower().endswith(".npz") or not os.path.isfile(path):
        return False
    with np.load(path, allow_pickle=False) as npz:
        return any(k == "x" or k.startswith("x_") for k in npz.keys())


def sidecar_metadata(path: str, stop: Optional[str] = None) -> dict:
    """What JSON files beside a raster say about it: `<stem>.json` first, then `bands.json` in its
    folder or any folder above it up to `stop` (keys: bands, nodata, dates)."""
    found = {}
    own = os.path.splitext(path)[0] + ".json"
    if os.path.isfile(own):
        found.update(read_json(own))
    folder = os.path.dirname(os.path.abspath(path))
    stop = os.path.abspath(stop) if stop else folder
    while True:
        candidate = os.path.join(folder, FOLDER_METADATA)
        if os.path.isfile(candidate):
            for key, value in read_json(candidate).items():
                found.setdefault(key, value)
            break
        if folder == stop or os.path.dirname(folder) == folder:
            break
        folder = os.path.dirname(folder)
    return found


def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable JSON metadata ({err})") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path}: metadata must be a JSON object with keys such as 'bands', 'nodata', 'dates'")
    return value


def read_raster(path: str, stop: Optional[str] = None, max_elements: Limit = DEFAULT_LIMIT) -> Raster:
    """Any supported file -> Raster, completed from the JSON metadata beside it."""
    lower = path.lower()
    if lower.endswith(TIFF_EXTS):
        raster = read_tiff(path, max_elements)
    elif lower.endswith(".npy"):
        raster = read_npy(path, max_elements)
    elif lower.endswith(".npz"):
        raster = read_npz_cube(path, max_elements)
    else:
        raise ValueError(f"{path}: unsupported raster file (use {', '.join(RASTER_EXTS)})")
    if raster.data.ndim not in (3, 4):
        raise ValueError(f"{path}: array has shape {raster.data.shape}; expected [C, H, W] or [T, C, H, W]")
    meta = packed_metadata(path)  # a shard member: its sidecars were packed beside it
    meta = sidecar_metadata(path, stop) if meta is None else meta
    return replace(raster, bands=raster.bands or meta.get("bands"),
                   nodata=raster.nodata if raster.nodata is not None else meta.get("nodata"),
                   dates=raster.dates if raster.dates is not None else meta.get("dates"))
