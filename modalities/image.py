"""Images: ImageFolder trees, single image files and .npz arrays -> patch tokens (MAE, SimMIM)."""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Optional, Sequence

import gin
import numpy as np
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import v2 as T

from modalities.grid import GridAdapter, check_divisible, check_input, default_norm, PANELS, save_rows
from modalities.limits import MAX_ARRAY_BYTES, MAX_PIXELS, Declared, Limit, SizeLimitError, check_arrays, member_text
from unimask.data import SampleDataset
from unimask.files import as_roots, check_split, list_split_files, read_npz_split
from unimask.patches import unpatchify
from unimask.shards import readable
from unimask.tokens import Tokens

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


@contextlib.contextmanager
def checked_image(path: str, max_pixels: Limit):
    """Image.open(path) once the size its header declares passed max_pixels: nothing is decoded for
    a file over it; the body decodes.

    Pillow's own guard (Image.MAX_IMAGE_PIXELS: a warning over it, an error over twice it) is off
    while the header is read (the check here replaces it, naming the binding) and set to the same
    limit while decoding, so a format that declares more sizes as it decodes (GIF frames) is held
    to it too; its refusal names the binding as well."""
    previous = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None
            with Image.open(readable(path)) as img:
                max_pixels.check(path, f"the image header ({img.width} x {img.height})", img.width * img.height,
                                 "pixels")
                Image.MAX_IMAGE_PIXELS = max_pixels.value
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise SizeLimitError(f"{path}: {err} (Pillow's guard, set to {max_pixels.binding}={max_pixels.value}); "
                             "raise it if the file is genuine") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def decode_image(path: str, max_pixels: Limit) -> np.ndarray:
    """An image file -> [H, W] or [H, W, C] uint8 (palette images as RGBA), within max_pixels
    (checked_image)."""
    with checked_image(path, max_pixels) as img:
        img.load()
        return np.asarray(img.convert("RGBA") if img.mode == "P" else img)


def check_image_arrays(path: str, max_pixels: Limit, max_bytes: Limit):
    """An .npz of images: each array within max_bytes, each image ([N, H, W(, C)] rows) within max_pixels."""
    def rows(key: str, declared: Declared):
        if declared.shape is not None and len(declared.shape) >= 3:
            height, width = declared.shape[1:3]
            max_pixels.check(path, f"{member_text(key, declared)}: each image", height * width, "pixels")

    check_arrays(path, max_bytes, rows)


INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}
FAST_MODES = ("L", "LA", "RGB", "RGBA", "P", "CMYK", "YCbCr")  # 8-bit images: decoded straight to uint8


def train_transform(img_size: int, min_scale: float, augment: bool, interpolation: str = "bilinear"):
    """MAE pretraining augmentation (RandomResizedCrop + flip) or a plain resize for probes, on
    float tensors: arrays that are not uint8, and uint8 arrays with output='float'."""
    mode = INTERPOLATIONS[interpolation]
    if augment:
        return T.Compose([T.RandomResizedCrop(img_size, scale=(min_scale, 1.0), interpolation=mode, antialias=True),
                          T.RandomHorizontalFlip()])
    return T.Resize((img_size, img_size), interpolation=mode, antialias=True)


def finetune_transform(img_size: int, min_scale: float, interpolation: str, rand_augment: Optional[str],
                       random_erasing: float, mean, std):
    """MAE's fine-tuning augmentation through timm's create_transform (as MAE's main_finetune.py
    builds it): RandomResizedCrop(scale=(min_scale, 1)) + flip, RandAugment (`rand_augment`, e.g.
    'rand-m9-mstd0.5-inc1'), ToTensor + Normalize, then random erasing (probability
    `random_erasing`, per-pixel noise, one box). PIL image -> [C, img_size, img_size] float."""
    from timm.data import create_transform

    return create_transform(img_size, is_training=True, scale=(min_scale, 1.0), hflip=0.5,
                            auto_augment=rand_augment or None, interpolation=interpolation, re_prob=random_erasing,
                            re_mode="pixel", re_count=1, mean=tuple(mean), std=tuple(std))


def crop_box(height: int, width: int, scale: Sequence[float], ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple:
    """(top, left, h, w) of a random resized crop: torchvision's RandomResizedCrop.get_params itself,
    so the same torch draws, and the same box for the same seed, as the transform."""
    return RandomResizedCrop.get_params(torch.empty(0, height, width), list(scale), list(ratio))


def draft_factor(box_height: int, box_width: int, size: int) -> int:
    """The largest JPEG DCT-domain reduction 1/s (s = 8, 4, 2) after which the crop box is still at
    least `size` pixels on both sides, so the resize to `size` stays a downscale; 1 for none."""
    for s in (8, 4, 2):
        if min(box_height, box_width) >= s * size:
            return s
    return 1


def resized(image: torch.Tensor, size: int, interpolation: str, flip: bool) -> torch.Tensor:
    """uint8 [C, h, w] (a crop) -> [C, size, size], antialiased as Pillow (torch's uint8 kernels
    differ from Pillow's by at most 1-2 levels), flipped if asked; never the input's memory."""
    if tuple(image.shape[1:]) != (size, size):
        image = torch.nn.functional.interpolate(image[None], size=(size, size), mode=interpolation, antialias=True)[0]
    return image.flip(-1).contiguous() if flip else image.clone(memory_format=torch.contiguous_format)


def normalizer(mean: Sequence[float], std: Sequence[float]) -> tuple:
    """(scale, shift) [C, 1, 1] with x * scale + shift = (x / 255 - mean) / std, for normalized()."""
    mean, std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    return 1 / (255 * std), -mean / std


def normalized(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 -> float (x / 255 - mean) / std, constants from normalizer() (on x's device)."""
    return torch.addcmul(shift, x.float(), scale)


def uint8_tensor(array: np.ndarray) -> torch.Tensor:
    """[H, W, C] uint8, read-only as Pillow hands it over -> a [C, H, W] view of it, read only here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(array).permute(2, 0, 1)


@gin.configurable
class ImageDataset(SampleDataset):
    """Folders (recursive; class sub-folders give labels), image files, or .npz arrays with
    `x_<split>`/`y_<split>` (or `x`/`y`, `images`/`labels`) keys. Yields {'image' [C,H,W], 'label'}.

    split: 'train' | 'val' | 'test', found as unimask/files.py describes (split folders,
    <class>/<split>/, list files side by side) or in `test_root` (for every split but train).
    max_pixels / max_array_bytes: size guards (modalities/limits.py): an image whose header
    declares more pixels, or an .npz whose arrays declare more bytes, is refused before decoding.

    Augmentation: RandomResizedCrop(img_size, scale=(min_scale, 1)) + horizontal flip (augment),
    else the whole image resized; `interpolation` 'bilinear' (default) or 'bicubic' (MAE's).
    Image files take the fast path: the crop box is drawn from the header's size first (the
    same torch draws as torchvision's transform), the file decoded as uint8, the box alone resized
    once (torch's uint8 kernel, antialiased as Pillow's) and flipped. draft=True lets a JPEG
    decode at 1/2, 1/4 or 1/8 scale in the DCT domain where the box stays at least img_size on
    both sides after it (the pixels change a little, see docs/performance.md: off by default).
    output='uint8' yields uint8 images, normalized by ImageAdapter on the model's device (its
    mean/std; this dataset's mean/std are then unused, so setting them is an error): for images
    that go straight to ImageAdapter.tokenize (pretraining), not through Classifier's mixup /
    cutmix or CropPairs' crops, which take floats. Arrays (.npz) keep the float path unless
    output='uint8'."""

    def __init__(self, root=gin.REQUIRED, img_size: int = 224, in_chans: int = 3, split: str = "train",
                 augment: bool = True, min_scale: float = 0.2, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, skip_bad_samples: bool = False, limit: Optional[int] = None,
                 test_root=None, max_pixels: Optional[int] = MAX_PIXELS,
                 max_array_bytes: Optional[int] = MAX_ARRAY_BYTES, interpolation: str = "bilinear",
                 output: str = "float", draft: bool = False, rand_augment: Optional[str] = None,
                 random_erasing: float = 0.0):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"ImageDataset.interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
        if output not in ("float", "uint8"):
            raise ValueError(f"ImageDataset.output must be 'float' or 'uint8', got {output!r}")
        timm_augment = bool(rand_augment) or random_erasing > 0
        if timm_augment and (not augment or output != "float"):
            raise ValueError("ImageDataset.rand_augment / random_erasing (fine-tuning's augmentation) need "
                             "augment=True and output='float'")
        if output == "uint8" and (mean is not None or std is not None):
            raise ValueError("ImageDataset.mean/std are unused with output='uint8' (ImageAdapter normalizes on the "
                             "device): set ImageAdapter.mean/std instead")
        self.in_chans, self.skip_bad_samples = in_chans, skip_bad_samples
        self.img_size, self.min_scale, self.augment = img_size, min_scale, augment
        self.interpolation, self.output, self.draft = interpolation, output, draft
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
        self.transform = train_transform(img_size, min_scale, augment, interpolation)
        mean, std = default_norm(in_chans, mean, std)
        self.finetune_transform = finetune_transform(img_size, min_scale, interpolation, rand_augment, random_erasing,
                                                     mean, std) if timm_augment else None
        self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
        self.scale_shift = normalizer(mean, std)

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

    def plan(self, height: int, width: int) -> tuple:
        """The crop box (top, left, h, w) and the flip of one sample: the draws of the transform
        (crop, then flip), or the whole image unflipped without augmentation."""
        if not self.augment:
            return (0, 0, height, width), False
        box = crop_box(height, width, (self.min_scale, 1.0))
        return box, bool(torch.rand(1) < 0.5)

    def crop_file(self, path: str) -> tuple:
        """A file -> (its crop [h, w(, C)] uint8, flip): the box drawn from the header's size, then
        only the box leaves Pillow. A JPEG whose box allows it (draft) decodes at 1/f (f = 2, 4,
        8) and the box's edges move to the nearest multiple of f (at most f/2 pixels: a crop as
        likely as the drawn one). (The whole image, None) for an image that is not 8-bit: no
        draws, the float path."""
        with checked_image(path, self.max_pixels) as img:
            if img.mode not in FAST_MODES:
                img.load()
                return np.asarray(img), None
            full_width = img.width
            (top, left, height, width), flip = self.plan(img.height, full_width)
            edges = (left, top, left + width, top + height)
            factor = draft_factor(height, width, self.img_size) if self.draft and img.format == "JPEG" else 1
            reduced = img.draft(img.mode, (full_width // factor, img.height // factor)) if factor > 1 else None
            if reduced is not None:  # pixel j of the reduced image covers the original's [j*f, (j+1)*f)
                factor = round(full_width / reduced[1][2])
                edges = tuple(min(round(edge / factor), limit) for edge, limit in zip(edges, img.size * 2))
            img = img.crop(edges)
            if img.mode in ("P", "CMYK", "YCbCr"):
                img = img.convert("RGBA" if img.mode == "P" else "RGB")
            return np.asarray(img), flip

    def load(self, index):
        path, label, row = self.items[index]
        if self.finetune_transform is not None:  # timm's pipeline on the whole decoded image
            array = to_channels(self.read(index), self.in_chans, self.describe(index))
            image = self.finetune_transform(Image.fromarray(array[..., 0] if self.in_chans == 1 else array))
            return {"image": image, "label": -1 if label is None else label}
        flip = None  # stays None on the float path
        if row is None:
            array, flip = self.crop_file(path)
        else:
            array = self.read(index)
            if self.output == "uint8" and array.dtype == np.uint8:
                (top, left, height, width), flip = self.plan(*array.shape[:2])
                array = array[top:top + height, left:left + width]
        if flip is None and self.output == "uint8":
            raise ValueError(f"{self.describe(index)}: a {array.dtype} image; ImageDataset.output='uint8' takes "
                             "8-bit images only")
        array = to_channels(array, self.in_chans, self.describe(index))
        if flip is not None:  # uint8 all the way: the crop, one resize, the flip
            image = resized(uint8_tensor(array), self.img_size, self.interpolation, flip)
            if self.output == "float":
                image = normalized(image, *self.scale_shift)
        else:
            image = torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 255.0  # [C, H, W]
            image = (self.transform(image) - self.mean) / self.std
        return {"image": image, "label": -1 if label is None else label}


@gin.configurable
class ImageAdapter(GridAdapter):
    """Square images -> (img_size / patch_size)^2 patch tokens with 2-D sin-cos positions, or a
    learned position table (pos_embed='learned', as supervised ViTs; it starts as sin-cos).

    uint8 batches (ImageDataset.output='uint8') are normalized here, on their device, with
    mean/std (ImageNet's for RGB, 0.5 otherwise, as ImageDataset's defaults); float batches are
    taken as they come, already normalized."""

    batch_key = "image"

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, dim: int = 768,
                 pos_embed: str = "sincos", pos_axes: str = "ij", mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None):
        check_divisible((("ImageAdapter.img_size", img_size), ("ImageAdapter.patch_size", patch_size)))
        super().__init__((patch_size, patch_size), in_chans, dim, (img_size // patch_size,) * 2, pos_embed, pos_axes)
        self.img_size = img_size
        mean, std = default_norm(in_chans, mean, std)
        self.pixel_norm = {"cpu": normalizer(mean, std)}  # device -> (scale, shift) [C, 1, 1]
        self.pixel_mean, self.pixel_std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> float, normalized on x's device (constants cached per device)."""
        key = str(x.device)
        if key not in self.pixel_norm:
            self.pixel_norm[key] = tuple(t.to(x.device) for t in self.pixel_norm["cpu"])
        return normalized(x, *self.pixel_norm[key])

    def float_input(self, batch):
        """A uint8 batch normalized to floats (mixup and cutmix blend normalized pixels, as MAE's
        fine-tuning does after its Normalize); a float batch unchanged."""
        x = batch[self.batch_key] if isinstance(batch, dict) else batch
        if x.dtype != torch.uint8:
            return batch
        x = self.normalize(x)
        return {**batch, self.batch_key: x} if isinstance(batch, dict) else x

    def tokenize(self, batch):
        x = batch[self.batch_key] if isinstance(batch, dict) else batch
        check_input(x, (self.in_chans, self.img_size, self.img_size), "image (ImageAdapter.img_size/in_chans)")
        return super().tokenize(self.float_input(batch))

    def dense_input(self, tokens: Tokens) -> torch.Tensor:
        """Patches [B, N, P] back to images [B, C, H, W] in [0, 1] (mean/std undone), for a teacher
        from outside (timm, Hugging Face) that normalizes with its own constants."""
        x = unpatchify(tokens.patches.float(), tokens.grid, self.patch, self.in_chans)
        return (x * self.pixel_std.to(x.device) + self.pixel_mean.to(x.device)).clamp(0, 1)

    def render(self, tokens, pred, mask, path):
        return save_rows([self.panels(tokens, pred, mask)], path, columns=PANELS)
