"""Size guards: a file from outside is checked against what it DECLARES before anything is allocated.

A small file can declare gigabytes: a 2.3 MB deflated .npz of zeros expands to 6.9 GB, a PNG of
one colour declares 60k x 60k pixels, a FLAC of silence hours of samples, a PLY header a billion
vertices. Every reader of such a file reads the declaration first (an array's .npy header, an
image's dimensions, a clip's frame count) and compares it with a `Limit`: a gin binding of the
dataset that reads the file. Going over is a SizeLimitError naming the file and the binding, so a
crafted file costs a header read (seconds at most) and a genuine big one is one setting away.

    Limit                  (value, binding): the maximum and the gin binding that raises it
    Limit.check            refuse a declared count over the limit, naming file and binding
    declared_arrays        {key: Declared(shape, dtype, nbytes)} of an .npy / .npz, from headers only
    check_arrays           every declared array of a file against a byte limit (and rows, optionally)
    check_dtypes           refuse what an element count cannot bound: non-numeric arrays (|S4000000,
                           structured, object) beyond a small metadata member
    check_elements         element counts AND declared bytes (VALUE_BYTES a value) against a limit

Defaults are generous for real data (a 8k x 8k image, an hour of 8K video, a 10M-point cloud).
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from unimask.shards import open_sample, readable

# defaults of the dataset bindings (each dataset exposes them as gin parameters)
MAX_PIXELS = 8192 * 8192  # an image: 67M pixels (a 4k frame has 8.3M; Pillow warns at 89M)
MAX_POINTS = 10_000_000  # a point cloud or mesh (ShapeNet: 8k-100k, a LiDAR tile: a few M)
POINT_VALUES = 16  # values per point an array may carry (x y z, normals, colours, labels...)
MAX_ELEMENTS = 500_000_000  # a raster's values: a 13-band 6k x 6k scene; a Landsat scene has ~400M
MAX_ARRAY_BYTES = 4 * 2**30  # an .npz collection loaded whole (ImageNet-32's train split: 3.9 GB)
MAX_FRAMES = 216_000  # a video: an hour at 60 fps
MAX_FRAME_PIXELS = 7680 * 4320  # a video frame: 8K UHD
MAX_SECONDS = 3600.0  # an audio file: an hour
MAX_SAMPLES = 1_000_000_000  # decoded audio values, frames x channels (4 GB as float32)
MAX_NODES = 50_000_000  # a graph (ogbn-products: 2.4M nodes)
MAX_EDGES = 250_000_000  # a graph's edge_index columns (Reddit: 114M)
MAX_TENSOR_BYTES = 4 * 2**30  # the tensors a graph .pt declares
NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex: an item is at most 16 bytes (clongdouble 32)
VALUE_BYTES = 8  # bytes a value may take where a limit counts values (float64, int64)
METADATA_KINDS = "USMm"  # strings and dates: a cube's band names, acquisition dates
MAX_METADATA_BYTES = 2**20  # what such a non-numeric member may declare in all


class SizeLimitError(ValueError):
    """A file declares more than a size limit allows; the message names the file and the binding."""


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as file managers show sizes)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


@dataclass(frozen=True)
class Limit:
    """The most a file may declare of something, and the gin binding that raises it.
    value None: no limit (the binding set to None on purpose). factor: the same setting applied
    to a related count (a mesh's faces: 2 x max_points)."""

    value: Optional[float]
    binding: str
    factor: float = 1

    def check(self, path, what: str, count: float, unit: str, nbytes: Optional[float] = None):
        """Raise SizeLimitError when `count` (declared by `path`'s `what`) is over the limit."""
        if self.value is None or count <= self.value * self.factor:
            return
        size = f" ({human_bytes(nbytes)})" if nbytes is not None else ""
        shown = f"{count:,}" if isinstance(count, int) else f"{count:,.1f}"
        setting = f"{self.binding}={self.value}"
        over = setting if self.factor == 1 else f"{self.factor:g} x {setting}"
        raise SizeLimitError(f"{path}: {what} declares {shown} {unit}{size}, over {over}; "
                             "raise it if the file is genuine")

    def times(self, factor: float) -> "Limit":
        return Limit(self.value, self.binding, self.factor * factor)


@dataclass(frozen=True)
class Declared:
    """What an archive member says it holds: shape and dtype from its .npy header (None for a
    member that is no .npy, which np.load returns as raw bytes), and its size in bytes."""

    shape: Optional[Tuple[int, ...]]
    dtype: Optional[np.dtype]
    nbytes: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape) if self.shape is not None else self.nbytes


def npy_header(f) -> Tuple[tuple, np.dtype]:
    """An open .npy stream positioned at its start -> (shape, dtype); reads the header only."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=100_000)
    else:  # 2.0 and 3.0 share the layout (3.0 allows utf-8 field names)
        shape, _, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=100_000)
    return tuple(int(s) for s in shape), dtype


def declared_arrays(path: str) -> Dict[str, Declared]:
    """{key: Declared} of an .npy (key '') or .npz (np.load's keys), decided by the file's magic
    as np.load decides it. Only headers are read: a member is inflated for its first bytes, never
    whole. Anything else (not numpy at all) -> {} and np.load reports it."""
    with open_sample(path) as f:
        magic = f.read(6)
        if magic == np.lib.format.MAGIC_PREFIX:
            f.seek(0)
            shape, dtype = npy_header(f)
            return {"": Declared(shape, dtype, math.prod(shape) * dtype.itemsize)}
    if not magic.startswith(b"PK"):
        return {}
    found = {}
    try:
        archive = zipfile.ZipFile(readable(path))
    except zipfile.BadZipFile:
        return {}  # np.load names what is wrong with it
    with archive:
        for info in archive.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with archive.open(info) as member:
                if member.read(6) == np.lib.format.MAGIC_PREFIX:
                    with archive.open(info) as again:
                        shape, dtype = npy_header(again)
                    found[key] = Declared(shape, dtype, math.prod(shape) * dtype.itemsize)
                    continue
            found[key] = Declared(None, None, info.file_size)  # np.load gives its raw bytes
    return found


def member_text(key: str, declared: Declared) -> str:
    """"member 'x' (shape (N, 3), float32)": what the error says declared the size."""
    return ("the array" if key == "" else f"member {key!r}") + shape_text(declared)


def check_arrays(path: str, max_bytes: Limit, rows: Optional[Callable[[str, Declared], None]] = None
                 ) -> Dict[str, Declared]:
    """Every array `path` declares must fit `max_bytes`; `rows(key, declared)` adds a per-sample
    check (pixels of one image of a collection...). -> the declarations, for further checks."""
    arrays = declared_arrays(path)
    for key, declared in arrays.items():
        if rows is not None:  # the more specific cause first: one sample too big
            rows(key, declared)
        max_bytes.check(path, member_text(key, declared), declared.nbytes, "bytes")
    return arrays


def shape_text(declared: Declared) -> str:
    return f" (shape {declared.shape}, {declared.dtype})" if declared.shape is not None else " (raw bytes)"


def check_dtypes(path: str, arrays: Dict[str, Declared]):
    """An element count bounds memory only when an element is small: a (100, 3) array of dtype
    |S4000000 is 300 values and 1.2 GB. Numeric arrays pass; strings and dates (band names, dates)
    only up to MAX_METADATA_BYTES; anything else (structured, object, huge strings) is refused
    before np.load, naming the file and the member."""
    for key, declared in arrays.items():
        dtype = declared.dtype
        if dtype is None or dtype.kind in NUMERIC_KINDS:
            continue
        if dtype.kind in METADATA_KINDS and declared.nbytes <= MAX_METADATA_BYTES:
            continue
        raise SizeLimitError(f"{path}: {member_text(key, declared)} declares {human_bytes(declared.nbytes)} of "
                             f"non-numeric dtype {dtype.str!r}; only numeric arrays (bool, int, float, complex) "
                             f"are read, and strings or dates up to {human_bytes(MAX_METADATA_BYTES)}")


def check_elements(path: str, arrays: Dict[str, Declared], limit: Limit, unit: str = "values"):
    """Each declared array's dtype (check_dtypes), element count against `limit` and declared bytes
    against `limit` x VALUE_BYTES (one sample's file: a cube, a cloud)."""
    check_dtypes(path, arrays)
    for key, declared in arrays.items():
        what = member_text(key, declared)
        limit.check(path, what, declared.elements, unit, declared.nbytes)
        limit.times(VALUE_BYTES).check(path, what, declared.nbytes, f"bytes ({VALUE_BYTES} a value)")
