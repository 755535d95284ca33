"""shiftaddaug: multiplication-free tiny neural networks (shift / add) trained with ShiftAddAug."""
from .models import create_model, list_models
from .ops import AdderConv2d, AdderLinear, ShiftConv2d, ShiftLinear

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "ShiftConv2d", "ShiftLinear", "AdderConv2d", "AdderLinear"]
