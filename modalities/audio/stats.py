"""Mean and std of a data set's log-mel features (AudioDataset.mean / .std; tools/audio_stats.py):
AudioMAE normalizes fbanks by its data's statistics, so a new data set needs its own."""
from __future__ import annotations


def feature_stats(root, sample_rate: int = 16000, num_mel_bins: int = 128, limit=None) -> dict:
    """-> {'mean', 'std', 'frames', 'files'} of the fbank values of the files under root."""
    import torch

    from modalities.audio.decode import AUDIO_EXTS, load_waveform
    from modalities.audio.features import fbank
    from unimask.files import list_files

    total, total_sq, count, files = 0.0, 0.0, 0, 0
    for path, _ in list_files(root, AUDIO_EXTS)[:limit]:
        features = fbank(load_waveform(path, sample_rate, 0.025), sample_rate, num_mel_bins).double()
        total, total_sq = total + float(features.sum()), total_sq + float((features ** 2).sum())
        count, files = count + features.numel(), files + 1
    if count == 0:
        raise ValueError(f"{root}: no audio frames")
    mean = total / count
    return {"mean": mean, "std": float(torch.tensor(total_sq / count - mean * mean).clamp(min=0).sqrt()),
            "frames": count // num_mel_bins, "files": files}
