"""Images: ImageFolder trees, single image files and .npz arrays -> patch tokens (MAE, SimMIM)."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import gin
import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch import nn
from torchvision.transforms import v2 as T

from modalities.base import ModalityAdapter
from unimask.data import SampleDataset
from unimask.files import NoSplitError, as_roots, check_split, list_split_files
from unimask.tokens import Tokens

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_norm(channels: int, mean, std):
    """ImageNet statistics for RGB, 0.5 / 0.5 for any other channel count."""
    if mean is None:
        mean = IMAGENET_MEAN if channels == 3 else (0.5,) * channels
    if std is None:
        std = IMAGENET_STD if channels == 3 else (0.5,) * channels
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries for {channels} channels")
    return tuple(mean), tuple(std)


def to_channels(array: np.ndarray, channels: int, name: str) -> np.ndarray:
    """[H, W] or [H, W, C] uint8 -> [H, W, channels]: gray -> RGB by repetition, RGBA -> RGB,
    gray+alpha -> gray; any other mismatch is an error naming the file."""
    if array.ndim == 2:
        array = array[..., None]
    have = array.shape[-1]
    if have == channels:
        return array
    if have == 1:
        return np.repeat(array, channels, axis=-1)
    if have in (2, 4) and have - 1 == channels:
        return array[..., :channels]
    raise ValueError(f"{name}: image has {have} channels, the recipe expects {channels} (in_chans)")


def train_transform(img_size: int, min_scale: float, augment: bool):
    """MAE pretraining augmentation (RandomResizedCrop + flip) or a plain resize for probes."""
    if augment:
        return T.Compose([T.RandomResizedCrop(img_size, scale=(min_scale, 1.0), antialias=True),
                          T.RandomHorizontalFlip()])
    return T.Resize((img_size, img_size), antialias=True)


def read_npz_split(path: str, split: str, whole_file_ok: bool = None):
    """Arrays of one split of an image .npz (x_<split>/y_<split>, else x/y or images/labels)
    -> (images [N, H, W(, C)], labels [N] | None); a missing file or empty array is named.
    The un-split x/y arrays serve split 'train' (or any split of a file given as test_root,
    whole_file_ok); asking another split of them is a NoSplitError, not the training data again."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset root {path!r} does not exist")
    data = np.load(path)
    whole_file_ok = split == "train" if whole_file_ok is None else whole_file_ok
    if f"x_{split}" not in data and any(key.startswith("x_") for key in data) or \
            f"x_{split}" not in data and not whole_file_ok:
        raise NoSplitError(f"{path}: no x_{split} array (keys: {list(data.keys())})")
    for x_key, y_key in ((f"x_{split}", f"y_{split}"), ("x", "y"), ("images", "labels")):
        if x_key in data:
            images = data[x_key]
            labels = data[y_key] if y_key in data else None
            break
    else:
        raise KeyError(f"{path}: no x_{split}/x/images array (keys: {list(data.keys())})")
    if len(images) == 0:
        raise ValueError(f"{path}: array {x_key!r} is empty")
    return images, labels


@gin.configurable
class ImageDataset(SampleDataset):
    """Folders (recursive; class sub-folders give labels), image files, or .npz arrays with
    `x_<split>`/`y_<split>` (or `x`/`y`, `images`/`labels`) keys. Yields {'image' [C,H,W], 'label'}.

    split: 'train' | 'val' | 'test', found as unimask/files.py describes (split folders,
    <class>/<split>/, list files side by side) or in `test_root` (for every split but train)."""

    def __init__(self, root=gin.REQUIRED, img_size: int = 224, in_chans: int = 3, split: str = "train",
                 augment: bool = True, min_scale: float = 0.2, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, skip_bad_samples: bool = False, limit: Optional[int] = None,
                 test_root=None):
        self.in_chans, self.skip_bad_samples = in_chans, skip_bad_samples
        self.items, self.arrays = [], []  # (path|None, label, array index)
        check_split(split, "ImageDataset.split")
        from_test_root = split != "train" and test_root is not None
        train_folders = [str(r) for r in as_roots(root) if not str(r).endswith(".npz")]
        sources = []
        for r in map(str, as_roots(test_root if from_test_root else root)):
            if r.endswith(".npz"):
                self._add_npz(r, split, whole_file_ok=from_test_root or split == "train")
                sources.append(r)
                continue
            if from_test_root:  # the test files, labelled by the training root's class folders
                found, how = list_split_files(train_folders[0] if train_folders else r, IMAGE_EXTS, split, r)
            else:
                found, how = list_split_files(r, IMAGE_EXTS, split)
            self.items += [(path, label, None) for path, label in found]
            sources.append(how.split(": ", 1)[1])
        self.source = f"{split}: " + ", ".join(sources)  # where the items came from, for eval's report
        if limit is not None:
            self.items = self.items[:limit]
        self.transform = train_transform(img_size, min_scale, augment)
        mean, std = default_norm(in_chans, mean, std)
        self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def _add_npz(self, path: str, split: str, whole_file_ok: bool):
        images, labels = read_npz_split(path, split, whole_file_ok)
        self.arrays.append(images)
        source = len(self.arrays) - 1
        self.items += [((path, source), None if labels is None else int(labels[i]), i) for i in range(len(images))]

    def describe(self, index):
        path, _, row = self.items[index]
        return f"{path[0]}[{row}]" if row is not None else str(path)

    def read(self, index) -> np.ndarray:
        path, _, row = self.items[index]
        if row is not None:
            return self.arrays[path[1]][row]
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGBA") if img.mode == "P" else img)

    def load(self, index):
        array = to_channels(self.read(index), self.in_chans, self.describe(index))
        image = torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 255.0  # [C, H, W]
        image = (self.transform(image) - self.mean) / self.std
        label = self.items[index][1]
        return {"image": image, "label": -1 if label is None else label}


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """[B, C, *S] -> [B, N, prod(patch) * C], patch axes then channels last (MAE order)."""
    if x.dim() == 4:
        return rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=patch[0], q=patch[1])
    return rearrange(x, "b c (t u) (h p) (w q) -> b (t h w) (u p q c)", u=patch[0], p=patch[1], q=patch[2])


def unpatchify(patches: torch.Tensor, grid: Sequence[int], patch: Sequence[int], channels: int) -> torch.Tensor:
    """Inverse of patchify: [B, N, P] -> [B, C, *S]."""
    if len(grid) == 2:
        return rearrange(patches, "b (h w) (p q c) -> b c (h p) (w q)", h=grid[0], w=grid[1], p=patch[0], q=patch[1], c=channels)
    return rearrange(patches, "b (t h w) (u p q c) -> b c (t u) (h p) (w q)", t=grid[0], h=grid[1], w=grid[2],
                     u=patch[0], p=patch[1], q=patch[2], c=channels)


def grid_coords(grid: Sequence[int], batch: int, device) -> torch.Tensor:
    """Integer grid positions of every token: [B, prod(grid), len(grid)] float."""
    axes = torch.meshgrid(*[torch.arange(g, device=device, dtype=torch.float32) for g in grid], indexing="ij")
    return torch.stack(axes, -1).reshape(1, -1, len(grid)).expand(batch, -1, -1)


def check_divisible(sizes: dict, patches: dict):
    """At build time: every input size must be a multiple of its patch size; the error names both
    gin bindings. sizes / patches: {binding: value}, in matching order."""
    for (size_name, size), (patch_name, patch) in zip(sizes.items(), patches.items()):
        if patch < 1 or size % patch:
            raise ValueError(f"{size_name}={size} is not divisible by {patch_name}={patch}")


def check_input(x: torch.Tensor, shape: Sequence[int], what: str):
    """Raise naming the parameter when a batch does not have the recipe's shape."""
    if tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{what} batch has shape {tuple(x.shape[1:])} per sample, the recipe expects {tuple(shape)}")


class GridAdapter(ModalityAdapter):
    """Shared by dense inputs cut into a regular grid of patches (images, video tubelets)."""

    batch_key = "image"

    def __init__(self, patch: Sequence[int], in_chans: int, dim: int):
        super().__init__()
        self.patch, self.in_chans = tuple(patch), in_chans
        self.target_dim = int(np.prod(self.patch)) * in_chans
        self.proj = nn.Linear(self.target_dim, dim)  # = a stride-patch conv, on visible patches only

    def grid_of(self, spatial: Sequence[int]) -> tuple:
        if any(s % p for s, p in zip(spatial, self.patch)):
            raise ValueError(f"input size {tuple(spatial)} is not divisible by patch size {self.patch}")
        return tuple(s // p for s, p in zip(spatial, self.patch))

    def tokenize(self, batch) -> Tokens:
        x = batch[self.batch_key] if isinstance(batch, dict) else batch
        x = x.flatten(0, 1) if x.dim() == len(self.patch) + 3 else x  # repeated sampling [B, R, ...]
        if x.shape[1] != self.in_chans:
            raise ValueError(f"{self.batch_key} batch has {x.shape[1]} channels, in_chans is {self.in_chans}")
        grid = self.grid_of(x.shape[2:])
        patches = patchify(x, self.patch)
        return Tokens(patches, grid_coords(grid, x.shape[0], x.device), grid=grid,
                      patch_shape=self.patch + (self.in_chans,))

    def embed(self, patches, tokens, ids):  # [B, K, P] -> [B, K, D]
        return self.proj(patches)

    def panels(self, tokens: Tokens, pred: torch.Tensor, mask) -> list:
        """Sample 0 as [input, masked input, reconstruction with visible patches pasted], each
        [C, *S] in [0, 1], all three scaled by the input's own range."""
        patches = tokens.patches[:1].float()  # [1, N, P]
        hidden = mask.masked[:1, :, None]
        lo, hi = patches.min(), patches.max()
        masked = torch.where(hidden, torch.full_like(patches, float(lo)), patches)
        recon = torch.where(hidden, pred[:1].float(), patches)
        x = unpatchify(torch.cat([patches, masked, recon]), tokens.grid, self.patch, self.in_chans)
        x = ((x - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1)
        return [x[i] for i in range(3)]


def save_rows(rows: list, path: str, min_size: int = 112) -> str:
    """rows: list of lists of [C, H, W] tensors in [0, 1] -> one PNG grid, upscaled if tiny."""
    import torchvision.utils as vutils

    images = [img if img.shape[0] == 3 else img[:1].expand(3, -1, -1) for row in rows for img in row]
    grid = vutils.make_grid(torch.stack(images), nrow=len(rows[0]), padding=2, pad_value=1.0)
    scale = max(1, min_size // max(1, images[0].shape[-1]))
    if scale > 1:
        grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray((grid.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)).save(path)
    return path


@gin.configurable
class ImageAdapter(GridAdapter):
    """Square images -> (img_size / patch_size)^2 patch tokens with 2-D sin-cos positions."""

    batch_key = "image"

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, dim: int = 768):
        check_divisible({"ImageAdapter.img_size": img_size}, {"ImageAdapter.patch_size": patch_size})
        super().__init__((patch_size, patch_size), in_chans, dim)
        self.img_size = img_size

    def tokenize(self, batch):
        x = batch[self.batch_key] if isinstance(batch, dict) else batch
        check_input(x, (self.in_chans, self.img_size, self.img_size), "image (ImageAdapter.img_size/in_chans)")
        return super().tokenize(batch)

    def render(self, tokens, pred, mask, path):
        return save_rows([self.panels(tokens, pred, mask)], path)
