"""Band names and band groups: which bands a recipe reads, and which of them share a token.

SatMAE (Cong et al. 2022) groups Sentinel-2's bands by resolution and wavelength and gives
every group its own patch embedding; ChA-MAEViT / ChannelViT treat every band alone. Both are
a `groups` setting here: a tuple of band-name tuples, or 'per_band'.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

SENTINEL2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
# SatMAE drops B1, B9, B10 (60 m atmospheric bands) and groups the other ten
SATMAE_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
SATMAE_GROUPS = (("B2", "B3", "B4", "B8"),   # 10 m: blue, green, red, NIR
                 ("B5", "B6", "B7", "B8A"),  # 20 m red edge + narrow NIR
                 ("B11", "B12"))             # 20 m SWIR
PER_BAND = "per_band"  # one group per band (ChA-MAEViT / ChannelViT: per-channel tokens and masking)

GroupSpec = Union[None, str, Sequence[Sequence[Union[str, int]]]]


def band_index(bands: Sequence[str], band: Union[str, int], what: str) -> int:
    """Position of one band (a name or an index) in `bands`; an error names the setting."""
    if isinstance(band, int) and not isinstance(band, bool):
        if not 0 <= band < len(bands):
            raise ValueError(f"{what}: band index {band} is out of range for {len(bands)} bands {tuple(bands)}")
        return band
    if band not in bands:
        raise ValueError(f"{what}: band {band!r} is not among the recipe's bands {tuple(bands)}")
    return list(bands).index(band)


def resolve_groups(bands: Sequence[str], groups: GroupSpec) -> list:
    """Group spec -> one list of band indices per group.

    None: all bands in one group (a plain multi-band ViT); 'per_band': one group per band;
    else a tuple of tuples of band names (or indices). Every band must be in exactly one
    group, so no band is silently dropped or counted twice.
    """
    if groups is None:
        return [list(range(len(bands)))]
    if isinstance(groups, str):
        if groups != PER_BAND:
            raise ValueError(f"SatelliteAdapter.groups={groups!r}: use {PER_BAND!r}, None or a tuple of band tuples")
        return [[i] for i in range(len(bands))]
    resolved, owner = [], {}
    for g, members in enumerate(groups):
        if isinstance(members, (str, int)):
            raise ValueError(f"SatelliteAdapter.groups[{g}]={members!r} must be a tuple of bands, e.g. ('B2', 'B3')")
        if not members:
            raise ValueError(f"SatelliteAdapter.groups[{g}] is empty")
        indices = [band_index(bands, b, f"SatelliteAdapter.groups[{g}]") for b in members]
        for i in indices:
            if i in owner:
                raise ValueError(f"band {bands[i]!r} is in groups {owner[i]} and {g}; a band belongs to one group")
            owner[i] = g
        resolved.append(indices)
    missing = [bands[i] for i in range(len(bands)) if i not in owner]
    if missing:
        raise ValueError(f"bands {missing} are in no group of SatelliteAdapter.groups; add them to a group "
                         f"or drop them from the recipe's bands")
    return resolved


def optional_bands(bands: Sequence[str], chosen: Optional[Sequence[str]], what: str) -> Optional[list]:
    """Indices of a composite's three bands, or None when the recipe's bands lack one of them
    (a sensor without blue has no true-colour picture) or none are set."""
    if not chosen:
        return None
    if len(chosen) != 3:
        raise ValueError(f"{what} must name 3 bands (red, green, blue channel of the picture), got {chosen!r}")
    if not all(b in bands for b in chosen):
        return None
    return [list(bands).index(b) for b in chosen]
