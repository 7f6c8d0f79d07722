"""Small multispectral satellite sample data (Landsat-7 tiles) and a labeled probe set.

Usage (from the repository root)::

    python tools/make_sample_data.py satellite   # tiles -> data/sample/satellite (committed)
    python tools/make_sample_data.py statlog     # probe -> data/satellite_statlog (NOT committed)
    python -m tools.sample_data.satellite data/sample/satellite            # the same, directly
    python -m tools.sample_data.satellite statlog data/satellite_statlog

Sources and licenses, and why each was chosen:

* ``L7_ETMs.tif`` from Debian's ``r-cran-stars`` (the R package's example scene, Apache-2.0
  per the package's ``copyright`` file): a real 6-band Landsat-7 ETM+ scene around
  Olinda, Brazil, 352 x 349 pixels, uint8, 28.5 m pixels, a GeoTIFF in SIRGAS 2000 / UTM
  zone 25S (EPSG:31985). Per the package's help page (``?L7_ETMs``) the bands are
  "probably" ETM+ bands 1, 2, 3, 4, 5 and 7 (blue, green, red, near-infrared,
  short-wave infrared 1, short-wave infrared 2). It is cut into 64 x 64 tiles stored
  band-first ([C, H, W], planar TIFF) for masked-modeling of multispectral images. The
  .deb is only unpacked (``sources.deb_tree``: ``apt-get download`` + ``dpkg-deb -x``);
  R is not needed.
* ``Satellite.rda`` from Debian's ``r-cran-mlbench``: the UCI Statlog (Landsat
  Satellite) set, 6435 labeled 3 x 3 neighbourhoods x 4 Landsat MSS bands, 6 land-cover
  classes - a small real labeled probe. mlbench is GPL-2, so this set is written to a
  separate, git-ignored folder and never committed. Read with the pure-Python ``rdata``
  package (no R).

Build needs: apt ``r-cran-stars`` / ``r-cran-mlbench`` are only *downloaded*; Python
``numpy``, ``tifffile`` (tiles) and ``rdata`` (+ its ``pandas`` dependency; statlog).
Reading the tiles needs ``tifffile`` (6-band TIFFs are beyond Pillow); reading the
probe needs ``numpy``. Deterministic: fixed tiling, no random numbers, the original order.
"""
from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

from .sources import DEFAULT_SRC, deb_file_name, deb_tree, fresh_dir

STARS_DEB, MLBENCH_DEB = "r-cran-stars", "r-cran-mlbench"
SCENE_IN_DEB = "usr/lib/R/site-library/stars/tif/L7_ETMs.tif"
STATLOG_IN_DEB = "usr/lib/R/site-library/mlbench/data/Satellite.rda"

TILE = 64  # pixels per tile side; partial tiles at the right/bottom edges are dropped
COPY_SCENE_MAX_BYTES = 1_000_000  # the whole scene is shipped too when below this size
BANDS = ["B1", "B2", "B3", "B4", "B5", "B7"]
BAND_NAMES = ["blue", "green", "red", "nir", "swir1", "swir2"]
BAND_WAVELENGTHS_UM = [[0.45, 0.52], [0.52, 0.60], [0.63, 0.69], [0.77, 0.90], [1.55, 1.75], [2.08, 2.35]]
# GeoTIFF tags carried over to every tile (the tie point is moved to the tile's corner).
PIXEL_SCALE_TAG, TIEPOINT_TAG, GEOKEYS_TAG, GEOASCII_TAG = 33550, 33922, 34735, 34737

STATLOG_TRAIN_ROWS = 4435  # sat.trn; the last 2000 rows are sat.tst
STATLOG_UCI_CODES = [1, 2, 3, 4, 5, 7]  # UCI class numbers (6 "mixture" has no examples)
# Landsat MSS: two visible (about green, red) and two near-infrared bands; the
# documentation gives no order within a pixel's 4 values, MSS band order is presumed.
STATLOG_BANDS = ["mss_green", "mss_red", "mss_nir1", "mss_nir2"]


# --------------------------------------------------------------------------
# Landsat-7 tiles
# --------------------------------------------------------------------------
def read_scene(path: Path) -> tuple[np.ndarray, dict]:
    """The scene as uint8 [C=6, H=352, W=349] plus the GeoTIFF tags to copy.

    The file is pixel-interleaved (tifffile axes 'YXS'); the extra pages are
    reduced-resolution overviews and are not read.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        if series.axes != "YXS":
            raise ValueError(f"{path}: expected YXS axes, got {series.axes}")
        scene = np.moveaxis(series.asarray(), -1, 0)  # [H, W, C] -> [C, H, W]
        tags = {code: tif.pages[0].tags[code].value
                for code in (PIXEL_SCALE_TAG, TIEPOINT_TAG, GEOKEYS_TAG, GEOASCII_TAG)}
    return np.ascontiguousarray(scene), tags


def tile_origins(height: int, width: int) -> list[tuple[int, int]]:
    """(row, col) tile indices of the full TILE x TILE tiles, row-major from the top left."""
    return [(r, c) for r in range(height // TILE) for c in range(width // TILE)]


def tile_geotags(tags: dict, row: int, col: int) -> list[tuple]:
    """tifffile extratags for one tile: the scene's CRS keys, tie point moved to its corner.

    Tie point = (i, j, k, x, y, z): raster (0, 0) maps to easting x, northing y (metres);
    northing decreases downwards.
    """
    scale_x, scale_y, _ = tags[PIXEL_SCALE_TAG]
    i, j, k, x, y, z = tags[TIEPOINT_TAG]
    tiepoint = (i, j, k, x + col * TILE * scale_x, y - row * TILE * scale_y, z)
    geoascii = tags[GEOASCII_TAG]
    return [
        (PIXEL_SCALE_TAG, 12, 3, tuple(tags[PIXEL_SCALE_TAG]), True),  # 12 = DOUBLE
        (TIEPOINT_TAG, 12, 6, tiepoint, True),
        (GEOKEYS_TAG, 3, len(tags[GEOKEYS_TAG]), tuple(tags[GEOKEYS_TAG]), True),  # 3 = SHORT
        (GEOASCII_TAG, 2, len(geoascii) + 1, geoascii, True),  # 2 = ASCII
    ]


def write_tile(path: Path, tile: np.ndarray, extratags: list[tuple]) -> None:
    """One uint8 [C, H, W] tile as a planar (band-sequential), deflate-compressed TIFF."""
    import tifffile

    tifffile.imwrite(path, tile, photometric="minisblack", planarconfig="separate",
                     compression="zlib", extratags=extratags, metadata=None)


def write_tiles(out: Path, scene: np.ndarray, tags: dict) -> list[str]:
    """Cut the scene into tiles/tile_<row>_<col>.tif (emptied first: no stale tiles); return the names."""
    fresh_dir(out / "tiles")
    names = []
    for row, col in tile_origins(*scene.shape[1:]):
        tile = scene[:, row * TILE:(row + 1) * TILE, col * TILE:(col + 1) * TILE]  # [6, 64, 64]
        name = f"tile_{row}_{col}.tif"
        write_tile(out / "tiles" / name, tile, tile_geotags(tags, row, col))
        names.append(name)
    return names


def verify_tiles(out: Path, scene: np.ndarray, names: list[str]) -> None:
    """Read every tile back and compare it with the scene, so a bad write fails the build."""
    import tifffile

    for name in names:
        row, col = (int(v) for v in Path(name).stem.split("_")[1:])
        expected = scene[:, row * TILE:(row + 1) * TILE, col * TILE:(col + 1) * TILE]
        if not np.array_equal(tifffile.imread(out / "tiles" / name), expected):
            raise RuntimeError(f"{name} does not read back as written")


def bands_json(scene: np.ndarray, tags: dict) -> dict:
    """bands.json contents: band ids and names plus what a loader needs to interpret them."""
    return {
        "bands": BANDS,
        "names": BAND_NAMES,
        "wavelength_um": BAND_WAVELENGTHS_UM,
        "sensor": "Landsat-7 ETM+",
        "dtype": str(scene.dtype),
        "layout": "CHW",
        "tile_size": TILE,
        "scene_shape_chw": list(scene.shape),
        "pixel_size_m": float(tags[PIXEL_SCALE_TAG][0]),
        "crs": f"EPSG:31985 ({tags[GEOASCII_TAG].split('|')[0]})",
        "nodata": None,
        "band_note": "bands per the stars help page ?L7_ETMs, which says 'probably' ETM+ bands 1-5 and 7",
    }


def satellite_readme(summary: dict) -> str:
    """data/sample/satellite/README.md, generated so counts and versions never go stale."""
    return f"""# Satellite sample data - Landsat-7 ETM+ tiles

Built by `python -m tools.sample_data.satellite data/sample/satellite` (see that module's
docstring). Deterministic: a rebuild from the same package gives identical files.

* **Source:** `L7_ETMs.tif` from Debian's `{summary['stars_deb']}` (R package `stars`'s
  example scene; `apt-get download r-cran-stars && dpkg-deb -x <deb> <dir>`, R not needed),
  `{SCENE_IN_DEB}`. A Landsat-7 ETM+ scene around Olinda, Brazil.
* **License:** Apache-2.0 (`Files: *`, Copyright 2016-2018 Edzer Pebesma, Michael Sumner,
  Etienne Racine, Adriano Fantini, per the package's `copyright` file). Landsat imagery
  itself is public domain (USGS).
* **Scene:** uint8, {summary['scene_shape_chw'][1]} rows x {summary['scene_shape_chw'][2]} columns x 6 bands, stored
  pixel-interleaved (tifffile axes `YXS`), deflate-compressed, with 4 overview pages;
  GeoTIFF: SIRGAS 2000 / UTM zone 25S (EPSG:31985), {summary['pixel_size_m']:.1f} m pixels, no nodata tag.
  {'Copied unchanged as `L7_ETMs.tif`.' if summary['scene_copied'] else 'Not copied (over 1 MB).'}
* **Bands** (`bands.json`): B1 blue 0.45-0.52 um, B2 green 0.52-0.60, B3 red 0.63-0.69,
  B4 near-infrared 0.77-0.90, B5 short-wave infrared 1.55-1.75, B7 short-wave infrared
  2.08-2.35, all 30 m ETM+ bands; the stars help page (`?L7_ETMs`) says the file
  "probably" holds these six.
* **Tiles:** `tiles/tile_<row>_<col>.tif`, {summary['tiles']} tiles of {TILE} x {TILE} cut row-major from the top
  left (partial edge tiles dropped: rows/columns beyond {summary['tiles_rows'] * TILE} x {summary['tiles_cols'] * TILE} are not used),
  uint8 [C=6, H, W] planar TIFF (deflate), written by `tifffile`, with the scene's GeoTIFF
  keys and the tie point moved to each tile's corner. Read with `tifffile.imread` -> [6, 64, 64].

## Labeled probe (not in this folder): Statlog Landsat

`python -m tools.sample_data.satellite statlog data/satellite_statlog` writes
`data/satellite_statlog/statlog.npz` from `Satellite.rda` in Debian's `r-cran-mlbench`
(GPL-2, so it is **not committed**; `data/satellite_statlog/` is meant to be git-ignored).
See that folder's README.md, written by the same command.
"""


def write_band_stats(folder: Path) -> None:
    """tiles/band_stats.json, as tools/band_stats.py writes it: the recipes' normalization."""
    from modalities.satellite.stats import band_stats, stats_path, write_stats

    write_stats(band_stats(str(folder)), stats_path(str(folder)))


def build(out_dir: str | Path, src: str | Path = DEFAULT_SRC) -> dict:
    """Write tiles/, bands.json, the scene copy and README.md under out_dir; return a summary."""
    out = Path(out_dir)
    scene_path = deb_tree(STARS_DEB, Path(src)) / SCENE_IN_DEB
    scene, tags = read_scene(scene_path)
    names = write_tiles(out, scene, tags)
    verify_tiles(out, scene, names)
    scene_copied = scene_path.stat().st_size < COPY_SCENE_MAX_BYTES
    if scene_copied:
        shutil.copyfile(scene_path, out / "L7_ETMs.tif")
    (out / "bands.json").write_text(json.dumps(bands_json(scene, tags), indent=2) + "\n")
    write_band_stats(out / "tiles")
    summary = {
        "tiles": len(names),
        "tiles_rows": scene.shape[1] // TILE,
        "tiles_cols": scene.shape[2] // TILE,
        "scene_shape_chw": list(scene.shape),
        "pixel_size_m": float(tags[PIXEL_SCALE_TAG][0]),
        "scene_copied": scene_copied,
        "stars_deb": deb_file_name(STARS_DEB, Path(src)),
        "license": "Apache-2.0 (r-cran-stars)",
    }
    (out / "README.md").write_text(satellite_readme(summary))
    summary["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return summary


# --------------------------------------------------------------------------
# Statlog Landsat probe (GPL-2: never committed)
# --------------------------------------------------------------------------
def read_statlog(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Satellite.rda -> (x uint8 [N=6435, 36], y int64 [N], class names).

    Columns x.1..x.36 hold the 9 pixels of the 3 x 3 neighbourhood, left to right and
    top to bottom, 4 spectral values each (mlbench ?Satellite); y indexes the factor
    levels in mlbench's order.
    """
    import rdata

    with warnings.catch_warnings():  # rdata warns that the .rda has no declared encoding
        warnings.simplefilter("ignore", UserWarning)
        frame = rdata.conversion.convert(rdata.parser.parse_file(path))["Satellite"]
    columns = [f"x.{i}" for i in range(1, 37)]
    values = frame[columns].to_numpy()
    if values.min() < 0 or values.max() > 255 or not np.all(values == np.round(values)):
        raise ValueError("Satellite.rda: expected 8-bit integer pixel values")
    classes = [str(c) for c in frame["classes"].cat.categories]
    y = frame["classes"].cat.codes.to_numpy().astype(np.int64)
    return values.astype(np.uint8), y, classes


def neighbourhoods(x: np.ndarray) -> np.ndarray:
    """[N, 36] -> [N, band=4, row=3, col=3]; column 4*(3*row + col) + band (0-based).

    Check: the centre pixel (row 1, col 1) is columns x.17..x.20, as the docs say.
    """
    cube = x.reshape(len(x), 3, 3, 4).transpose(0, 3, 1, 2)  # [N, row, col, band] -> [N, band, row, col]
    assert np.array_equal(cube[:, :, 1, 1], x[:, 16:20])
    return np.ascontiguousarray(cube)


def statlog_readme(summary: dict) -> str:
    """README.md for the (git-ignored) probe folder."""
    counts = "\n".join(f"| {i} | {name} | {code} | {tr} | {te} |" for i, (name, code, tr, te)
                       in enumerate(zip(summary["classes"], STATLOG_UCI_CODES,
                                        summary["train_per_class"], summary["test_per_class"])))
    return f"""# Statlog (Landsat Satellite) probe - do not commit (GPL-2)

Written by `python -m tools.sample_data.satellite statlog data/satellite_statlog` from
`{STATLOG_IN_DEB}` in Debian's `{summary['mlbench_deb']}` (GPL-2 per its
`copyright` file; data originally from the UCI repository, Statlog project). This folder
must stay out of git (its own `.gitignore` ignores everything in it).

`statlog.npz`: `x_train` uint8 [{summary['train']}, 4, 3, 3], `y_train` int64, `x_test` uint8
[{summary['test']}, 4, 3, 3], `y_test` int64, `classes` str [6], `uci_codes` int [6], `bands` str [4].
x is [N, band, row, col] of a 3 x 3 Landsat MSS neighbourhood (80 m pixels, 8-bit); the
label is the centre pixel's land cover. mlbench column x.k (k = 1..36) is band
(k-1) % 4, pixel (k-1) // 4 counted left to right, top to bottom; the centre pixel is
x.17..x.20 = x[:, :, 1, 1]. The band order within a pixel is not documented; MSS order
(green, red, NIR, NIR) is presumed.

Split: rows 1-4435 train, 4436-6435 test, in the .rda's order. mlbench's help page does
not say that the rows keep the order of the original `sat.trn` (4435 rows) + `sat.tst`
(2000 rows). The class counts of the two blocks (below) match the class distribution of
`sat.trn` / `sat.tst` in the UCI `sat.doc`, and 1-nearest-neighbour on all 36 values scores
about 89.5% on the test block (Statlog's published k-NN result: 90.6%), which supports it.

| index | class | UCI code | train | test |
|---:|---|---:|---:|---:|
{counts}
"""


def build_statlog(out_dir: str | Path, src: str | Path = DEFAULT_SRC) -> dict:
    """Write out_dir/statlog.npz (+ README.md) from mlbench's Satellite.rda; return a summary."""
    out = Path(out_dir)
    x, y, classes = read_statlog(deb_tree(MLBENCH_DEB, Path(src)) / STATLOG_IN_DEB)
    cubes = neighbourhoods(x)
    n_classes = len(classes)
    summary = {
        "train": STATLOG_TRAIN_ROWS,
        "test": len(x) - STATLOG_TRAIN_ROWS,
        "classes": classes,
        "train_per_class": np.bincount(y[:STATLOG_TRAIN_ROWS], minlength=n_classes).tolist(),
        "test_per_class": np.bincount(y[STATLOG_TRAIN_ROWS:], minlength=n_classes).tolist(),
        "mlbench_deb": deb_file_name(MLBENCH_DEB, Path(src)),
        "license": "GPL-2 (r-cran-mlbench): do not commit",
    }
    out.mkdir(parents=True, exist_ok=True)
    # GPL-2 data: the folder ignores itself, so it stays out of git wherever it is written.
    (out / ".gitignore").write_text("# GPL-2 data from r-cran-mlbench: never commit\n*\n")
    np.savez_compressed(
        out / "statlog.npz",
        x_train=cubes[:STATLOG_TRAIN_ROWS], y_train=y[:STATLOG_TRAIN_ROWS],
        x_test=cubes[STATLOG_TRAIN_ROWS:], y_test=y[STATLOG_TRAIN_ROWS:],
        classes=np.array(classes), uci_codes=np.array(STATLOG_UCI_CODES), bands=np.array(STATLOG_BANDS),
    )
    (out / "README.md").write_text(statlog_readme(summary))
    return summary


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "statlog":
        print(build_statlog(sys.argv[2] if len(sys.argv) > 2 else "data/satellite_statlog"))
    else:
        print(build(sys.argv[1] if len(sys.argv) > 1 else "data/sample/satellite"))
