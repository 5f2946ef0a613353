"""What the fake-quant and the integer engine share: accumulator policy and
the quantizer's channel layout. Only the arithmetic backends differ (NumPy
twins vs Numba kernels); the rules are written once here.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import AccumulatorOverflowError, ExecutionError
from ..ir import OpType
from ..target import Target

# Ops whose integer result is an accumulator (before a quantizer brings it back to n bits).
ACCUMULATING = frozenset({OpType.CONV, OpType.GEMM, OpType.ADD, OpType.SUB, OpType.MUL})


class AccumulatorOverflowWarning(UserWarning):
    pass


class AccumulatorPolicy:
    """Applies the target's accumulator width and overflow rule; counts overflows per node."""

    def __init__(self, target: Target, fit):
        self.bits = target.acc_bits
        self.mode = target.overflow
        self.fit = fit  # kernels.fit_accumulator or its NumPy twin
        self.overflows: dict[str, int] = {}

    def apply(self, node, acc: np.ndarray) -> np.ndarray:
        limit = 1 << (self.bits - 1)
        if self.bits >= 64 or acc.size == 0 or (acc.max() < limit and acc.min() >= -limit):
            return acc
        fitted, count = self.fit(np.ascontiguousarray(acc.ravel()), self.bits, self.mode == "wrap")
        if self.mode == "error":
            raise AccumulatorOverflowError(node.name, int(count), self.bits)
        self.overflows[node.name] = self.overflows.get(node.name, 0) + int(count)
        warnings.warn(f"node '{node.name}': {count} accumulator value(s) exceed int{self.bits}, "
                      f"{'wrapped' if self.mode == 'wrap' else 'saturated'}",
                      AccumulatorOverflowWarning, stacklevel=2)
        return fitted.reshape(acc.shape)


def graph_target(graph, override: Target | None) -> Target:
    if override is not None:
        return override
    stored = graph.meta.get("target")
    return Target.from_dict(stored) if stored else Target()


def channels_view(x: np.ndarray) -> np.ndarray:
    """(N, C, S) view of an (N, C, ...) tensor: quantizers work per channel on axis 1."""
    if x.ndim == 1:
        return x.reshape(1, 1, x.shape[0])
    return x.reshape(x.shape[0], x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64)))


def per_channel(values, channels: int, dtype) -> np.ndarray:
    """A scalar or (C,) parameter as a contiguous, writable (C,) array (a read-only
    array, e.g. a frozen graph attribute, would make Numba compile another version)."""
    array = np.atleast_1d(np.asarray(values, dtype=dtype))
    return np.array(np.broadcast_to(array, (channels,)) if array.size == 1 else array, order="C")


def quantizer_args(node, x: np.ndarray):
    """(acc3d, multipliers..., mode, bounds) for the requant kernels from a QUANTIZER node.

    Checks what the kernels take as preconditions (both engines call this): one
    parameter per channel (or one for all).
    """
    from aidge_lite.kernels.rounding import ROUNDING_NAMES

    attrs = node.attrs
    view = channels_view(x)
    mode = ROUNDING_NAMES[attrs["rounding"]]
    bounds = np.array([attrs["lo"], attrs["hi"]], dtype=np.int64)
    params = rescale_params(node, view.shape[1])
    return view, params, mode, bounds


def rescale_params(node, channels: int) -> tuple:
    """A QUANTIZER's (scale,) (float32 when `attrs["float32"]`, else float64) or
    (multiplier, shift), one value per channel; a length
    that is neither 1 nor `channels` is refused (the kernels would read past it), and
    so is a multiplier of 2^31 or more."""
    attrs = node.attrs
    names = ("scale",) if attrs.get("mode", "float") == "float" else ("multiplier", "shift")
    params = []
    for name in names:
        size = np.size(attrs[name])
        if size not in (1, channels):
            raise ExecutionError(f"node '{node.name}' (Quantizer): {size} {name} values for "
                                 f"{channels} channels (expected 1 or {channels})")
        # a float32 quantizer multiplies by its scale rounded to float32 (the kernel's dtype)
        dtype = (np.float32 if attrs.get("float32") else np.float64) if name == "scale" else np.int64
        params.append(per_channel(attrs[name], channels, dtype))
    # the kernels form acc * multiplier exactly for |multiplier| < 2^31 (a Q31 mantissa);
    # compared as Python ints: np.abs(-2**63) is still -2**63
    if len(params) == 2 and params[0].size and \
            max(-int(params[0].min()), int(params[0].max())) >= 1 << 31:
        raise ExecutionError(f"node '{node.name}' (Quantizer): fixed-point multiplier "
                             f"[{int(params[0].min())}, {int(params[0].max())}] is not below 2^31")
    return tuple(params)



def run_float(interp, node, operands):
    """A float island (`quantize_network(..., exclude=...)`) in the integer engine: the
    float reference's implementation on float64 operands, as the fake-quant engine runs it."""
    from .reference import ReferenceInterpreter

    impl = ReferenceInterpreter.impls.get(node.op)
    if impl is None:
        raise ExecutionError(f"node '{node.name}' ({node.op.value}): no float implementation")
    try:
        return impl(interp, node, *[np.asarray(x, np.float64) for x in operands])
    except Exception as exc:  # name the node, as the walk does
        if isinstance(exc, ExecutionError):
            raise
        raise ExecutionError(f"node '{node.name}' ({node.op.value}): {exc}") from exc
