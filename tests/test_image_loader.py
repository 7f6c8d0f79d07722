"""ImageDataset's fast path (draw the box, decode, crop, one resize, flip) gives torchvision's
RandomResizedCrop + flip: the same boxes for the same seeds, the same distribution of crops, the
same pixels up to the resize kernel; draft decoding only where the crop stays at least the output
size; uint8 batches normalized by the adapter; `tools/bench.py data --modality image` runs."""
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin
from torchvision import transforms
from torchvision.transforms import v2

from modalities.grid import IMAGENET_MEAN, IMAGENET_STD
from modalities.image import ImageAdapter, ImageDataset, crop_box, draft_factor, resized, train_transform
from unimask.data import seed_everything

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))


def photo_folder(folder, sizes=((500, 375), (375, 500)), quality=90):
    """An ImageFolder tree of textured JPEGs (scikit-image's photos, cut and resized)."""
    from benchmarks.image_data import imagenet_like_jpegs

    return [imagenet_like_jpegs(str(folder), count=4, size=size, quality=quality) for size in sizes]


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = np.sort(np.concatenate([a, b]))
    cdf = lambda x: np.searchsorted(np.sort(x), grid, side="right") / len(x)  # noqa: E731
    return float(np.abs(cdf(a) - cdf(b)).max())


def test_crop_box_is_torchvision_get_params_draw_for_draw():
    for seed in range(200):
        height, width = 100 + seed, 600 - seed
        torch.manual_seed(seed)
        ours = crop_box(height, width, (0.2, 1.0))
        torch.manual_seed(seed)
        v1 = transforms.RandomResizedCrop.get_params(torch.empty(3, height, width), [0.2, 1.0], [3 / 4, 4 / 3])
        torch.manual_seed(seed)
        made = v2.RandomResizedCrop(224, scale=(0.2, 1.0)).make_params([torch.empty(3, height, width)])
        assert ours == v1 == tuple(made.values())


def test_crop_scale_and_aspect_match_torchvision_in_distribution():
    """The dataset's own sampler (plan) over independent seeds against torchvision's get_params
    over others: scale, aspect ratio and position pass a two-sample KS test (1200 draws each)."""
    ds = ImageDataset.__new__(ImageDataset)
    ds.augment, ds.min_scale = True, 0.2
    ours, theirs = [], []
    for i in range(1200):
        seed_everything(7919 * i + 1)
        ours.append(ds.plan(375, 500)[0])
        torch.manual_seed(10**6 + i)
        theirs.append(transforms.RandomResizedCrop.get_params(torch.empty(3, 375, 500), [0.2, 1.0], [3 / 4, 4 / 3]))
    ours, theirs = np.array(ours, float), np.array(theirs, float)
    for column in (lambda b: b[:, 2] * b[:, 3] / (375 * 500), lambda b: np.log(b[:, 3] / b[:, 2]),
                   lambda b: b[:, 0] / 375, lambda b: b[:, 1] / 500):
        assert ks_statistic(column(ours), column(theirs)) < 1.95 * math.sqrt(2 / 1200)  # alpha = 0.001


def test_same_seed_same_crop_and_pixels_as_torchvisions_mae_pipeline(tmp_path):
    """Bicubic, on the same file and torch seed: the crop and flip are torchvision's, the pixels
    differ only by the resize kernel (torch's uint8 one against Pillow's)."""
    roots = photo_folder(tmp_path / "jpegs")
    mae = transforms.Compose([
        transforms.RandomResizedCrop(224, scale=(0.2, 1.0), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    for root in roots:
        ds = ImageDataset(root=root, img_size=224, interpolation="bicubic")
        for index, (path, _, _) in enumerate(ds.items):
            for seed in range(2):
                torch.manual_seed(seed)
                ours = ds[index]["image"]
                torch.manual_seed(seed)
                with Image.open(path) as img:
                    theirs = mae(img.convert("RGB"))
                difference = ((ours - theirs) * std * 255).abs()
                assert difference.mean() < 0.2 and difference.max() <= 3, (path, seed)


def test_default_bilinear_path_matches_the_float_transform_it_replaced(tmp_path):
    """The fast path against the float v2 transform it replaced (bilinear, the default), same seed:
    the same crop, pixels apart by the uint8 rounding of the resize (< 1/255 on average)."""
    root = photo_folder(tmp_path / "jpegs", sizes=((500, 375),))[0]
    ds = ImageDataset(root=root, img_size=224)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    old = train_transform(224, 0.2, True)
    for index, (path, _, _) in enumerate(ds.items):
        seed_everything(index)
        expected = (old(torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1) / 255.0) - mean) / std
        difference = ((ds[(index, index)]["image"] - expected) * std * 255).abs()
        assert difference.mean() < 1.0 and difference.max() < 8, path


def test_arrays_keep_the_float_path_bit_for_bit():
    """.npz images with output='float' (the CPU recipes) are untouched: today's transform, same seed."""
    path = os.path.join(ROOT, "data", "sample", "images", "fashion_mnist.npz")
    ds = ImageDataset(root=path, img_size=28, in_chans=1, min_scale=0.5)
    for index in range(5):
        seed_everything(index)
        image = torch.from_numpy(np.array(ds.arrays[0][index]))[None].float() / 255.0
        expected = (train_transform(28, 0.5, True)(image) - 0.5) / 0.5
        assert torch.equal(ds[(index, index)]["image"], expected)


def test_same_seed_same_sample_and_resume_positions(tmp_path):
    root = photo_folder(tmp_path / "jpegs", sizes=((500, 375),))[0]
    first, second = ImageDataset(root=root, img_size=64), ImageDataset(root=root, img_size=64, output="uint8")
    for key in [(0, 5), (3, 123456789), (1, 2**61)]:
        assert torch.equal(first[key]["image"], first[key]["image"])
        assert torch.equal(second[key]["image"], second[key]["image"])
    assert not torch.equal(first[(0, 1)]["image"], first[(0, 2)]["image"])
    loader = torch.utils.data.DataLoader(first, batch_size=2, num_workers=2, sampler=[(i % 4, 1000 + i) for i in range(8)])
    in_workers = torch.cat([batch["image"] for batch in loader])
    assert torch.equal(in_workers, torch.stack([first[(i % 4, 1000 + i)]["image"] for i in range(8)]))


def test_draft_factor_keeps_the_crop_at_least_the_output():
    assert draft_factor(447, 1000, 224) == 1 and draft_factor(448, 448, 224) == 2
    assert draft_factor(895, 2000, 224) == 2 and draft_factor(896, 900, 224) == 4
    assert draft_factor(1792, 1792, 224) == 8 and draft_factor(5000, 5000, 224) == 8
    for short in range(1, 3000, 7):
        factor = draft_factor(short, short + 50, 224)
        assert short / factor >= 224 or factor == 1
        assert factor == 8 or short / (2 * factor) < 224  # the largest reduction that keeps it


def test_draft_decodes_reduced_only_where_the_crop_stays_larger(tmp_path, monkeypatch):
    """draft=True: Pillow's draft is asked for exactly the crops whose short side is >= 2 x the
    output, with the reduction draft_factor gives; the box's edges move to the nearest multiple
    of it, and against a full decode of that same box the pixels stay close (the DCT-domain
    downscale's own difference); never on 500 x 375 files, never with draft=False."""
    big, small = photo_folder(tmp_path / "jpegs", sizes=((1600, 1200), (500, 375)))
    calls, original = [], JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        calls.append((self.size, size))
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    full, drafted = ImageDataset(root=big, img_size=224, output="uint8"), \
        ImageDataset(root=big, img_size=224, output="uint8", draft=True)
    plans, plan = [], drafted.plan

    def recorded(height, width):
        plans.append(plan(height, width))
        return plans[-1]

    drafted.plan = recorded
    differences = []
    for seed in range(24):
        index = seed % len(full)
        image = drafted[(index, seed)]["image"]
        (top, left, height, width), flip = plans[-1]
        factor = draft_factor(height, width, 224)
        if min(height, width) < 448:
            assert not calls and factor == 1
            assert torch.equal(image, full[(index, seed)]["image"])
            continue
        (size_w, size_h), asked = calls.pop()
        assert factor > 1 and (size_w // asked[0], size_h // asked[1]) == (factor, factor)
        edges = [min(round(edge / factor) * factor, limit)
                 for edge, limit in zip((top, left, top + height, left + width), (size_h, size_w) * 2)]
        assert max(abs(a - b) for a, b in zip(edges, (top, left, top + height, left + width))) <= factor / 2
        with Image.open(full.items[index][0]) as img:
            whole = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
        expected = resized(whole[:, edges[0]:edges[2], edges[1]:edges[3]], 224, "bilinear", flip)
        differences.append(float((image.float() - expected.float()).abs().mean()))
    assert len(differences) >= 6  # the test saw reductions
    assert np.mean(differences) < 1.0 and max(differences) < 2.0, differences
    small_set = ImageDataset(root=small, img_size=224, draft=True)
    for seed in range(8):
        small_set[(seed % len(small_set), seed)]
    assert not calls


def test_uint8_output_is_normalized_by_the_adapter_on_its_device(tmp_path):
    root = photo_folder(tmp_path / "jpegs", sizes=((500, 375),))[0]
    floats, bytes_ = ImageDataset(root=root, img_size=32), ImageDataset(root=root, img_size=32, output="uint8")
    batch_f = torch.stack([floats[(i, i)]["image"] for i in range(4)])
    batch_u = torch.stack([bytes_[(i, i)]["image"] for i in range(4)])
    assert batch_u.dtype == torch.uint8 and batch_f.dtype == torch.float32
    adapter = ImageAdapter(img_size=32, patch_size=8, dim=16)
    assert torch.allclose(adapter.normalize(batch_u), batch_f, atol=1e-5)
    assert torch.allclose(adapter.tokenize({"image": batch_u}).patches, adapter.tokenize({"image": batch_f}).patches,
                          atol=1e-5)
    assert torch.equal(adapter.tokenize(batch_f).patches, adapter.tokenize({"image": batch_f}).patches)
    with pytest.raises(ValueError, match="ImageAdapter.mean/std"):
        ImageDataset(root=root, output="uint8", mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="interpolation"):
        ImageDataset(root=root, interpolation="nearest")


def test_probe_resize_and_odd_modes(tmp_path):
    """augment=False resizes the whole image (no draws); palette, gray and CMYK files decode."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rng.integers(0, 255, (40, 60), dtype=np.uint8)).save(tmp_path / "g.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).convert("CMYK").save(tmp_path / "c.jpg")
    ds = ImageDataset(root=str(tmp_path), img_size=16, augment=False)
    state = torch.get_rng_state()
    images = [ds[i]["image"] for i in range(len(ds))]
    assert torch.equal(state, torch.get_rng_state())
    assert all(image.shape == (3, 16, 16) and torch.isfinite(image).all() for image in images)


@pytest.mark.slow  # ~9 s: the loader's own tests above stay in the quick run
def test_image_bench_runs_end_to_end(tmp_path):
    root = photo_folder(tmp_path / "jpegs", sizes=((160, 120),))[0]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench.py"), "data", "--modality", "image",
                           "--vs", "torchvision", "--root", root, "--img-size", "64", "--samples", "8", "--check", "8",
                           "--batch", "4", "--workers", "0", "1"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio_vs_torchvision=\d+\.\d\d", lines[-1]), lines[-3:]
    assert any("8/8 crop boxes identical" in line for line in lines), lines
    assert sum(line.lstrip().startswith(("torchvision crop scale", "unimask     crop scale")) for line in lines) == 2
    assert any(line.startswith("1 workers: unimask") for line in lines)
