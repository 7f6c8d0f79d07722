"""`tools/bench.py data --source shards [--modality image|video]`: decoded + augmented samples/s
of the same dataset read from its folder (or list file) and from tar shards packed from it
(unimask/shards.py), through the same DataLoader with 0, 1 and 2 workers (or --workers).

The files are the other data benchmarks' (ImageNet-like JPEGs, benchmarks/image_data.py;
Kinetics-like H.264 clips, benchmarks/data.py; --sample: the bundled clips; --root: an ImageFolder
tree of yours), packed once into shards beside them. Both sides decode the same bytes with the same
settings, so the difference is the reading alone: an open + read per file against a slice of an
mmapped shard. The files sit in the page cache after the first round, so on local disk this
measures the per-file overhead, not a network file system's latency (where the gap is larger). The
best of --rounds interleaved rounds counts; the last line is ratio_shards_vs_folder (the smallest
over the worker counts). Before it, in this process, the CPU time to get one sample's bytes alone
(no decoding) and to load one sample whole, from the folder and from the shards: CPU time is what
a shared machine's other jobs disturb least.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from unimask.cli import REPO_ROOT as ROOT


def packed(items, out: str) -> str:
    """Shards of [(path, label)] in `out` (written once) -> the index file. The shards are cut to
    ~1/16 of the files' bytes (64 KB at least), so reads in the sampler's shuffled order go from
    shard to shard, as they do in a real data set of hundreds of shards."""
    from unimask.shards import write_shards

    index = os.path.join(out, "index.json")
    if not os.path.exists(index):
        files = list({str(path): label for path, label, *_ in items}.items())
        size = max(sum(os.path.getsize(path) for path, _ in files) // 16, 2**16)
        write_shards(files, out, size, "train", "bench")
    return index


def image_sides(args) -> tuple:
    from benchmarks.image_data import imagenet_like_jpegs
    from modalities.image import ImageDataset

    width, height = (int(v) for v in args.size.split("x"))
    root = args.root or imagenet_like_jpegs(os.path.join(ROOT, "runs", "bench_jpegs"), args.images, (width, height))
    settings = dict(img_size=args.img_size, min_scale=0.2 if args.min_scale is None else args.min_scale,
                    interpolation="bicubic", output=args.output, draft=args.draft)
    folder = ImageDataset(root=root, **settings)
    index = packed(folder.items, os.path.join(os.path.abspath(root) + "_shards"))
    return root, folder, ImageDataset(root=index, **settings), "images", args.batch or 32, args.samples


def video_sides(args) -> tuple:
    from benchmarks.data import kinetics_like_clips
    from modalities.video import VideoDataset

    list_file = os.path.join(ROOT, "data", "sample", "video", "train.csv") if args.sample else \
        kinetics_like_clips(args.clips_dir, gop=args.gop)
    settings = dict(num_frames=args.num_frames, sampling_rate=args.stride, img_size=args.img_size,
                    min_scale=0.25 if args.min_scale is None else args.min_scale, backend=args.backend)
    folder = VideoDataset(root=list_file, **settings)
    out = os.path.join(ROOT, "runs", "bench_shards_sample" if args.sample else
                       f"bench_shards_{os.path.basename(os.path.dirname(list_file))}")
    index = packed(folder.items, out)
    return list_file, folder, VideoDataset(root=index, **settings), "clips", args.batch or 2, args.clips


def read_microseconds(dataset, count: int, rounds: int = 3) -> float:
    """CPU microseconds per sample to get a sample's bytes alone (open + read of a file, or the
    shard member's slice), in this process, the best of `rounds` passes over `count` samples."""
    import time

    from unimask.shards import open_sample

    paths = [dataset.items[i % len(dataset)][0] for i in range(count)]
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for path in paths:
            with open_sample(path) as f:
                f.read()
        best = min(best, (time.process_time() - start) / count * 1e6)
    return best


def decode_milliseconds(dataset, indices, rounds: int = 3) -> float:
    """CPU milliseconds per sample of the whole load (read, decode, augment) in this process,
    the best of `rounds` passes: time.process_time, so other jobs on a shared machine count far
    less than in samples/s."""
    import time

    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for n, i in enumerate(indices):
            dataset[(i, n)]
        best = min(best, (time.process_time() - start) / len(indices) * 1e3)
    return best


def bench_shards(args):
    from benchmarks.image_data import samples_per_second

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # decoding is per-worker work: one thread each, as the other data benchmarks
    root, folder, shards, unit, batch, count = (image_sides if args.modality == "image" else video_sides)(args)
    indices = [i % len(folder) for i in range(count)]
    print(f"{len(folder)} {args.modality} files from {root}, packed into "
          f"{len(shards.items[0][0].reader.urls)} shard(s); {count} {unit} per measurement, batch {batch}, "
          f"best of {args.rounds} interleaved rounds, torch {torch.__version__}")
    print(f"reading alone (CPU, this process): folder {read_microseconds(folder, count):.0f} us/sample, "
          f"shards {read_microseconds(shards, count):.0f} us/sample")
    print(f"whole load (CPU, this process, 0 workers): folder {decode_milliseconds(folder, indices):.2f} ms/sample, "
          f"shards {decode_milliseconds(shards, indices):.2f} ms/sample")
    ratios = []
    for workers in args.workers:
        rates = {}
        for _ in range(args.rounds):
            for name, dataset in (("folder", folder), ("shards", shards)):
                torch.manual_seed(0)
                np.random.seed(0)
                rates.setdefault(name, []).append(samples_per_second(dataset, indices, workers, batch))
        best = {name: max(values) for name, values in rates.items()}
        ratios.append(best["shards"] / best["folder"])
        print(f"{workers} workers: folder {best['folder']:8.2f} {unit}/s, shards {best['shards']:8.2f} {unit}/s "
              f"(rounds {', '.join(f'{v:.1f}' for v in rates['folder'])} / "
              f"{', '.join(f'{v:.1f}' for v in rates['shards'])}): ratio {ratios[-1]:.2f}")
    torch.set_num_threads(threads)
    print(f"ratio_shards_vs_folder={min(ratios):.2f}")
