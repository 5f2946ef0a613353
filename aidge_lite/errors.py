"""Exceptions raised by aidge_lite.

Every error names the node or tensor it is about, so a user can find the
culprit in a graph of hundreds of nodes. All derive from `AidgeLiteError`.
"""
from __future__ import annotations


class AidgeLiteError(Exception):
    """Base class of every error raised on purpose by aidge_lite."""


class ModelLoadError(AidgeLiteError):
    """A model file or ModelProto cannot be read (truncated, garbage, invalid)."""


class UnsupportedOperatorError(AidgeLiteError):
    """An operator, or an operator variant, that aidge_lite does not implement."""

    def __init__(self, node: str, op_type: str, detail: str = ""):
        self.node, self.op_type = node, op_type
        extra = f": {detail}" if detail else ""
        super().__init__(f"node '{node}': unsupported operator '{op_type}'{extra}")


class GraphError(AidgeLiteError):
    """The graph breaks an invariant checked by `verify` or a mutation precondition."""


class InputError(AidgeLiteError, ValueError):
    """A tensor fed to a graph is missing or has the wrong rank, shape or dtype."""


class ExecutionError(AidgeLiteError):
    """An operator failed while the graph was running; the message names the node."""


class CalibrationError(AidgeLiteError, ValueError):
    """Calibration data is empty, non-finite or does not fit the graph input."""


class QuantizationError(AidgeLiteError, ValueError):
    """A quantization option or graph cannot be quantized as asked."""


class FormatError(AidgeLiteError):
    """A saved quantized graph is corrupted or of an unknown version."""


class AccumulatorOverflowError(AidgeLiteError):
    """An accumulator left the target's range and the target forbids it."""

    def __init__(self, node: str, count: int, bits: int):
        self.node, self.count, self.bits = node, count, bits
        super().__init__(f"node '{node}': {count} accumulator value(s) exceed int{bits}")


class InputRangeWarning(UserWarning):
    """Data fed to a graph looks like the wrong scale: far outside the calibration range, or
    integer samples (e.g. uint8 0..255) fed to a float input trained on another range."""


class CalibrationWarning(UserWarning):
    """Calibration data that quantizes but poorly represents real inputs (e.g. constant samples)."""
