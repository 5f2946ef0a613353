"""Interpreters: one graph walk (`base`), several op tables."""
from .base import Interpreter
from . import quant_ops  # registers the quantized ops on the reference table
from . import zero_point  # zero-point (TFLite) ops and NHWC windows, both engines
from .reference import ReferenceInterpreter, run

__all__ = ["Interpreter", "ReferenceInterpreter", "run"]
