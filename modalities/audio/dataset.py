"""AudioDataset: audio files -> normalized log-mel spectrograms [1, frames, mel bins] (AudioMAE).

Decoding and features run in DataLoader workers. Training takes a random window of
`clip_seconds` from a longer file (AudioMAE trains on whole 10 s AudioSet clips, which the
window then covers); probes take the centred window. Shorter files are zero-padded.
"""
from __future__ import annotations

from typing import Optional

import gin
import numpy as np
import torch

from modalities.audio.decode import AUDIO_EXTS, load_waveform
from modalities.audio.features import AUDIOSET_MEAN, AUDIOSET_STD, fbank, fit_frames, normalize
from modalities.limits import MAX_SAMPLES, MAX_SECONDS, Limit
from unimask.data import SampleDataset
from unimask.files import check_split, list_split_files


@gin.configurable
class AudioDataset(SampleDataset):
    """A folder of audio files (class sub-folders give labels, as ImageFolder; split folders,
    test_root and list files as every dataset, unimask/files.py) or an AudioSet-style CSV/TSV list
    of `path,label` rows (names through a classes.txt beside it). Yields {'fbank': [1, T, F], 'label'}.

    sample_rate: every file is resampled to it (16 kHz in AudioMAE); any channel count is mixed
    down. clip_seconds: the window read from each file; target_length: frames of the spectrogram
    (AudioMAE: 10 s -> 1024); num_mel_bins: 128. mean / std: the fbank statistics of the data,
    AudioSet's by default (tools/audio_stats.py computes them for other data).
    augment: a random window of longer files, and shorter ones placed at a random offset in the
    window (probes: the centred window, short files at its start, as AudioMAE pads);
    roll_and_gain: AudioMAE's roll_mag_aug (the waveform rolled by a random shift and scaled by
    Beta(10, 10) + 0.5), on top of augment.
    max_seconds / max_samples: size guards: a file whose header declares a longer duration, or
    more values (frames x channels), is refused before decoding (modalities/limits.py).
    """

    def __init__(self, root=gin.REQUIRED, sample_rate: int = 16000, clip_seconds: float = 10.0,
                 target_length: int = 1024, num_mel_bins: int = 128, frame_shift_ms: float = 10.0,
                 frame_length_ms: float = 25.0, mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD,
                 augment: bool = True, roll_and_gain: bool = False, split: str = "train", test_root=None,
                 skip_bad_samples: bool = False, limit: Optional[int] = None,
                 max_seconds: Optional[float] = MAX_SECONDS, max_samples: Optional[int] = MAX_SAMPLES):
        check_split(split, "AudioDataset.split")
        if clip_seconds <= 0 or target_length < 1 or num_mel_bins < 1:
            raise ValueError(f"AudioDataset needs clip_seconds > 0, target_length >= 1 and num_mel_bins >= 1, got "
                             f"{clip_seconds}, {target_length}, {num_mel_bins}")
        if not std > 0:
            raise ValueError(f"AudioDataset.std={std} must be > 0")
        self.items, self.source = list_split_files(root, AUDIO_EXTS, split, test_root)
        self.items = self.items[:limit] if limit is not None else self.items
        self.sample_rate, self.clip_seconds, self.target_length = sample_rate, clip_seconds, target_length
        self.num_mel_bins, self.frame_shift_ms, self.frame_length_ms = num_mel_bins, frame_shift_ms, frame_length_ms
        self.mean, self.std, self.augment, self.skip_bad_samples = mean, std, augment, skip_bad_samples
        self.roll_and_gain = roll_and_gain
        self.limits = (Limit(max_seconds, "AudioDataset.max_seconds"), Limit(max_samples, "AudioDataset.max_samples"))

    def window(self, wave: torch.Tensor) -> tuple:
        """The clip_seconds of a waveform [S] -> (samples, frames of padding before them): a random
        start in a longer file, a random place for a shorter one when augmenting (seeded per
        sample by SampleDataset); the centre of a longer file, the start for a shorter one else."""
        length = int(round(self.clip_seconds * self.sample_rate))
        spare = abs(len(wave) - length)
        offset = int(np.random.randint(spare + 1)) if self.augment else (spare // 2 if len(wave) > length else 0)
        if len(wave) > length:
            return wave[offset:offset + length], 0
        return wave, offset // int(self.sample_rate * self.frame_shift_ms / 1000)

    def spectrogram(self, path: str) -> torch.Tensor:
        """One file -> normalized fbank [1, target_length, num_mel_bins]."""
        wave = load_waveform(path, self.sample_rate, self.frame_length_ms / 1000, *self.limits)
        if self.roll_and_gain:
            wave = torch.roll(wave, int(np.random.randint(len(wave)))) * float(np.random.beta(10, 10) + 0.5)
        wave, lead = self.window(wave)
        features = fbank(wave, self.sample_rate, self.num_mel_bins, self.frame_shift_ms, self.frame_length_ms)
        features = torch.nn.functional.pad(features, (0, 0, lead, 0))  # a short clip placed later in the window
        return normalize(fit_frames(features, self.target_length), self.mean, self.std)[None]

    def load(self, index):
        path, label = self.items[index]
        return {"fbank": self.spectrogram(path), "label": -1 if label is None else label}
