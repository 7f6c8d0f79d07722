#!/usr/bin/env python
"""Pack a recipe's dataset into WebDataset tar shards plus a wids index, for cluster file systems.

    python tools/make_shards.py --gin gin/video_mae_cpu.gin [--gin_param ...] [--split train]
        --out /data/k400_shards/train [--shard-size 256MB]

The dataset is the one the recipe trains on (train.dataset, with its root, list file or test_root
as bound), listed exactly as training lists it: sample k of the listing is sample k of the shards,
so a run that points <Dataset>.root at OUT/index.json sees the same batches, masks and resume
positions as the run on the folder. Each sample's file is stored byte for byte (no decoding, no
re-encoding) with a json of its label and name; see unimask/shards.py for the layout. Then:

    --gin_param "VideoDataset.root='/data/k400_shards/train/index.json'"

Only file-backed samples can be packed: a dataset read from an .npz of arrays (one file, many
samples) is already one large read, and is refused.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys

UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'256MB', '1.5GB', '64MiB', '1000000' -> bytes; anything else is a ValueError naming --shard-size."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in UNITS or float(match.group(1)) <= 0:
        raise ValueError(f"--shard-size {text!r}: give a size such as 256MB, 1GB or 64MiB")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def recipe_dataset(gin_files, params, split: str):
    """The dataset train.dataset binds, built for `split` (its own split binding replaced)."""
    import gin

    from unimask.cli import parse_gin

    parse_gin(gin_files, params)
    try:
        reference = gin.query_parameter("train.dataset")
    except ValueError:
        raise ValueError(f"{', '.join(gin_files)}: no train.dataset binding to pack") from None
    try:
        return reference.scoped_configurable_fn(split=split)
    except TypeError as err:
        if "'split'" not in str(err):
            raise
        raise ValueError(f"train.dataset ({reference.configurable.name}) takes no split: a dataset of datasets? pack "
                         "each one, e.g. --gin_param 'train.dataset=@AudioDataset()'") from None


def run(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gin", action="append", required=True, help="recipe gin file(s)")
    parser.add_argument("--gin_param", action="append", default=[], help="extra gin bindings")
    parser.add_argument("--split", default="train", choices=["train", "val", "test"])
    parser.add_argument("--out", required=True, help="folder for shard-NNNNNN.tar and index.json")
    parser.add_argument("--shard-size", default="256MB", help="close a shard once it holds this much (256MB)")
    args = parser.parse_args(argv)
    shard_bytes = parse_size(args.shard_size)
    from unimask.data import SampleDataset
    from unimask.shards import write_shards

    dataset = recipe_dataset(args.gin, args.gin_param, args.split)
    if not isinstance(dataset, SampleDataset):
        raise ValueError(f"train.dataset is a {type(dataset).__name__}, not one of unimask's datasets, which list "
                         "their files")
    items = dataset.files()
    if not items:
        raise ValueError("the recipe's dataset holds no samples")
    for path, *_ in items:
        if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(str(path)):
            raise ValueError(f"{type(dataset).__name__}: sample {str(path)[:120]!r} is not a file of its own (arrays in "
                             "an .npz, already shards, or a dataset of datasets: pack each of those with "
                             "--gin_param 'train.dataset=@AudioDataset()' and the like): only folders, list files "
                             "and single files are packed")
    index = write_shards(items, args.out, shard_bytes, args.split, dataset.source, dataset.file_metadata)
    for path in dataset.root_files():  # e.g. the data's statistics, found beside the index
        shutil.copyfile(path, os.path.join(args.out, os.path.basename(path)))
    sizes = [shard["filesize"] for shard in index["shardlist"]]
    print(f"{len(items)} samples ({dataset.source}) -> {len(sizes)} shards in {args.out}, "
          f"{sum(sizes) / 1e6:.1f} MB (largest {max(sizes) / 1e6:.1f} MB); "
          f"root: {os.path.join(args.out, 'index.json')}")


if __name__ == "__main__":
    from unimask.cli import tool_main

    sys.exit(tool_main(run)(sys.argv[1:]))
