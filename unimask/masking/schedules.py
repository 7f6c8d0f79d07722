"""Mask-ratio schedules shared by every modality.

A schedule is `schedule(progress in [0, 1], batch_size, generator) -> [B] ratios`. The
trainer steps it with progress = step / train.steps; schedules are pure functions of
progress, so resuming from a checkpoint reproduces them exactly.
"""
from __future__ import annotations

import math
from typing import Sequence

import gin
import torch

from unimask.interfaces import RatioSchedule


def check_ratio(value, binding: str, high_inclusive: bool = False) -> float:
    """A mask ratio setting, checked when the schedule is built: [0, 1) (or [0, 1] for the upper
    end of a per-sample range); the error names the gin binding."""
    ok = isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value and (
        value <= 1 if high_inclusive else value < 1)
    if not ok:
        raise ValueError(f"{binding}={value!r}: a mask ratio must lie in [0, {'1]' if high_inclusive else '1)'}")
    return float(value)


@gin.configurable
class ConstantRatio(RatioSchedule):
    def __init__(self, ratio: float = 0.75):
        self.ratio = check_ratio(ratio, "ConstantRatio.ratio")

    def value(self, progress):
        return self.ratio


@gin.configurable
class LinearRatio(RatioSchedule):
    """start -> end linearly over training (easy-to-hard curricula)."""

    def __init__(self, start: float = 0.5, end: float = 0.9):
        self.start, self.end = check_ratio(start, "LinearRatio.start"), check_ratio(end, "LinearRatio.end")

    def value(self, progress):
        return self.start + (self.end - self.start) * progress


@gin.configurable
class CosineRatio(RatioSchedule):
    """start -> end along a half cosine."""

    def __init__(self, start: float = 0.5, end: float = 0.9):
        self.start, self.end = check_ratio(start, "CosineRatio.start"), check_ratio(end, "CosineRatio.end")

    def value(self, progress):
        return self.end + (self.start - self.end) * 0.5 * (1 + math.cos(math.pi * progress))


@gin.configurable
class StepRatio(RatioSchedule):
    """Piecewise constant: ratios[i] from boundaries[i-1] (progress) on."""

    def __init__(self, ratios: Sequence[float] = (0.5, 0.75, 0.9), boundaries: Sequence[float] = (1 / 3, 2 / 3)):
        if len(ratios) != len(boundaries) + 1:
            raise ValueError(f"StepRatio needs len(ratios) == len(boundaries) + 1, got {ratios} and {boundaries}")
        if list(boundaries) != sorted(boundaries) or any(not 0 <= b <= 1 for b in boundaries):
            raise ValueError(f"StepRatio.boundaries={list(boundaries)}: progress values in [0, 1], increasing")
        self.ratios = [check_ratio(r, f"StepRatio.ratios[{i}]") for i, r in enumerate(ratios)]
        self.boundaries = list(boundaries)

    def value(self, progress):
        return self.ratios[sum(progress >= b for b in self.boundaries)]


@gin.configurable
class UniformRatio(RatioSchedule):
    """A different ratio per sample, uniform in [low, high) (masked-diffusion training)."""

    def __init__(self, low: float = 0.0, high: float = 0.99):
        self.low, self.high = check_ratio(low, "UniformRatio.low"), check_ratio(high, "UniformRatio.high", True)
        if self.high <= self.low:
            raise ValueError(f"UniformRatio.low={low} must be below UniformRatio.high={high}")

    def value(self, progress):
        return 0.5 * (self.low + self.high)

    def __call__(self, progress, batch_size, generator=None):
        return self.low + (self.high - self.low) * uniform_draw(batch_size, generator)


def uniform_draw(batch_size: int, generator) -> torch.Tensor:
    """[B] float64 uniform in [0, 1), drawn on the generator's device (so a CUDA generator's
    stream is the one consumed), returned on the CPU as the other schedules' ratios."""
    device = generator.device if generator is not None else "cpu"
    return torch.rand(batch_size, generator=generator, device=device).cpu().double()


@gin.configurable
class MaskGITCosineRatio(RatioSchedule):
    """MaskGIT (Chang et al. 2022): per sample r ~ U(0, 1) and hidden share cos(pi r / 2), so
    the share lies in (0, 1] and reaches 1 (every token hidden, which the masker must allow:
    RandomMasker.allow_all_hidden=True). Training then covers every step of the cosine decoding
    schedule the sampler (unimask/generation) runs at test time. value() is the mean, 2 / pi."""

    def value(self, progress):
        return 2.0 / math.pi

    def __call__(self, progress, batch_size, generator=None):
        return torch.cos(0.5 * math.pi * uniform_draw(batch_size, generator))


@gin.configurable
class TruncatedNormalRatio(RatioSchedule):
    """MAGE (Li et al. 2023): per sample a ratio from a Gaussian (mean 0.55, std 0.25) truncated
    to [low, high] = [0.5, 1.0], drawn by inverting the truncated CDF of a uniform draw (MAGE
    uses scipy's truncnorm, which does the same). high = 1.0 needs allow_all_hidden on the masker."""

    def __init__(self, mean: float = 0.55, std: float = 0.25, low: float = 0.5, high: float = 1.0):
        if not std > 0:
            raise ValueError(f"TruncatedNormalRatio.std={std}: must be > 0")
        self.low = check_ratio(low, "TruncatedNormalRatio.low")
        self.high = check_ratio(high, "TruncatedNormalRatio.high", high_inclusive=True)
        if self.high <= self.low:
            raise ValueError(f"TruncatedNormalRatio.low={low} must be below TruncatedNormalRatio.high={high}")
        self.mean, self.std = float(mean), float(std)

    def value(self, progress):
        return min(max(self.mean, self.low), self.high)

    def __call__(self, progress, batch_size, generator=None):
        normal_cdf = lambda x: 0.5 * (1 + math.erf((x - self.mean) / (self.std * math.sqrt(2))))  # noqa: E731
        lo, hi = normal_cdf(self.low), normal_cdf(self.high)
        u = lo + (hi - lo) * uniform_draw(batch_size, generator)  # [B] in the truncated CDF's range
        return (self.mean + self.std * torch.special.ndtri(u)).clamp(self.low, self.high)
