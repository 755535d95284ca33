"""Multiplication-free inference: a trained model as integer nodes (``graph``), quantised to fixed point."""
from . import targets
from .bundle_file import load_bundle, save_bundle
from .emit import Emitted, emit_c
from .engine import run
from .graph import Node, run_float, trace
from .quantize import Bundle, quantize

__all__ = ["Node", "trace", "run_float", "Bundle", "quantize", "run", "emit_c", "Emitted", "targets", "save_bundle",
           "load_bundle"]
