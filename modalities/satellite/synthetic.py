"""Synthetic acquisitions for a temporal demo on single-date data (the bundled Landsat tiles
have one date): NOT real time series.

Each frame is the same place seen again with a seasonal change of brightness that follows
its month (a per-band gain, sin/cos of the month: vegetation greens up, soils dry out), a
small misregistration (a shift of up to `max_shift` pixels, wrapped) and sensor noise. The
change depends on the date, so a model can learn something from the time code; what it
learns says nothing about real seasons.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from modalities.satellite.dates import date_fields


def seasonal_gain(month: int, bands: int) -> np.ndarray:
    """[C] gain of every band in a month: 1 +- 0.15, a phase per band."""
    angle = 2 * np.pi * (month - 1) / 12
    phase = np.linspace(0, np.pi, bands)
    return (1 + 0.15 * np.sin(angle + phase)).astype(np.float32)


def synthetic_stack(cube: np.ndarray, valid: np.ndarray, dates: Sequence, max_shift: int = 2,
                    noise: float = 0.02) -> tuple:
    """One normalized cube [C, H, W] (+ valid) -> ([T, C, H, W], valid [T, C, H, W]), one frame
    per date; random parts from numpy's global generator (seeded per sample)."""
    frames, masks = [], []
    scale = float(cube.std()) or 1.0
    for i, date in enumerate(dates):
        _, month, _ = date_fields(date, f"SatelliteDataset.synthetic_dates[{i}]")
        dy, dx = (int(v) for v in np.random.randint(-max_shift, max_shift + 1, size=2))
        frame = np.roll(cube, (dy, dx), axis=(-2, -1)) * seasonal_gain(month, cube.shape[0])[:, None, None]
        frames.append(frame + np.random.normal(0, noise * scale, cube.shape).astype(np.float32))
        masks.append(np.roll(valid, (dy, dx), axis=(-2, -1)))
    return np.stack(frames).astype(np.float32), np.stack(masks)
