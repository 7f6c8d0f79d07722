"""Audio files -> mono float waveforms at the recipe's sample rate.

soundfile (libsndfile) reads WAV, FLAC, OGG/Vorbis, Opus and MP3; PyAV (FFmpeg) takes anything
soundfile cannot open (AAC in .m4a, the audio track of a video). torchaudio is used only to
resample: torchaudio.load needs torchcodec and an FFmpeg install, which this project does not
rely on. Every problem with a file is an error that says what is wrong; the dataset names it.
Sizes: the duration and samples (frames x channels) a file's header declares are checked against
the dataset's max_seconds / max_samples before decoding, and PyAV's decoding stops as soon as it
passes them (a stream need not declare its length) (modalities/limits.py).
"""
from __future__ import annotations

import numpy as np
import torch

from modalities.limits import MAX_SAMPLES, MAX_SECONDS, Limit, SizeLimitError
from unimask.shards import readable

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aiff", ".aif", ".au", ".webm",
              ".mp4", ".mkv")


SECONDS = Limit(MAX_SECONDS, "AudioDataset.max_seconds")
SAMPLES = Limit(MAX_SAMPLES, "AudioDataset.max_samples")


def check_audio_size(path: str, frames: int, channels: int, rate: float, max_seconds: Limit, max_samples: Limit,
                     what: str = "the audio header"):
    """Declared (or decoded so far) frames x channels at rate against both limits."""
    if rate and rate > 0:
        max_seconds.check(path, what, frames / rate, "seconds")
    max_samples.check(path, f"{what} ({frames:,} frames x {channels} channels)", frames * channels, "samples",
                      frames * channels * 4)


def read_soundfile(path: str, max_seconds: Limit = SECONDS, max_samples: Limit = SAMPLES) -> tuple:
    """-> (samples [C, S] float32, rate). A file that holds fewer frames than its header declares
    (a cut download) is an error, not a short clip."""
    import soundfile as sf

    info = sf.info(readable(path))
    check_audio_size(path, info.frames, info.channels, info.samplerate, max_seconds, max_samples)
    samples, rate = sf.read(readable(path), dtype="float32", always_2d=True)  # [S, C]
    if info.frames > 0 and len(samples) < info.frames:
        raise ValueError(f"truncated: the header declares {info.frames} frames, the file holds {len(samples)}")
    return samples.T, rate


def read_pyav(path: str, max_seconds: Limit = SECONDS, max_samples: Limit = SAMPLES) -> tuple:
    """-> (samples [C, S] float32, rate) of the first audio stream, with PyAV. The declared
    duration is checked first; decoding stops as soon as what it gave passes a limit."""
    import av

    with av.open(readable(path)) as container:
        if not container.streams.audio:
            raise ValueError("has no audio stream")
        stream = container.streams.audio[0]
        chunks, rate = [], stream.rate or stream.codec_context.sample_rate
        channels = getattr(stream.codec_context, "channels", None) or 1
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        else:
            seconds = container.duration / av.time_base if container.duration else 0.0
        check_audio_size(path, int(seconds * rate) if rate else 0, channels, rate, max_seconds, max_samples,
                         "the container header")
        decoded = 0  # frames (samples a channel) so far
        for frame in container.decode(stream):
            channels = len(frame.layout.channels)
            decoded += frame.samples
            check_audio_size(path, decoded, channels, rate, max_seconds, max_samples, "the audio stream (decoding)")
            array = frame.to_ndarray()  # planar [C, S], or packed [1, S * C]
            chunks.append(array if frame.format.is_planar else array.reshape(-1, channels).T)
    if not chunks:
        raise ValueError("has no decodable audio frames")
    samples = np.concatenate(chunks, axis=1)
    if samples.dtype.kind in "iu":  # integer PCM -> [-1, 1]
        samples = samples / float(np.iinfo(samples.dtype).max)
    return samples.astype(np.float32), int(rate)


def read_audio(path: str, max_seconds: Limit = SECONDS, max_samples: Limit = SAMPLES) -> tuple:
    """-> (samples [C, S] float32, rate): soundfile, then PyAV for what soundfile cannot open."""
    try:
        return read_soundfile(path, max_seconds, max_samples)
    except ValueError:
        raise
    except Exception as first:  # libsndfile: unknown format, or a broken stream
        try:
            return read_pyav(path, max_seconds, max_samples)
        except SizeLimitError:
            raise
        except Exception as second:
            raise ValueError(f"cannot be decoded (soundfile: {first}; PyAV: {second})") from None


def check_samples(samples: np.ndarray, rate: int, min_samples: int):
    """The bad inputs that would otherwise reach the model as zeros or NaN are errors here."""
    if samples.size == 0 or samples.shape[-1] == 0:
        raise ValueError("holds no samples (zero-length)")
    if not np.isfinite(samples).all():
        raise ValueError(f"{int((~np.isfinite(samples)).sum())} samples are NaN or infinite")
    if not np.any(samples):
        raise ValueError("is silent: every sample is 0")
    if samples.shape[-1] < min_samples:
        raise ValueError(f"is {samples.shape[-1]} samples long at {rate} Hz, shorter than one analysis window "
                         f"({min_samples} samples)")


def load_waveform(path: str, sample_rate: int, window_s: float, max_seconds: Limit = SECONDS,
                  max_samples: Limit = SAMPLES) -> torch.Tensor:
    """A file -> mono waveform [S] float32 at `sample_rate`: channels averaged, resampled with
    torchaudio's band-limited sinc (the length in seconds is kept). window_s: the analysis window,
    the shortest clip that gives one frame. max_seconds / max_samples: the size guard."""
    samples, rate = read_audio(path, max_seconds, max_samples)
    check_samples(samples, rate, int(np.ceil(window_s * rate)))
    wave = torch.from_numpy(np.ascontiguousarray(samples.mean(0)))  # mix down: [S]
    if rate != sample_rate:
        import torchaudio.functional as AF

        wave = AF.resample(wave, rate, sample_rate)
    return wave
