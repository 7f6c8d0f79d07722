"""Video: folders or Kinetics/SSv2 list files -> tubelet tokens (VideoMAE, VideoMAE v2).

Decoding (modalities/video_decode.py) uses decord where it imports (x86_64 wheels) and PyAV
elsewhere, both seeking to the sampled frames. One decoded video yields `repeats` clips
(VideoMAE v2 repeated sampling) so decode cost is amortized.
"""
from __future__ import annotations

from typing import Optional, Sequence

import gin
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import RandomResizedCrop

from modalities.grid import GridAdapter, check_divisible, check_input, default_norm, PANELS, save_rows
from unimask.patches import unpatchify
from modalities.limits import MAX_FRAME_PIXELS, MAX_FRAMES, Limit, SizeLimitError
from modalities.video_decode import VideoReader, set_decoder_logging
from unimask.data import SampleDataset
from unimask.files import check_split, has_split, list_split_files

VIDEO_EXTS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")


def sample_indices(count: int, num_frames: int, stride: int, rng: np.random.Generator, path: str,
                   position: Optional[float] = None) -> np.ndarray:
    """VideoMAE sampling: num_frames frames `stride` apart -> [num_frames]; the window starts at
    random, or at `position` in [0, 1] of the possible starts (evenly spaced probe clips)."""
    window = (num_frames - 1) * stride + 1
    if count < window:
        raise ValueError(f"{path}: {count} frames is shorter than the sampling window "
                         f"of {window} ({num_frames} frames x stride {stride})")
    last = count - window
    start = int(rng.integers(0, last + 1)) if position is None else round(position * last)
    return start + np.arange(num_frames) * stride


class ClipTransform:
    """Decoded frames [T, H, W, 3] uint8 -> a normalized clip [3, T, img_size, img_size]: VideoMAE's
    one random resized crop + flip for all frames of a clip when augmenting, else the centred
    square resized (= resize the short side + centre crop).

    Why in this order: the crop is cut from the uint8 frames and resized in uint8 (torch's
    antialiased bilinear uint8 kernel), and only the img_size^2 result becomes float, in one
    multiply-add for /255 and the normalization. Converting whole frames to float first and
    resizing floats costs ~14x more per clip (320 x 426 frames, 16 of them: 45 -> 3 ms); the
    uint8 resize rounds to the nearest level (<= 1/255 from the float resize)."""

    def __init__(self, img_size: int, min_scale: float, augment: bool, mean=None, std=None):
        self.img_size, self.scale, self.augment = img_size, (min_scale, 1.0), augment
        mean, std = default_norm(3, mean, std)
        mean, std = torch.tensor(mean)[:, None, None, None], torch.tensor(std)[:, None, None, None]
        self.mul, self.add = 1.0 / (255.0 * std), -mean / std  # (x / 255 - mean) / std = x * mul + add

    def crop_box(self, height: int, width: int) -> tuple:
        """(top, left, h, w) of the region to resize: random (RandomResizedCrop's scale and 3/4-4/3
        aspect) when augmenting, else the centred square."""
        if self.augment:
            return RandomResizedCrop.get_params(torch.empty(1, height, width), list(self.scale), [3 / 4, 4 / 3])
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        top, left, h, w = self.crop_box(frames.shape[1], frames.shape[2])
        crop = torch.from_numpy(frames)[:, top:top + h, left:left + w].permute(0, 3, 1, 2)  # [T, 3, h, w] uint8
        clip = F.interpolate(crop, size=(self.img_size, self.img_size), mode="bilinear", antialias=True,
                             align_corners=False)
        if self.augment and torch.rand(()) < 0.5:
            clip = clip.flip(-1)
        clip = clip.permute(1, 0, 2, 3).float()  # [3, T, S, S]: one crop / flip for every frame
        return clip.mul_(self.mul).add_(self.add)


PROBES = ("reverse", "shuffle", "identity")
PROBE_SPANS = {"train": (0.0, 0.5), "val": (0.5, 0.7), "test": (0.7, 1.0)}  # probe windows: where they start


def reorder(indices: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    """Frame indices played backwards, or shuffled (never the identity) -> [T]."""
    if how == "reverse":
        return indices[::-1].copy()
    while True:
        out = rng.permutation(indices)
        if not np.array_equal(out, indices):
            return out


@gin.configurable
class VideoDataset(SampleDataset):
    """Folder of videos (recursive, class sub-folders give labels) or list file `path [label]`.

    Yields {'video': [C, T, H, W] (or [R, C, T, H, W] with repeats R > 1), 'label'}.

    clips_per_video=K makes K items of each video (random windows when augmenting, else K
    evenly spaced ones). probe= sets up a label-free video probe (no labeled video set is
    available offline): 'reverse' / 'shuffle' give every window twice, as played (label 0) and
    reversed or shuffled (label 1), so a probe on frozen features measures whether the encoder
    knows the arrow of time / temporal coherence (as in Wei et al. 2018; Misra et al. 2016);
    'identity' labels each window with the index of its video (which video is this clip from?).
    split: 'train' | 'val' | 'test' as unimask/files.py finds them (split folders, list files
    side by side such as Kinetics' train.csv / val.csv, or `test_root`). A probe on data without
    a split of its own uses the same videos: split='train' takes windows from the first half of
    each video and split='test' from the last 30%, so test clips are not near-copies of train clips.
    max_frames / max_pixels: size guards on what a file's container header declares (frames,
    pixels a frame), checked before decoding (modalities/limits.py).
    """

    def __init__(self, root=gin.REQUIRED, num_frames: int = 16, sampling_rate: int = 4, img_size: int = 224,
                 repeats: int = 1, min_scale: float = 0.25, augment: bool = True,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 skip_bad_samples: bool = False, backend: str = "auto", clips_per_video: int = 1,
                 probe: Optional[str] = None, split: str = "train", verbose_decode: bool = False,
                 test_root=None, max_frames: Optional[int] = MAX_FRAMES, max_pixels: Optional[int] = MAX_FRAME_PIXELS):
        if verbose_decode:
            set_decoder_logging(True)
        if probe not in (None,) + PROBES:
            raise ValueError(f"VideoDataset.probe={probe!r}: use one of {PROBES} or None")
        if clips_per_video < 1:
            raise ValueError(f"VideoDataset.clips_per_video={clips_per_video} must be >= 1")
        check_split(split, "VideoDataset.split")
        # a label-free probe on one set of videos: train and test are different windows of them
        self.windows_split = probe is not None and not has_split(root, "test", test_root)
        if self.windows_split:
            videos, source = list_split_files(root, VIDEO_EXTS, "train")
            self.source = f"{split}: windows {PROBE_SPANS[split]} of " + source.split(": ", 1)[1]
        else:
            videos, self.source = list_split_files(root, VIDEO_EXTS, split, test_root)
        versions = (0, 1) if probe in ("reverse", "shuffle") else (None,)

        def item_label(label, video, altered):  # a probe sets the label
            if altered is not None:  # order probes: 0 as played, 1 reversed / shuffled
                return altered
            return video if probe == "identity" else label

        # (path, label, window slot, altered order or None)
        self.items = [(path, item_label(label, video, altered), slot, altered)
                      for video, (path, label) in enumerate(videos)
                      for slot in range(clips_per_video) for altered in versions]
        self.clips_per_video, self.probe, self.augment, self.split = clips_per_video, probe, augment, split
        self.num_frames, self.stride, self.repeats = num_frames, sampling_rate, repeats
        self.samples_per_item, self.skip_bad_samples, self.backend = repeats, skip_bad_samples, backend
        self.frames_to_clip = ClipTransform(img_size, min_scale, augment, mean, std)
        self.limits = (Limit(max_frames, "VideoDataset.max_frames"), Limit(max_pixels, "VideoDataset.max_pixels"))

    def window_position(self, slot: int) -> Optional[float]:
        """Where clip `slot` of a video starts, in [0, 1] of the possible starts; None = random."""
        if self.augment:
            return None
        lo, hi = PROBE_SPANS[self.split] if self.probe and self.windows_split else (0.0, 1.0)
        if self.clips_per_video == 1:
            return (lo + hi) / 2
        return lo + (hi - lo) * slot / (self.clips_per_video - 1)

    def load(self, index):
        path, label, slot, altered = self.items[index]
        try:
            reader = VideoReader(path, self.backend, *self.limits)
        except SizeLimitError:
            raise
        except Exception as err:
            raise ValueError(f"cannot decode the video: {err}") from err
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        position = self.window_position(slot)
        windows = []
        for _ in range(self.repeats):
            indices = sample_indices(len(reader), self.num_frames, self.stride, rng, path, position)
            if altered:
                indices = reorder(indices, self.probe, np.random.default_rng(index))  # fixed per item
            windows.append(indices)
        # every repeat's frames in one pass over the file: decoded once, in order (no seeking back)
        wanted, where = np.unique(np.concatenate(windows), return_inverse=True)
        frames = reader.get(wanted)  # [U, H, W, 3]
        clips = [self.frames_to_clip(frames[rows]) for rows in np.split(where, self.repeats)]
        video = clips[0] if self.repeats == 1 else torch.stack(clips)
        return {"video": video, "label": -1 if label is None else label}


@gin.configurable
class VideoAdapter(GridAdapter):
    """Clips [B, 3, T, H, W] -> tubelets (tubelet_size x patch x patch) on a (T', H', W') grid.
    num_frames=None takes clips of any length that the tubelet divides (OmniMAE: an image is a
    clip of one tubelet, a video one of many, through the same patch embedding)."""

    batch_key = "video"

    def __init__(self, num_frames: Optional[int] = 16, img_size: int = 224, patch_size: int = 16,
                 tubelet_size: int = 2, in_chans: int = 3, dim: int = 768, pos_embed: str = "sincos"):
        """pos_embed='learned': a learned table over the (T', H', W') grid (fine-tuning from
        VideoMAE, whose fixed table is a 1-D sinusoid over the token index), else 3-D sin-cos."""
        check_divisible((("VideoAdapter.num_frames", num_frames or tubelet_size), ("VideoAdapter.tubelet_size",
                                                                                    tubelet_size)),
                        (("VideoAdapter.img_size", img_size), ("VideoAdapter.patch_size", patch_size)))
        grid = ((num_frames // tubelet_size) if num_frames else None,) + (img_size // patch_size,) * 2
        super().__init__((tubelet_size, patch_size, patch_size), in_chans, dim, grid, pos_embed)
        self.num_frames, self.img_size = num_frames, img_size

    def tokenize(self, batch):
        x = batch[self.batch_key] if isinstance(batch, dict) else batch
        clips = x.flatten(0, 1) if x.dim() == 6 else x
        frames = self.num_frames if self.num_frames is not None else clips.shape[2]
        check_input(clips, (self.in_chans, frames, self.img_size, self.img_size),
                    "video (VideoAdapter.in_chans/num_frames/img_size)")
        return super().tokenize(batch)

    def labels(self, batch):
        label = batch.get("label")
        video = batch[self.batch_key]
        if label is not None and video.dim() == 6:  # repeated sampling: one label per clip
            label = label.repeat_interleave(video.shape[1])
        return label

    def render(self, tokens, pred, mask, path):
        """Time strip: rows input / masked / reconstruction, one column per tubelet start frame."""
        rows = [[clip[:, t] for t in range(0, clip.shape[1], self.patch[0])] for clip in self.panels(tokens, pred, mask)]
        return save_rows(rows, path, row_names=PANELS)


__all__ = ["VideoDataset", "VideoAdapter", "unpatchify"]
