"""`tools/bench.py data --modality image --vs torchvision`: decoded + augmented 224 px images/s of
unimask's ImageDataset against torchvision's ImageFolder with MAE's pretraining pipeline
(RandomResizedCrop(224, scale=(0.2, 1), BICUBIC) + flip + ToTensor + Normalize), bicubic on
both sides, through the same DataLoader with 0, 1 and 2 workers.

The images are ImageNet-like JPEGs (500 x 375 and 375 x 500, quality 90) cut from scikit-image's
photos (from the bundled sample PNGs where scikit-image is missing) and written once under
runs/, or any ImageFolder tree given with --root. Before the timing, both sides load the same
files with the same torch seed: their crop boxes must be the same draws (the histograms of crop
scale and aspect ratio are printed) and their pixels differ only by the resize kernel (Pillow's
on torchvision's side, torch's uint8 kernel on unimask's), printed as a mean absolute
difference in 1/255 units (with --draft, also by the reduced decode and the box's edges moved
to its grid). Then samples/s through the DataLoader (after its workers started), the best of
--rounds interleaved rounds, and the CPU time per sample of each side and of a bare decode in
this process. The last line is ratio_vs_torchvision (unimask samples/s over torchvision's, the
smallest over the worker counts).
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
import torch

from unimask.cli import REPO_ROOT as ROOT

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def source_photos() -> dict:
    """name -> RGB uint8 photo: scikit-image's, else the bundled sample PNGs (28 px, upsampled later)."""
    try:
        from skimage import data

        photos = {}
        for name in PHOTOS:
            try:
                photos[name] = getattr(data, name)()[..., :3]
            except Exception:  # a photo scikit-image would have to download
                continue
        if photos:
            return photos
    except ImportError:
        pass
    from PIL import Image

    folder = os.path.join(ROOT, "data", "sample", "images", "folder")
    return {name: np.asarray(Image.open(os.path.join(folder, name, "0.png")).convert("RGB"))
            for name in sorted(os.listdir(folder))}


def imagenet_like_jpegs(folder: str, count: int = 64, size: tuple = (500, 375), quality: int = 90) -> str:
    """Write `count` JPEGs (once) as an ImageFolder tree folder/<photo>/<i>.jpg: a random region
    (half to all of the photo, 4:3) resized to `size` (width, height), one in four turned to
    portrait, at `quality` -> folder."""
    from PIL import Image

    folder = f"{folder}_{count}_{size[0]}x{size[1]}_q{quality}"
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return folder
    rng = np.random.default_rng(0)
    photos = source_photos()
    names = sorted(photos)
    for i in range(count):
        name = names[i % len(names)]
        photo = Image.fromarray(photos[name])
        out = size if i % 4 else size[::-1]
        aspect = out[0] / out[1]
        area = rng.uniform(0.5, 1.0) * photo.width * photo.height
        width = min(photo.width, int(math.sqrt(area * aspect)))
        height = min(photo.height, int(width / aspect))
        left, top = int(rng.integers(0, photo.width - width + 1)), int(rng.integers(0, photo.height - height + 1))
        image = photo.resize(out, Image.BICUBIC, box=(left, top, left + width, top + height))
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        image.save(os.path.join(folder, name, f"{i}.jpg"), quality=quality)
    open(done, "w").close()
    return folder


def recorded_crop():
    """torchvision's RandomResizedCrop whose boxes (top, left, h, w, H, W) go to self.record."""
    from torchvision import transforms

    class RecordedCrop(transforms.RandomResizedCrop):
        record = None

        def get_params(self, img, scale, ratio):
            box = transforms.RandomResizedCrop.get_params(img, scale, ratio)
            if self.record is not None:
                self.record.append((*box, img.height, img.width))
            return box

    return RecordedCrop


def mae_reference(root: str, img_size: int, min_scale: float, record: list = None):
    """torchvision's ImageFolder with MAE's main_pretrain.py transform; record: a list the crop
    boxes (top, left, h, w, H, W) are appended to."""
    from torchvision import datasets, transforms

    from modalities.grid import IMAGENET_MEAN, IMAGENET_STD

    kind = transforms.RandomResizedCrop if record is None else recorded_crop()  # a local class: no workers then
    crop = kind(img_size, scale=(min_scale, 1.0), interpolation=transforms.InterpolationMode.BICUBIC)
    crop.record = record
    transform = transforms.Compose([crop, transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return datasets.ImageFolder(root, transform=transform)


def unimask_images(root: str, img_size: int, min_scale: float, output: str, draft: bool, record: list = None):
    """unimask's ImageDataset as MAE's recipe would read it (bicubic); record as mae_reference's."""
    from modalities.image import ImageDataset

    dataset = ImageDataset(root=root, img_size=img_size, min_scale=min_scale, interpolation="bicubic", output=output,
                           draft=draft)
    if record is not None:
        plan = dataset.plan

        def recorded(height, width):
            box, flip = plan(height, width)
            record.append((*box, height, width))
            return box, flip

        dataset.plan = recorded
    return dataset


def batch_size_of(batch) -> int:
    return len(batch["label"] if isinstance(batch, dict) else batch[1])


def samples_per_second(dataset, indices, workers: int, batch: int) -> float:
    """Samples/s through a DataLoader after its workers started and took a few batches (untimed)."""
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch,
                                         num_workers=workers, persistent_workers=workers > 0)
    for step, _ in enumerate(loader):  # warm-up: worker start-up, page cache
        if step >= 2 * max(workers, 1):
            break
    start, seen = time.perf_counter(), 0
    for item in loader:
        seen += batch_size_of(item)
    return seen / (time.perf_counter() - start)


def positions(dataset, paths: list) -> list:
    """The index of each path in an ImageFolder (.samples) or an ImageDataset (.items)."""
    where = {os.path.abspath(item[0]): i for i, item in enumerate(getattr(dataset, "samples", None) or dataset.items)}
    return [where[os.path.abspath(path)] for path in paths]


def cpu_ms_per_sample(sides: dict, count: int, rounds: int = 3) -> dict:
    """CPU milliseconds per sample in this process (time.process_time, so other jobs on the machine
    do not count) over the same `count` files, each side the best of `rounds` interleaved passes;
    the side 'decode' is a plain full decode by Pillow."""
    from PIL import Image

    paths = [path for path, _ in sides["torchvision"].samples[:count]]

    def decode(path):
        with Image.open(path) as img:
            img.load()

    calls = {"decode": (decode, paths)}
    calls.update({name: (dataset.__getitem__, positions(dataset, paths)) for name, dataset in sides.items()})
    best = {}
    for _ in range(rounds):
        for name, (call, keys) in calls.items():
            torch.manual_seed(0)
            start = time.process_time()
            for key in keys:
                call(key)
            best[name] = min(best.get(name, float("inf")), (time.process_time() - start) / len(keys) * 1e3)
    return best


def histogram(boxes: list, scale_range: tuple, bins: int = 8) -> tuple:
    """Counts of crop scale (box area / image area) and log aspect ratio (w / h) in `bins` bins."""
    boxes = np.asarray(boxes, dtype=float)
    scale = boxes[:, 2] * boxes[:, 3] / (boxes[:, 4] * boxes[:, 5])
    log_ratio = np.log(boxes[:, 3] / boxes[:, 2])
    scales = np.histogram(scale, bins=bins, range=scale_range)[0]
    ratios = np.histogram(log_ratio, bins=bins, range=(math.log(3 / 4), math.log(4 / 3)))[0]
    return scales, ratios


def same_output_check(ours, reference, records: dict, count: int, min_scale: float) -> None:
    """Load `count` files through both with the same torch seed (no workers): print how many crop
    boxes agree, the histograms of both, and the mean absolute pixel difference (1/255 units)."""
    from modalities.grid import IMAGENET_MEAN, IMAGENET_STD

    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    indices = [i % len(ours) for i in range(count)]
    diffs = []
    for i, index, there in zip(range(count), indices, positions(reference, [ours.items[j][0] for j in indices])):
        torch.manual_seed(i)
        image = ours[index]["image"]
        torch.manual_seed(i)
        expected = reference[there][0]
        if image.dtype == torch.uint8:
            image = (image.float() / 255 - mean) / std
        diffs.append(float(((image - expected) * std).abs().mean()) * 255)
    agree = sum(a[:4] == b[:4] for a, b in zip(records["unimask"], records["torchvision"]))
    print(f"same seeds, {count} samples: {agree}/{count} crop boxes identical; mean |unimask - torchvision| "
          f"{np.mean(diffs):.3f}/255 per pixel value (largest sample mean {max(diffs):.3f}/255)")
    for name in ("torchvision", "unimask"):
        scales, ratios = histogram(records[name][:count], (min_scale, 1.0))
        print(f"  {name:11s} crop scale {min_scale:.2f}..1 in 8 bins: {' '.join(f'{c:3d}' for c in scales)} | "
              f"aspect 3/4..4/3 (log) in 8 bins: {' '.join(f'{c:3d}' for c in ratios)}")


def bench_images(args):
    """Both loaders with 0, 1 and 2 workers (or --workers); the last line is ratio_vs_torchvision."""
    torch.set_num_threads(1)  # decoding and augmenting is per-worker work: one thread each
    width, height = (int(v) for v in args.size.lower().split("x"))
    root = args.root or imagenet_like_jpegs(os.path.join(ROOT, "runs", "bench_images"), args.images, (width, height))
    img_size, min_scale = args.img_size, 0.2 if args.min_scale is None else args.min_scale
    batch = args.batch or 32
    sides = {"torchvision": mae_reference(root, img_size, min_scale),
             "unimask": unimask_images(root, img_size, min_scale, args.output, args.draft)}
    if args.output == "uint8":
        sides["unimask float"] = unimask_images(root, img_size, min_scale, "float", args.draft)
    count = len(sides["unimask"])
    sizes = sorted({sides["torchvision"].loader(path).size for path, _ in sides["torchvision"].samples[:64]})
    print(f"{count} images from {root} (sizes {', '.join(f'{w}x{h}' for w, h in sizes[:4])}"
          f"{'...' if len(sizes) > 4 else ''}); RandomResizedCrop {img_size} (scale {min_scale}-1, bicubic) + flip, "
          f"batch {batch}, {args.samples} samples per measurement, 1 torch thread per process; unimask: "
          f"output={args.output}, draft={args.draft}; torch {torch.__version__}")
    records = {"torchvision": [], "unimask": []}
    same_output_check(unimask_images(root, img_size, min_scale, args.output, args.draft, records["unimask"]),
                      mae_reference(root, img_size, min_scale, records["torchvision"]), records, args.check, min_scale)
    indices = [i % count for i in range(args.samples)]
    best = {}  # workers -> side -> samples/s
    for workers in args.workers:
        rates = {}
        for _ in range(args.rounds):  # interleaved rounds, the best of each side's
            for name, dataset in sides.items():
                torch.manual_seed(0)
                rates.setdefault(name, []).append(samples_per_second(dataset, indices, workers, batch))
        rate = best[workers] = {name: max(values) for name, values in rates.items()}
        per = max(workers, 1)
        line = (f"{workers} workers: unimask {rate['unimask']:7.1f} samples/s ({rate['unimask'] / per:6.1f} per worker), "
                f"torchvision {rate['torchvision']:7.1f} ({rate['torchvision'] / per:6.1f} per worker): "
                f"ratio {rate['unimask'] / rate['torchvision']:.2f}")
        if "unimask float" in rate:
            line += f"; unimask output=float {rate['unimask float']:7.1f}: ratio " \
                    f"{rate['unimask float'] / rate['torchvision']:.2f}"
        print(line)
    cpu = cpu_ms_per_sample(sides, min(count, 128))
    print(f"CPU time per sample in one process (best of 3): torchvision {cpu['torchvision']:.2f} ms, unimask "
          f"{cpu['unimask']:.2f} ms (ratio {cpu['torchvision'] / cpu['unimask']:.2f}), full decode alone "
          f"{cpu['decode']:.2f} ms: decoding whole files, a loader stays under "
          f"{cpu['torchvision'] / cpu['decode']:.2f}x (draft decodes less where a crop keeps >= {2 * img_size} px)")
    if "unimask float" in sides:
        worst = min(rate["unimask float"] / rate["torchvision"] for rate in best.values())
        print(f"ratio with output=float (normalized in the worker, the default): {worst:.2f}")
    print(f"ratio_vs_torchvision={min(rate['unimask'] / rate['torchvision'] for rate in best.values()):.2f}")
