"""Images: ImageFolder trees, single image files and .npz arrays -> patch tokens (MAE, SimMIM)."""
from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence

import gin
import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from modalities.grid import GridAdapter, check_divisible, check_input, default_norm, save_rows
from modalities.grid import patchify, unpatchify  # noqa: F401  (their former home; tests import them here)
from modalities.limits import MAX_ARRAY_BYTES, MAX_PIXELS, Declared, Limit, SizeLimitError, check_arrays, member_text
from unimask.data import SampleDataset
from unimask.files import as_roots, check_split, list_split_files, read_npz_split

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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


def decode_image(path: str, max_pixels: Limit) -> np.ndarray:
    """An image file -> [H, W] or [H, W, C] uint8 (palette images as RGBA), after checking the size
    its header declares against max_pixels: nothing is decoded for a file over it.

    Pillow's own guard (Image.MAX_IMAGE_PIXELS: a warning over it, an error over twice it) is off
    while the header is read (the check here replaces it, naming the binding) and set to the same
    limit while decoding, so a format that declares more sizes as it decodes (GIF frames) is held
    to it too; its refusal names the binding as well."""
    previous = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None
            with Image.open(path) as img:
                max_pixels.check(path, f"the image header ({img.width} x {img.height})", img.width * img.height,
                                 "pixels")
                Image.MAX_IMAGE_PIXELS = max_pixels.value
                img.load()
                return np.asarray(img.convert("RGBA") if img.mode == "P" else img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise SizeLimitError(f"{path}: {err} (Pillow's guard, set to {max_pixels.binding}={max_pixels.value}); "
                             "raise it if the file is genuine") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def check_image_arrays(path: str, max_pixels: Limit, max_bytes: Limit):
    """An .npz of images: each array within max_bytes, each image ([N, H, W(, C)] rows) within max_pixels."""
    def rows(key: str, declared: Declared):
        if declared.shape is not None and len(declared.shape) >= 3:
            height, width = declared.shape[1:3]
            max_pixels.check(path, f"{member_text(key, declared)}: each image", height * width, "pixels")

    check_arrays(path, max_bytes, rows)


def train_transform(img_size: int, min_scale: float, augment: bool):
    """MAE pretraining augmentation (RandomResizedCrop + flip) or a plain resize for probes."""
    if augment:
        return T.Compose([T.RandomResizedCrop(img_size, scale=(min_scale, 1.0), antialias=True),
                          T.RandomHorizontalFlip()])
    return T.Resize((img_size, img_size), antialias=True)


@gin.configurable
class ImageDataset(SampleDataset):
    """Folders (recursive; class sub-folders give labels), image files, or .npz arrays with
    `x_<split>`/`y_<split>` (or `x`/`y`, `images`/`labels`) keys. Yields {'image' [C,H,W], 'label'}.

    split: 'train' | 'val' | 'test', found as unimask/files.py describes (split folders,
    <class>/<split>/, list files side by side) or in `test_root` (for every split but train).
    max_pixels / max_array_bytes: size guards (modalities/limits.py): an image whose header
    declares more pixels, or an .npz whose arrays declare more bytes, is refused before decoding."""

    def __init__(self, root=gin.REQUIRED, img_size: int = 224, in_chans: int = 3, split: str = "train",
                 augment: bool = True, min_scale: float = 0.2, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, skip_bad_samples: bool = False, limit: Optional[int] = None,
                 test_root=None, max_pixels: Optional[int] = MAX_PIXELS,
                 max_array_bytes: Optional[int] = MAX_ARRAY_BYTES):
        self.in_chans, self.skip_bad_samples = in_chans, skip_bad_samples
        self.max_pixels = Limit(max_pixels, "ImageDataset.max_pixels")
        self.max_array_bytes = Limit(max_array_bytes, "ImageDataset.max_array_bytes")
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
        if os.path.isfile(path):  # read_npz_split names a missing file
            check_image_arrays(path, self.max_pixels, self.max_array_bytes)
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
        return decode_image(path, self.max_pixels)

    def load(self, index):
        array = to_channels(self.read(index), self.in_chans, self.describe(index))
        image = torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 255.0  # [C, H, W]
        image = (self.transform(image) - self.mean) / self.std
        label = self.items[index][1]
        return {"image": image, "label": -1 if label is None else label}


@gin.configurable
class ImageAdapter(GridAdapter):
    """Square images -> (img_size / patch_size)^2 patch tokens with 2-D sin-cos positions, or a
    learned position table (pos_embed='learned', as supervised ViTs; it starts as sin-cos)."""

    batch_key = "image"

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, dim: int = 768,
                 pos_embed: str = "sincos", pos_axes: str = "ij"):
        check_divisible((("ImageAdapter.img_size", img_size), ("ImageAdapter.patch_size", patch_size)))
        super().__init__((patch_size, patch_size), in_chans, dim, (img_size // patch_size,) * 2, pos_embed, pos_axes)
        self.img_size = img_size

    def tokenize(self, batch):
        x = batch[self.batch_key] if isinstance(batch, dict) else batch
        check_input(x, (self.in_chans, self.img_size, self.img_size), "image (ImageAdapter.img_size/in_chans)")
        return super().tokenize(batch)

    def render(self, tokens, pred, mask, path):
        return save_rows([self.panels(tokens, pred, mask)], path)
