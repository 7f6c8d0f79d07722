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
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, action="append", help="folder or list file (repeatable)")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--num-mel-bins", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N files")
    args = parser.parse_args(argv)
    from modalities.audio.stats import feature_stats

    stats = feature_stats(args.root, args.sample_rate, args.num_mel_bins, args.limit)
    print(f"{stats['files']} files, {stats['frames']} frames: mean {stats['mean']:.6f}, std {stats['std']:.6f}")
    print(f"--gin_param FBANK_MEAN={stats['mean']:.6f} --gin_param FBANK_STD={stats['std']:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
