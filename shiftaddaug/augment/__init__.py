"""The elastic supernet (elastic layers, blocks, a space of architectures) and ShiftAddAug on it."""
from .layers import AUG_OPS, ElasticBatchNorm2d, ElasticConv2d, ElasticConvBNAct, ElasticLinear
from .space import Space, max_arch, min_arch, sample_arch
from .supernet import (
                       DEFAULT_AUG_SCALE,
                       DEFAULT_EXPAND_FACTORS,
                       EXPAND_FACTORS,
                       WIDTH_FACTORS,
                       ElasticNet,
                       build_augmented,
)

__all__ = ["build_augmented", "ElasticNet", "Space", "sample_arch", "min_arch", "max_arch", "AUG_OPS",
           "WIDTH_FACTORS", "EXPAND_FACTORS", "DEFAULT_AUG_SCALE", "DEFAULT_EXPAND_FACTORS", "ElasticConv2d",
           "ElasticBatchNorm2d",
           "ElasticConvBNAct", "ElasticLinear"]
