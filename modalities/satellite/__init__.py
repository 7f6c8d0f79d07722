"""Multi-band satellite imagery (SatMAE, Cong et al., NeurIPS 2022; channel-aware ideas from
ChA-MAEViT / ChannelViT): any number of bands, grouped, one token per group and patch place.

    bands.py      band names, SatMAE's Sentinel-2 groups, group specs ('per_band')
    files.py      GeoTIFF (tifffile), .npy / .npz cubes, metadata beside the files
    pixels.py     band selection by name, no-data, crops, no-data filling
    stats.py      per-band statistics (band_stats.json, tools/band_stats.py), normalization
    dates.py      acquisition dates -> SatMAE's (year, month, hour) fields
    synthetic.py  synthetic acquisitions for a temporal demo on single-date data
    dataset.py    SatelliteDataset
    embed.py      one patch embedding per band group (or a shared one, ChannelViT)
    encoding.py   SatMAE's concatenated spatial | group | time sin-cos code
    adapter.py    SatelliteAdapter: the group-major token layout, target weights
    render.py     true- and false-colour composites of input | masked | reconstruction
"""
from modalities.satellite.adapter import SatelliteAdapter  # noqa: F401
from modalities.satellite.bands import PER_BAND, SATMAE_BANDS, SATMAE_GROUPS, SENTINEL2_BANDS, resolve_groups  # noqa: F401
from modalities.satellite.dataset import SatelliteDataset  # noqa: F401
from modalities.satellite.dates import timestamps  # noqa: F401
from modalities.satellite.encoding import satellite_pos  # noqa: F401
from modalities.satellite.files import RASTER_EXTS, read_raster  # noqa: F401
