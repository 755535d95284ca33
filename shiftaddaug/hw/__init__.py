"""Hardware cost: operation counts (``count``) and the Eyeriss-like energy/latency model (``profile``)."""
from .constants import CONSTANTS
from .counting import Counts, LayerCount, count
from .eyeriss import ACCELERATORS
from .profile import LayerCost, Profile, profile

__all__ = ["count", "Counts", "LayerCount", "profile", "Profile", "LayerCost", "CONSTANTS", "ACCELERATORS"]
