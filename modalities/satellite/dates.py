"""Acquisition dates -> SatMAE's timestamp fields [year - min_year, month - 1, hour].

Temporal SatMAE encodes each field with its own 1-D sin-cos code (util/datasets.py: the
year counted from 2002, the month from 0, the hour of day), so frames of one place differ
by when they were taken, and two places taken the same day share a time code.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Sequence

import numpy as np

SATMAE_MIN_YEAR = 2002
ISO = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})(?:[T ](\d{2})(?::?(\d{2}))?(?::?(\d{2}))?)?")


def date_fields(value, where: str = "date") -> tuple:
    """One date -> (year, month 1-12, hour 0-23). Accepts ISO strings ('2019-06-15',
    '2019-06-15T10:30', '20190615'), datetime / date / numpy datetime64, or a
    (year, month, hour) triple."""
    if isinstance(value, np.datetime64):
        value = value.astype("datetime64[s]").astype(dt.datetime)
    if isinstance(value, dt.datetime):
        return value.year, value.month, value.hour
    if isinstance(value, dt.date):
        return value.year, value.month, 0
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode()
    if isinstance(value, str):
        match = ISO.match(value.strip())
        if not match:
            raise ValueError(f"{where}: {value!r} is not a date (use ISO 8601, e.g. '2019-06-15T10:30')")
        year, month, day, hour = (int(match.group(i) or 0) for i in range(1, 5))
        dt.date(year, month, day)  # a real calendar date, or ValueError
        return check_fields(year, month, hour, where)
    values = list(np.asarray(value).reshape(-1))
    if len(values) == 3:
        return check_fields(int(values[0]), int(values[1]), int(values[2]), where)
    raise ValueError(f"{where}: {value!r} is neither an ISO date string nor a (year, month, hour) triple")


def check_fields(year: int, month: int, hour: int, where: str) -> tuple:
    if not (1 <= month <= 12 and 0 <= hour <= 23):
        raise ValueError(f"{where}: month {month} / hour {hour} out of range (1-12, 0-23)")
    return year, month, hour


def timestamps(dates: Sequence, min_year: int = SATMAE_MIN_YEAR, where: str = "dates") -> np.ndarray:
    """[T] dates -> [T, 3] float32 SatMAE fields: [year - min_year, month - 1, hour]."""
    rows = [date_fields(d, f"{where}[{i}]") for i, d in enumerate(dates)]
    return np.array([[y - min_year, m - 1, h] for y, m, h in rows], dtype=np.float32)
