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
from .reference import ReferenceInterpreter, _avgpool, _global_avgpool

reg = ReferenceInterpreter.register


@reg(OpType.SCALING)
def _scaling(self, node, x):
    scale = np.asarray(node.attrs["scale"], dtype=np.float64)
    if scale.ndim == 0:
        return x * scale
    return (channels_view(x) * scale.reshape(1, -1, 1)).reshape(x.shape)


@reg(OpType.QUANTIZER)
def _quantizer(self, node, x):
    if node.attrs.get("mode", "float") == "float":
        view, (multiplier,), mode, bounds = quantizer_args(node, np.asarray(x, np.float64))
        out = np.empty(view.shape, np.float64)
        if node.attrs.get("float32"):  # float32 multiplier and product (compat="aidge")
            kernels.requant_float32_ref(view, multiplier, mode, bounds, out)
        else:
            _requant_float_exact(view, multiplier, mode, bounds, out)
    else:
        view, (multiplier, shift), mode, bounds = quantizer_args(node, x.astype(np.int64))
        out = np.empty(view.shape, np.float64)
        kernels.requant_int_ref(view, multiplier, shift, mode, bounds, out)
    self.count_clipped(node, view, out)
    return out.reshape(x.shape)


def _requant_float_exact(view, multiplier, mode, bounds, out):
    """requant_float's twin on float64 input (the input quantizer sees floats)."""
    scaled = view * multiplier.reshape(1, -1, 1)
    np.clip(kernels.round_float_ref(scaled, mode), bounds[0], bounds[1], out=out)


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
