"""Hardware cost: operation counts (``count``); the Eyeriss-like energy/latency model builds on these."""
from .counting import Counts, LayerCount, count

__all__ = ["count", "Counts", "LayerCount"]
