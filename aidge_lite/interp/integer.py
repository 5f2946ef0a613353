"""The integer engine: a quantized graph in true integer arithmetic.

Same walk as the reference, another op table: activations live in the
integer dtypes their quantizers declare (int8/uint8/int16/uint16),
accumulators in int64 brought to the target's width by `AccumulatorPolicy`,
and all arithmetic runs in the Numba kernels of `kernels`. Every operand is
checked here before a kernel sees it: Numba does no bounds checking.
"""
from __future__ import annotations

import numpy as np

import kernels

from ..errors import ExecutionError, InputError, UnsupportedOperatorError
from ..ir import OpType
from . import reference as ref_ops
from .base import Interpreter
from .geometry import window_geometry
from .quant_common import ACCUMULATING, AccumulatorPolicy, graph_target, quantizer_args
from .quant_ops import _requant_float_exact

op = OpType


class IntegerInterpreter(Interpreter):
    def __init__(self, target=None):
        self.target = target

    def begin(self, graph):
        super().begin(graph)
        if not graph.meta.get("integer"):
            raise InputError(
                f"graph '{graph.name}' is not an integer graph: engine='integer' needs the output "
                "of quantize_network(..., no_quant=False)"
            )
        self.policy = AccumulatorPolicy(graph_target(graph, self.target), kernels.fit_accumulator)
        self.transposed: dict[str, np.ndarray] = {}

    def prepare_input(self, node, value):
        return np.asarray(value, dtype=np.float64)  # the input quantizer is the float boundary

    def run_node(self, node, operands):
        value = super().run_node(node, operands)
        if node.op in ACCUMULATING:
            value = self.policy.apply(node, value)
        return value


reg = IntegerInterpreter.register


def _require_int(node, *arrays):
    for array in arrays:
        if array.dtype.kind not in "iu":
            raise ExecutionError(f"node '{node.name}' ({node.op.value}): operand dtype {array.dtype} is not an integer")


@reg(op.CONSTANT)
def _constant(self, node):
    return node.attrs["value"]


@reg(op.QUANTIZER)
def _quantizer(self, node, x):
    out_dtype = np.dtype(node.attrs["dtype"])
    if x.dtype.kind == "f":  # input quantizer: float64 product, same formula as the reference
        view, (multiplier,), mode, bounds = quantizer_args(node, x)
        out = np.empty(view.shape, np.float64)
        _requant_float_exact(view, multiplier, mode, bounds, out)
        return out.astype(out_dtype).reshape(x.shape)
    _require_int(node, x)
    view, params, mode, bounds = quantizer_args(node, np.ascontiguousarray(x, dtype=np.int64))
    out = np.empty(view.shape, out_dtype)
    if node.attrs.get("mode", "float") == "float":
        kernels.requant_float(view, params[0], mode, bounds, out)
    else:
        kernels.requant_int(view, params[0], params[1], mode, bounds, out)
    return out.reshape(x.shape)


@reg(op.CONV)
def _conv(self, node, x, w, b):
    _require_int(node, x, w, b)
    group = node.attrs.get("group", 1)
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1] * group or w.shape[0] % group \
            or b.shape != (w.shape[0],):
        raise ExecutionError(
            f"node '{node.name}' (Conv): input {x.shape}, weight {w.shape}, bias {b.shape} "
            f"do not fit (group={group})"
        )
    strides, dilations, pads, out_hw, _ = window_geometry(node, x.shape[2:], w.shape[2:])
    if min(out_hw) <= 0:
        raise ExecutionError(f"node '{node.name}' (Conv): empty output {out_hw} for input {x.shape}")
    geometry = np.array([*strides, pads[0], pads[1], pads[2], pads[3], *dilations, group], np.int64)
    return kernels.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), b, geometry)


@reg(op.GEMM)
def _gemm(self, node, x, w, b):
    _require_int(node, x, w, b)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1] or b.shape != (w.shape[0],):
        raise ExecutionError(
            f"node '{node.name}' (Gemm): input {x.shape}, weight {w.shape}, bias {b.shape} do not fit"
        )
    w_t = self.transposed.get(node.name)
    if w_t is None:  # the kernel wants (in, out); transpose once per run
        w_t = self.transposed[node.name] = np.ascontiguousarray(w.T)
    return kernels.gemm(np.ascontiguousarray(x), w_t, b)


@reg(op.ADD)
def _add(self, node, a, b):
    _require_int(node, a, b)
    if a.shape != b.shape:
        raise ExecutionError(f"node '{node.name}' (Add): operand shapes {a.shape} and {b.shape} differ")
    return kernels.add(np.ascontiguousarray(a), np.ascontiguousarray(b))


@reg(op.CONCAT)
def _concat(self, node, *xs):
    _require_int(node, *xs)
    return np.concatenate(xs, axis=node.attrs["axis"])


@reg(op.RELU)
def _relu(self, node, x):
    _require_int(node, x)
    return kernels.relu(np.ascontiguousarray(x))


def _pool_geometry(node, x):
    if x.ndim != 4:
        raise ExecutionError(f"node '{node.name}' ({node.op.value}): input rank {x.ndim}, expected 4")
    kernel = tuple(node.attrs["kernel_shape"])
    strides, dilations, pads, out_hw, extra = window_geometry(node, x.shape[2:], kernel)
    geometry = np.array([*kernel, *strides, pads[0], pads[1], pads[2] + extra[0],
                         pads[3] + extra[1], *dilations], np.int64)
    return geometry, extra


@reg(op.MAXPOOL)
def _maxpool(self, node, x):
    _require_int(node, x)
    geometry, _ = _pool_geometry(node, x)
    return kernels.maxpool2d(np.ascontiguousarray(x), geometry)


@reg(op.AVGPOOL)
def _avgpool(self, node, x):
    _require_int(node, x)
    geometry, extra = _pool_geometry(node, x)
    include_pad = bool(node.attrs.get("count_include_pad", 0))
    if include_pad and any(extra):
        raise UnsupportedOperatorError(node.name, "AveragePool", "ceil_mode with count_include_pad")
    mode = kernels.ROUNDING_NAMES[node.attrs["rounding"]]
    return kernels.avgpool2d(np.ascontiguousarray(x), geometry, include_pad, mode)


@reg(op.GLOBAL_AVGPOOL)
def _global_avgpool(self, node, x):
    _require_int(node, x)
    if x.ndim != 4:
        raise ExecutionError(f"node '{node.name}' (GlobalAveragePool): input rank {x.ndim}, expected 4")
    return kernels.global_avgpool(np.ascontiguousarray(x), kernels.ROUNDING_NAMES[node.attrs["rounding"]])


# Pure data movement is exact on any dtype: the reference implementations serve.
for _op in (op.FLATTEN, op.RESHAPE, op.TRANSPOSE, op.SQUEEZE, op.UNSQUEEZE, op.PAD):
    IntegerInterpreter.impls[_op] = ref_ops.ReferenceInterpreter.impls[_op]
