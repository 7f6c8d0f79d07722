"""`tools/bench.py data --vs reference`: decoded + augmented clips/s of unimask's VideoDataset
against a plain decord loop in the style of the official VideoMAE loader, with the same
sampling and the same crop / flip / normalize, through the same DataLoader. (`--modality image
--vs torchvision`: images against torchvision's MAE pipeline, benchmarks/image_data.py.)

The bundled sample clips are 64 frames of 128 px: decoding them is nearly free, so by default
the benchmark writes Kinetics-like clips first (10 s at 30 fps, short side 320, H.264 with
x264's default GOP of 250 frames, panning over scikit-image's photos), as VideoMAE reads
Kinetics-400 after resizing it to a 320 px short side.
"""
from __future__ import annotations

import os
import time
from typing import List

import numpy as np
import torch

from unimask.cli import REPO_ROOT as ROOT

CLIP_SECONDS, CLIP_FPS, CLIP_SIZE = 10, 30, (320, 426)  # (height, width)


def kinetics_like_clips(folder: str, count: int = 4, gop: int = 250) -> str:
    """Write `count` H.264 clips (once; kept in `folder`, or `folder`_gop<N> for another key
    frame interval) and a list file naming them -> its path."""
    import av
    from skimage import data, transform

    folder = folder if gop == 250 else f"{folder}_gop{gop}"
    os.makedirs(folder, exist_ok=True)
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    height, width = CLIP_SIZE
    lines = []
    for i in range(count):
        path = os.path.join(folder, f"clip{i}.mp4")
        lines.append(f"clip{i}.mp4 {i}")
        if os.path.exists(path):
            continue
        photo = photos[i % len(photos)]
        big = (transform.resize(photo, (2 * height, 2 * width), anti_aliasing=True) * 255).astype(np.uint8)
        with av.open(path + ".part", "w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=CLIP_FPS)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": "23", "preset": "veryfast", "g": str(gop)}
            frames = CLIP_SECONDS * CLIP_FPS
            for t in range(frames):  # a slow pan and drift: every frame differs, as in real footage
                phase = 2 * np.pi * t / frames
                top = int((height // 2) * (1 + np.sin(phase + i)) / 2)
                left = int((width // 2) * (1 + np.cos(phase)) / 2) + t * width // (2 * frames)
                left = min(left, width)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(big[top:top + height, left:left + width]),
                                                   format="rgb24")
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
        os.replace(path + ".part", path)
    list_file = os.path.join(folder, "train.csv")
    with open(list_file, "w") as f:
        f.write("\n".join(lines) + "\n")
    return list_file


class ReferenceClips(torch.utils.data.Dataset):
    """The official VideoMAE loader's steps, plainly: decord VideoReader(num_threads=1) per item,
    get_batch of the sampled indices, then the whole frames to float, RandomResizedCrop + flip
    (torchvision, one crop for all frames) and normalize; one decode per repeat."""

    def __init__(self, paths: List[str], num_frames: int, stride: int, img_size: int, min_scale: float,
                 repeats: int = 1):
        from torchvision.transforms import v2 as T

        from modalities.grid import default_norm

        self.paths, self.num_frames, self.stride, self.repeats = paths, num_frames, stride, repeats
        self.transform = T.Compose([T.RandomResizedCrop(img_size, scale=(min_scale, 1.0), antialias=True),
                                    T.RandomHorizontalFlip()])
        mean, std = default_norm(3, None, None)
        self.mean, self.std = torch.tensor(mean)[:, None, None, None], torch.tensor(std)[:, None, None, None]

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        import decord

        decord.bridge.set_bridge("native")
        clips = []
        for _ in range(self.repeats):
            reader = decord.VideoReader(self.paths[index], num_threads=1)
            window = (self.num_frames - 1) * self.stride + 1
            start = int(np.random.randint(0, len(reader) - window + 1))
            frames = reader.get_batch(list(range(start, start + window, self.stride))).asnumpy()
            clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # [T, 3, H, W]
            clip = self.transform(clip).permute(1, 0, 2, 3)  # [3, T, S, S]
            clips.append((clip - self.mean) / self.std)
        return {"video": clips[0] if self.repeats == 1 else torch.stack(clips)}


def clips_per_second(dataset, indices, workers: int, batch: int) -> float:
    """Decoded + augmented clips per second through a DataLoader (workers' start-up included)."""
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch,
                                         num_workers=workers, persistent_workers=False)
    start, seen = time.perf_counter(), 0
    for item in loader:
        video = item["video"]
        seen += video.shape[0] * (video.shape[1] if video.dim() == 6 else 1)
    return seen / (time.perf_counter() - start)


def training_clips_per_second(gin_file: str, batch: int, steps: int = 2) -> float:
    """Training clips/s of a recipe's model (random clips, its own mask), for comparison with decoding."""
    import gin

    from benchmarks.pairs import unimask_step
    from unimask.cli import parse_gin, seed_for_init
    from unimask.optim import make_optimizer
    from unimask.train.precision import resolve_device, resolve_precision

    parse_gin([gin_file])
    seed_for_init()
    model = gin.query_parameter("train.model").scoped_configurable_fn().train()
    device = resolve_device("cpu")
    precision = resolve_precision("auto", device)
    adapter = model.adapter  # the clip size the recipe trains on
    clip = torch.randn(batch, adapter.in_chans, adapter.num_frames or 16, adapter.img_size, adapter.img_size)
    step = unimask_step(model, make_optimizer(model, 1e-4, 0.05, (0.9, 0.95), device), {"video": clip},
                        lambda: {"generator": torch.Generator().manual_seed(0)}, precision, device)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return batch / float(np.median(times[1:]))


def pyav_seek_gain(paths: List[str], num_frames: int, stride: int, windows: int = 8) -> tuple:
    """Seconds to read `windows` random windows per file with the PyAV fallback's packet index
    (seek to the key frame before each window) and by decoding from the start -> (seek, start)."""
    from modalities.video_decode import AVIndex

    rng, seek, start = np.random.default_rng(0), 0.0, 0.0
    for path in paths:
        index = AVIndex(path)
        for _ in range(windows):
            first = int(rng.integers(0, index.count - (num_frames - 1) * stride))
            wanted = list(range(first, first + (num_frames - 1) * stride + 1, stride))
            began = time.perf_counter()
            sought = index.read_seeking(path, wanted)
            middle = time.perf_counter()
            decoded = index.read_from_start(path, wanted)
            start, seek = start + time.perf_counter() - middle, seek + middle - began
            assert all(np.array_equal(sought[i], decoded[i]) for i in wanted)
    return seek, start


def bench_data(args):
    """Both loaders with 0, 1 and 2 workers (or --workers), then the training rates; the last line
    is ratio_vs_reference (the smallest of the per-worker-count ratios)."""
    if args.modality == "image" or args.vs == "torchvision":
        if (args.modality, args.vs) != ("image", "torchvision"):
            raise SystemExit("images are compared with torchvision: --modality image --vs torchvision")
        from benchmarks.image_data import bench_images

        return bench_images(args)
    from modalities.video import VideoDataset

    args.batch = args.batch or 2
    args.min_scale = 0.25 if args.min_scale is None else args.min_scale

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # decoding and augmenting is per-worker work: one thread each
    if args.sample:
        list_file = os.path.join(ROOT, "data", "sample", "video", "train.csv")
    else:
        list_file = kinetics_like_clips(args.clips_dir, gop=args.gop)
    ours = VideoDataset(root=list_file, num_frames=args.num_frames, sampling_rate=args.stride,
                        img_size=args.img_size, min_scale=args.min_scale, repeats=args.repeats, backend=args.backend)
    paths = [path for path, *_ in ours.items]
    reference = ReferenceClips(paths, args.num_frames, args.stride, args.img_size, args.min_scale, args.repeats)
    indices = [i % len(paths) for i in range(args.clips)]
    print(f"{len(paths)} videos from {list_file}; {args.clips} items x {args.repeats} clip(s) of {args.num_frames} "
          f"frames x stride {args.stride}, RandomResizedCrop {args.img_size} (scale {args.min_scale}-1) + flip, "
          f"batch {args.batch}, 1 torch thread per process, unimask decodes with {args.backend}, "
          f"torch {torch.__version__}")
    if args.backend == "av":
        seek, start = pyav_seek_gain(paths, args.num_frames, args.stride)
        print(f"PyAV reads of 8 random windows per video: seeking {seek:.2f} s, from the start {start:.2f} s: "
              f"{start / seek:.2f}x")
    ratios = []
    for workers in args.workers:
        rates = {}
        for name, dataset in (("reference", reference), ("unimask", ours), ("reference", reference),
                              ("unimask", ours)):
            torch.manual_seed(0)
            np.random.seed(0)
            rates.setdefault(name, []).append(clips_per_second(dataset, indices, workers, args.batch))
        best = {name: max(values) for name, values in rates.items()}  # the better of two rounds each
        ratios.append(best["unimask"] / best["reference"])
        print(f"{workers} workers: unimask {best['unimask']:6.2f} clips/s, reference {best['reference']:6.2f} "
              f"clips/s (rounds {', '.join(f'{v:.2f}' for v in rates['unimask'])} / "
              f"{', '.join(f'{v:.2f}' for v in rates['reference'])}): ratio {ratios[-1]:.2f}")
    if args.train_rates:
        torch.set_num_threads(args.train_threads or threads)
        for gin_file, batch in (("gin/video_mae_cpu.gin", 8), ("gin/video_mae.gin", 1)):
            rate = training_clips_per_second(os.path.join(ROOT, gin_file), batch)
            print(f"training on this CPU ({torch.get_num_threads()} threads): {gin_file} at batch {batch}: "
                  f"{rate:.2f} clips/s")
    print(f"ratio_vs_reference={min(ratios):.2f}")
