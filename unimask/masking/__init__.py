"""Maskers and ratio schedules shared by every modality: `masker(tokens, ratio, generator) -> Mask`.
Their bases, Masker and RatioSchedule, are contracts: unimask/interfaces.py.

Fixed rules      RandomMasker (MAE, SimMIM cells), TubeMasker (VideoMAE), FrameMasker,
                 RunningCellMasker (VideoMAE v2), SpanMasker (SpanBERT), BlockMasker (BEiT),
                 PointBlockMasker (Point-MAE), NoiseMasker (ColorMAE)
Latent targets   MultiBlockMasker (I-JEPA, V-JEPA: target blocks + a context block)
Token groups     ChannelGroupMasker (SatMAE), DirichletMasker (MultiMAE)
Frequencies      FrequencyMasker (MFM: a band of the spectrum instead of patches)
Learned          AdaptiveMasker (AdaMAE), HardPatchMasker (HPM)
Schedules        ConstantRatio, LinearRatio, CosineRatio, StepRatio, UniformRatio (MDLM),
                 MaskGITCosineRatio, TruncatedNormalRatio (MAGE): generation, ratios up to 1
"""
from unimask.masking.base import count_hidden
from unimask.masking.block import BlockMasker, PointBlockMasker
from unimask.masking.frequency import FrequencyMasker
from unimask.masking.groups import ChannelGroupMasker, DirichletMasker
from unimask.masking.learned import AdaptiveMasker, HardPatchMasker
from unimask.masking.maskers import RandomMasker, TubeMasker
from unimask.masking.multiblock import MultiBlockMasker
from unimask.masking.noise import NoiseMasker
from unimask.masking.schedules import (ConstantRatio, CosineRatio, LinearRatio, MaskGITCosineRatio, StepRatio,
                                       TruncatedNormalRatio, UniformRatio)
from unimask.masking.temporal import FrameMasker, RunningCellMasker, SpanMasker

__all__ = ["count_hidden", "RandomMasker", "TubeMasker", "FrameMasker",
           "RunningCellMasker", "SpanMasker", "BlockMasker", "PointBlockMasker", "NoiseMasker", "MultiBlockMasker",
           "ChannelGroupMasker", "DirichletMasker", "FrequencyMasker", "AdaptiveMasker", "HardPatchMasker",
           "ConstantRatio", "LinearRatio", "CosineRatio", "StepRatio", "UniformRatio", "MaskGITCosineRatio",
           "TruncatedNormalRatio"]
