"""AudioVisualDataset: videos with a sound track -> frames and the sound of the same moments
(CAV-MAE's masked reconstruction part: Gong et al., ICLR 2023).

One window per item: `num_frames` frames `sampling_rate` apart (VideoMAE's sampling, one crop
and flip for the clip), and the audio between the window's first frame and the end of its last,
as AudioMAE's normalized log-mel fbank. Frames are decoded with decord or PyAV, the audio stream
with PyAV (the container's AAC / Vorbis / Opus track).
"""
from __future__ import annotations

from typing import Optional, Sequence

import gin
import numpy as np
import torch

from modalities.audio.decode import check_samples, read_pyav
from modalities.audio.features import AUDIOSET_MEAN, AUDIOSET_STD, fbank, fit_frames, normalize
from modalities.limits import MAX_FRAME_PIXELS, MAX_FRAMES, MAX_SAMPLES, MAX_SECONDS, Limit
from modalities.video import VIDEO_EXTS, ClipTransform, VideoReader, sample_indices
from unimask.data import SampleDataset
from unimask.files import check_split, list_split_files


def audio_between(path: str, start_s: float, end_s: float, sample_rate: int, limits: tuple = ()) -> torch.Tensor:
    """The file's sound track from start_s to end_s, mono at sample_rate -> [S] float32.
    limits: (max_seconds, max_samples) Limits of the whole track (read_pyav's size guard)."""
    samples, rate = read_pyav(path, *limits)
    check_samples(samples, rate, 1)
    wave = torch.from_numpy(np.ascontiguousarray(samples.mean(0)))
    if rate != sample_rate:
        import torchaudio.functional as AF

        wave = AF.resample(wave, rate, sample_rate)
    first, last = int(round(start_s * sample_rate)), int(round(end_s * sample_rate))
    if first >= len(wave):
        raise ValueError(f"the sound track ends at {len(wave) / sample_rate:.2f} s, before the window at {start_s:.2f} s")
    return wave[first:last]


@gin.configurable
class AudioVisualDataset(SampleDataset):
    """Folders or list files of videos with sound (splits as every dataset). Yields {'video':
    [3, num_frames, img_size, img_size], 'audio': [1, target_length, num_mel_bins], 'label'}.
    Video settings as VideoDataset, audio settings as AudioDataset (the audio window is the
    clip's duration; target_length frames of 10 ms cover it, zero-padded past it).
    max_frames / max_pixels / max_seconds / max_samples: size guards on what a file declares
    (as VideoDataset's and AudioDataset's; the sound track is decoded whole), modalities/limits.py."""

    def __init__(self, root=gin.REQUIRED, num_frames: int = 8, sampling_rate: int = 4, img_size: int = 112,
                 min_scale: float = 0.5, augment: bool = True, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, sample_rate: int = 16000, target_length: int = 128,
                 num_mel_bins: int = 128, fbank_mean: float = AUDIOSET_MEAN, fbank_std: float = AUDIOSET_STD,
                 split: str = "train", test_root=None, backend: str = "auto", skip_bad_samples: bool = False,
                 max_frames: Optional[int] = MAX_FRAMES, max_pixels: Optional[int] = MAX_FRAME_PIXELS,
                 max_seconds: Optional[float] = MAX_SECONDS, max_samples: Optional[int] = MAX_SAMPLES):
        check_split(split, "AudioVisualDataset.split")
        self.items, self.source = list_split_files(root, VIDEO_EXTS, split, test_root)
        self.num_frames, self.stride, self.augment, self.backend = num_frames, sampling_rate, augment, backend
        self.frames_to_clip = ClipTransform(img_size, min_scale, augment, mean, std)
        self.sample_rate, self.target_length, self.num_mel_bins = sample_rate, target_length, num_mel_bins
        self.fbank_mean, self.fbank_std, self.skip_bad_samples = fbank_mean, fbank_std, skip_bad_samples
        self.video_limits = (Limit(max_frames, "AudioVisualDataset.max_frames"),
                             Limit(max_pixels, "AudioVisualDataset.max_pixels"))
        self.audio_limits = (Limit(max_seconds, "AudioVisualDataset.max_seconds"),
                             Limit(max_samples, "AudioVisualDataset.max_samples"))

    def load(self, index):
        path, label = self.items[index]
        reader = VideoReader(path, self.backend, *self.video_limits)
        if not reader.fps > 0:
            raise ValueError("has no frame rate: the sound cannot be aligned with the frames")
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        indices = sample_indices(len(reader), self.num_frames, self.stride, rng, path, None if self.augment else 0.5)
        wave = audio_between(path, indices[0] / reader.fps, (indices[-1] + 1) / reader.fps, self.sample_rate,
                             self.audio_limits)
        features = fit_frames(fbank(wave, self.sample_rate, self.num_mel_bins), self.target_length)
        return {"video": self.frames_to_clip(reader.get(indices)),
                "audio": normalize(features, self.fbank_mean, self.fbank_std)[None],
                "label": -1 if label is None else label}
