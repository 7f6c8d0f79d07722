#!/usr/bin/env python
"""Mean and std of the log-mel features of an audio data set, for AudioDataset.mean / .std.

    python tools/audio_stats.py --root data/sample/audio/digits [--sample-rate 16000]
        [--num-mel-bins 128] [--limit 2000]

AudioMAE normalizes fbanks by the statistics of its data (AudioSet: -4.2677 / 4.5690, the
defaults). This computes them for yours over the real frames of every file (padding is not
counted), with the same decoding and fbank settings as AudioDataset, and prints the gin
bindings to use (the audio recipes read the macros FBANK_MEAN and FBANK_STD).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, action="append", help="folder or list file (repeatable)")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--num-mel-bins", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N files")
    args = parser.parse_args(argv)
    stats = feature_stats(args.root, args.sample_rate, args.num_mel_bins, args.limit)
    print(f"{stats['files']} files, {stats['frames']} frames: mean {stats['mean']:.6f}, std {stats['std']:.6f}")
    print(f"--gin_param FBANK_MEAN={stats['mean']:.6f} --gin_param FBANK_STD={stats['std']:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
