"""AudioAdapter: log-mel spectrograms [B, 1, T, F] as a (time, frequency) grid of patches.

AudioMAE: 16 x 16 patches of a 1024 x 128 fbank give 512 tokens on a (64, 8) grid, time first,
with 2-D sin-cos positions; the grid is what lets the shared maskers hide time spans
(FrameMasker(axis=0), SpanMasker(axis=0)) or frequency bands (FrameMasker(axis=1)), and what the
decoder's local attention windows (MAEDecoder.window) read.
"""
from __future__ import annotations

import os

import gin
import numpy as np
import torch

from modalities.audio.features import AUDIOSET_MEAN, AUDIOSET_STD, denormalize, griffin_lim
from modalities.grid import GridAdapter, check_divisible, check_input


def spectrogram_picture(fbank: torch.Tensor) -> torch.Tensor:
    """[1, T, F] values in [0, 1] -> [3, F, T] RGB, low frequencies at the bottom (viridis)."""
    import matplotlib

    colours = matplotlib.colormaps["viridis"](fbank[0].T.flip(0).numpy())[..., :3]  # [F, T, 3]
    return torch.from_numpy(np.ascontiguousarray(colours)).permute(2, 0, 1).float()


@gin.configurable
class AudioAdapter(GridAdapter):
    """fbank [B, 1, target_length, num_mel_bins] -> (target_length / patch) x (num_mel_bins / patch)
    tokens. sample_rate, mean and std are the dataset's: render turns a reconstruction back into
    a WAV for listening."""

    batch_key = "fbank"

    def __init__(self, target_length: int = 1024, num_mel_bins: int = 128, patch_size: int = 16, dim: int = 768,
                 sample_rate: int = 16000, mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD):
        check_divisible((("AudioAdapter.target_length", target_length), ("AudioAdapter.patch_size", patch_size)),
                        (("AudioAdapter.num_mel_bins", num_mel_bins), ("AudioAdapter.patch_size", patch_size)))
        super().__init__((patch_size, patch_size), 1, dim)
        self.target_length, self.num_mel_bins = target_length, num_mel_bins
        self.sample_rate, self.mean, self.std = sample_rate, mean, std

    def tokenize(self, batch):
        x = batch[self.batch_key] if isinstance(batch, dict) else batch
        check_input(x, (1, self.target_length, self.num_mel_bins), "fbank (AudioAdapter.target_length/num_mel_bins)")
        return super().tokenize(batch)

    def render(self, tokens, pred, mask, path):
        """input | masked | reconstruction as spectrogram pictures (PNG), and the reconstruction
        as sound (a WAV beside the PNG, by Griffin-Lim)."""
        import soundfile as sf

        from modalities.grid import PANELS, save_rows
        from unimask.patches import unpatchify

        panels = self.panels(tokens, pred, mask)  # 3 x [1, T, F] in [0, 1]
        png = save_rows([[spectrogram_picture(p) for p in panels]], path, columns=PANELS)
        hidden = mask.masked[:1, :, None]
        recon = torch.where(hidden, pred[:1].float(), tokens.patches[:1].float())  # [1, N, P], normalized fbank
        log_mel = denormalize(unpatchify(recon, tokens.grid, self.patch, 1)[0, 0], self.mean, self.std)  # [T, F]
        wave = griffin_lim(log_mel.cpu(), self.sample_rate)
        peak = float(wave.abs().max())
        sf.write(os.path.splitext(png)[0] + ".wav", (wave / max(peak, 1e-6) * 0.9).numpy(), self.sample_rate)
        return png
