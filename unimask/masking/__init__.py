"""Maskers and ratio schedules shared by every modality: `masker(tokens, ratio, generator) -> Mask`."""
from unimask.masking.base import Masker, count_hidden, ratio_tensor
from unimask.masking.maskers import RandomMasker, TubeMasker
from unimask.masking.schedules import ConstantRatio, CosineRatio, LinearRatio, StepRatio, UniformRatio

__all__ = ["Masker", "count_hidden", "ratio_tensor", "RandomMasker", "TubeMasker", "ConstantRatio",
           "LinearRatio", "CosineRatio", "StepRatio", "UniformRatio"]
