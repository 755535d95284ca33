"""Hybrid computing augmentation: the supernet, its sliceable layers, and export of the target."""
from .dynamic import AUG_OPS, DynamicBatchNorm2d, DynamicConv2d, DynamicLinear
from .supernet import EXPAND_FACTORS, WIDTH_FACTORS, AugmentedNet, build_augmented

__all__ = ["build_augmented", "AugmentedNet", "AUG_OPS", "WIDTH_FACTORS", "EXPAND_FACTORS", "DynamicConv2d",
           "DynamicBatchNorm2d", "DynamicLinear"]
