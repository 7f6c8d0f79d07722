"""Audio (AudioMAE, Huang et al., NeurIPS 2022): audio files -> Kaldi log-mel spectrograms ->
16 x 16 patches on a (time, frequency) grid.

    decode.py    soundfile / PyAV decoding, mix-down, resampling, the bad-input checks
    features.py  AudioMAE's fbank, padding, normalization, Griffin-Lim for listening
    dataset.py   AudioDataset (folders with class sub-folders, AudioSet-style CSV/TSV lists)
    adapter.py   AudioAdapter (a GridAdapter) and its spectrogram + WAV rendering
"""
from modalities.audio.adapter import AudioAdapter  # noqa: F401
from modalities.audio.dataset import AudioDataset  # noqa: F401
from modalities.audio.decode import AUDIO_EXTS, load_waveform, read_audio  # noqa: F401
from modalities.audio.features import fbank, griffin_lim  # noqa: F401
