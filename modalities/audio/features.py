"""Waveforms -> AudioMAE's log-mel filterbank features, and back (approximately) for listening.

Features are Kaldi fbanks as AudioMAE computes them (facebookresearch/AudioMAE dataset.py
_wav2fbank): the waveform's mean removed, torchaudio.compliance.kaldi.fbank with htk_compat,
a Hanning window, no energy, no dither, 25 ms windows every 10 ms, 128 mel bins; then cut or
zero-padded at the end to `target_length` frames and normalized as (fbank - mean) / (2 * std)
(AudioMAE divides by twice the std; AudioSet's mean and std are -4.2677393 and 4.5689974).
10 s at 16 kHz gives 998 frames, padded to 1024: a [1024, 128] time x frequency image.
"""
from __future__ import annotations

import torch

AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974


def fbank(wave: torch.Tensor, sample_rate: int, num_mel_bins: int = 128, frame_shift_ms: float = 10.0,
          frame_length_ms: float = 25.0) -> torch.Tensor:
    """wave [S] -> log-mel energies [frames, num_mel_bins] (AudioMAE's settings)."""
    from torchaudio.compliance import kaldi

    wave = (wave - wave.mean())[None].float()  # [1, S]
    return kaldi.fbank(wave, htk_compat=True, sample_frequency=sample_rate, use_energy=False, window_type="hanning",
                       num_mel_bins=num_mel_bins, dither=0.0, frame_shift=frame_shift_ms,
                       frame_length=frame_length_ms)


def fit_frames(features: torch.Tensor, target_length: int, start: int = 0) -> torch.Tensor:
    """[frames, F] -> [target_length, F]: frames from `start` on, zero-padded at the end (after
    normalization the padding is (0 - mean) / 2std, as in AudioMAE, where padding precedes it)."""
    features = features[start:start + target_length]
    if len(features) < target_length:
        features = torch.nn.functional.pad(features, (0, 0, 0, target_length - len(features)))
    return features


def normalize(features: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (features - mean) / (2 * std)


def denormalize(features: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return features * (2 * std) + mean


def griffin_lim(log_mel: torch.Tensor, sample_rate: int, frame_shift_ms: float = 10.0,
                frame_length_ms: float = 25.0, iterations: int = 32) -> torch.Tensor:
    """An approximate waveform [S] from log-mel energies [frames, M] (un-normalized): the mel
    scale inverted by least squares (torchaudio's InverseMelScale) and the phase by Griffin-Lim.
    Kaldi's pre-emphasis and povey details are not inverted: this is for listening, not metrics."""
    import warnings

    import torchaudio.transforms as TT

    win, hop = int(sample_rate * frame_length_ms / 1000), int(sample_rate * frame_shift_ms / 1000)
    n_fft = 1 << (win - 1).bit_length()  # Kaldi rounds the window up to a power of two
    power = log_mel.float().exp().T  # [M, frames] mel power
    with warnings.catch_warnings():  # "a mel filterbank has all zero values": the lowest bands, narrower than a bin
        warnings.simplefilter("ignore", UserWarning)
        inverse = TT.InverseMelScale(n_stft=n_fft // 2 + 1, n_mels=power.shape[0], sample_rate=sample_rate,
                                     f_min=20.0, mel_scale="htk", driver="gelsd")  # gelsd: rank-deficient low bands
        linear = inverse(power).clamp(min=0)  # [n_fft/2 + 1, frames]
    return TT.GriffinLim(n_fft=n_fft, win_length=win, hop_length=hop, power=2.0, n_iter=iterations)(linear)
