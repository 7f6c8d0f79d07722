#!/usr/bin/env python
"""Per-band mean and std of a multi-band data set, written beside it for SatelliteDataset.

    python tools/band_stats.py --root data/sample/satellite/tiles [--bands B1 B2 B3 B4 B5 B7]
        [--nodata 0] [--split train] [--limit 1000] [--out PATH] [--print]

Counts the valid pixels of the training split only (no-data values, NaN and inf are left
out; the test split must not leak into normalization), with the same reading and band
selection as SatelliteDataset, and writes band_stats.json beside the data (in a folder root,
or beside a file root such as an .npz collection), where SatelliteDataset finds it. Keys:
bands, mean, std, min, max, valid_pixels, files, source, nodata.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    from modalities.satellite.stats import band_stats, stats_path, write_stats

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, action="append", help="folder, file, list file or .npz (repeatable)")
    parser.add_argument("--bands", nargs="+", default=None, help="band names in the recipe's order (default: as stored)")
    parser.add_argument("--nodata", type=float, default=None, help="no-data value when the files declare none")
    parser.add_argument("--split", default="train", help="the split to count (train: normalization must not see test)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N items")
    parser.add_argument("--out", default=None, help="where to write (default: band_stats.json beside the data)")
    parser.add_argument("--print", action="store_true", help="print the JSON only, write nothing")
    args = parser.parse_args(argv)
    root = args.root[0] if len(args.root) == 1 else args.root
    stats = band_stats(root, args.bands, args.nodata, args.split, args.limit)
    if args.print:
        print(json.dumps(stats, indent=2))
        return 0
    path = write_stats(stats, args.out or stats_path(root))
    for name, mean, std in zip(stats["bands"], stats["mean"], stats["std"]):
        print(f"{name}: mean {mean:.4f}, std {std:.4f}")
    print(f"{stats['files']} items -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
