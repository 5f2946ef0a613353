"""Quantized-graph operators of the reference (fake-quant) engine.

Tensors are float64 holding integers; every integer rule (requantization,
rounding division of pools, accumulator width) is delegated to the NumPy twins
in `kernels`, the same specification the Numba kernels are tested against.
"""
from __future__ import annotations

import numpy as np

from aidge_lite import kernels
from aidge_lite.kernels.rounding import ROUNDING_NAMES

from ..ir import OpType
from . import float_ops
from .geometry import window_geometry
from .quant_common import channels_view, quantizer_args
from .reference import ReferenceInterpreter, _avgpool, _global_avgpool, _spare

reg = ReferenceInterpreter.register


@reg(OpType.SCALING)
def _scaling(self, node, x):
    scale = np.asarray(node.attrs["scale"], dtype=np.float64)
    # in place on an operand nobody else reads (the same products, no new array)
    out = _spare(self, node, x) if x.dtype == np.float64 and x.flags.c_contiguous else None
    if scale.ndim == 0:
        return np.multiply(x, scale, out=out)
    view = channels_view(x)
    return np.multiply(view, scale.reshape(1, -1, 1), out=None if out is None else view).reshape(x.shape)


#: Elements per block of the quantizer: the NumPy twins make ~10 passes with temporaries;
#: on blocks of 512 KB (float64) they stay in L2 (EfficientNet-Lite0's 70 quantizers: 62 -> 37 ms per image).
QUANTIZER_BLOCK = 1 << 16


@reg(OpType.QUANTIZER)
def _quantizer(self, node, x):
    float_mode = node.attrs.get("mode", "float") == "float"
    view, params, mode, bounds = quantizer_args(node, np.asarray(x, np.float64))
    out = np.empty(view.shape, np.float64)
    n, c, s = view.shape
    step = max(1, QUANTIZER_BLOCK // max(1, n * s))
    for c0 in range(0, c, step):  # blocks of channels: every rule here is per element
        part, done = view[:, c0:c0 + step], out[:, c0:c0 + step]
        args = [p[c0:c0 + step] for p in params]
        if float_mode and node.attrs.get("float32"):  # float32 multiplier and product (compat="aidge")
            kernels.requant_float32_ref(part, *args, mode, bounds, done)
        elif float_mode:
            _requant_float_exact(part, *args, mode, bounds, done)
        else:
            acc = np.trunc(part)  # the accumulator, as astype(int64) reads it
            if not _requant_int_float(acc, *args, mode, bounds, done):
                kernels.requant_int_ref(acc.astype(np.int64), *args, mode, bounds, done)
    self.count_clipped(node, view, out)
    return out.reshape(x.shape)


def _requant_float_exact(view, multiplier, mode, bounds, out):
    """requant_float's twin on float64 input (the input quantizer sees floats)."""
    scaled = view * multiplier.reshape(1, -1, 1)
    np.clip(kernels.round_float_ref(scaled, mode), bounds[0], bounds[1], out=out)


def _requant_int_float(view, multiplier, shift, mode, bounds, out) -> bool:
    """`requant_int_ref` computed in float64 when that is exact; False (nothing written) if not.

    ``acc * m * 2**-shift`` is exact in float64 while ``|acc * m| < 2**53`` (the power of
    two only moves the exponent; every result here is a normal number); rounding it
    with `round_float_ref` then gives the integer twin's rounded quotient, and a clip
    its saturation (a left shift saturates exactly like a clip of the product). About
    4x fewer passes than the int64 twin, which handles every other case.
    """
    if view.size == 0 or int(shift.min()) < -62:
        return False
    peak = max(float(view.max()), -float(view.min()))
    if not peak * float(np.abs(multiplier).max()) < 2.0 ** 53:
        return False
    scale = np.ldexp(multiplier.astype(np.float64), -shift.astype(np.int64))
    scaled = view * scale.reshape(1, -1, 1)
    np.clip(kernels.round_float_ref(scaled, mode), bounds[0], bounds[1], out=out)
    return True


@reg(OpType.AVGPOOL)
def _int_avgpool(self, node, x):
    if "rounding" not in node.attrs:
        return _avgpool(self, node, x)
    kernel = tuple(node.attrs["kernel_shape"])
    strides, dilations, pads, out_hw, extra = window_geometry(node, x.shape[2:], kernel)
    sums = float_ops.window_sums(x, kernel, strides, dilations, pads, out_hw, extra)
    counts = float_ops.window_counts(x.shape[2:], kernel, strides, dilations, pads, out_hw,
                                     extra, bool(node.attrs.get("count_include_pad", 0)))
    mode = ROUNDING_NAMES[node.attrs["rounding"]]
    rounded = kernels.round_div_ref(sums.astype(np.int64), np.broadcast_to(counts, sums.shape), mode)
    return rounded.astype(np.float64)


@reg(OpType.GLOBAL_AVGPOOL)
def _int_global_avgpool(self, node, x):
    if "rounding" not in node.attrs:
        return _global_avgpool(self, node, x)
    sums = channels_view(x).sum(axis=2).astype(np.int64)
    count = int(np.prod(x.shape[2:]))
    mode = ROUNDING_NAMES[node.attrs["rounding"]]
    rounded = kernels.round_div_ref(sums, np.full(sums.shape, count, np.int64), mode)
    return rounded.reshape(x.shape[:2] + (1,) * (x.ndim - 2)).astype(np.float64)
