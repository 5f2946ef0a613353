"""Runtime level of the validation layer (`validate.py`): the arrays an op is about to read.

`check_operands` runs in the graph walk both engines share (`Interpreter.run_node`), before
the op: window ops take 4-D tensors; a Conv / Gemm's ranks, channels, groups, bias shape and
`kernel_shape` fit its operands; in an integer graph, a bound on the accumulator proves it
exact in both engines (the integer engine's int64 and the fake-quant engine's float64).

With a `memo` (the walk plan's, dropped when the graph changes), what depends only on the
operands' shapes and dtypes is checked once per combination: the shape checks, and the
accumulator bound when the operands' dtypes alone prove it (int8 activations and weights,
int32 biases: any values of those dtypes fit). Only operands of wider dtypes (int64, the
fake-quant engine's float64) are scanned on every call.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ExecutionError, UnsupportedOperatorError
from .node import Node
from .ops import OpType

op = OpType
# An integer accumulator must stay below this bound to be computed exactly by the
# fake-quant engine too (float64 holds every integer below 2^53).
EXACT_LIMIT = 1 << 53
WINDOW_OPS = frozenset({op.CONV, op.MAXPOOL, op.AVGPOOL})
OPERAND_CHECKED = WINDOW_OPS | {op.GLOBAL_AVGPOOL, op.GEMM}  # the ops check_operands looks at
# max |v| over every value of an integer dtype narrow enough to bound an accumulator
_DTYPE_ABS = {np.dtype(t).char: max(-int(np.iinfo(t).min), int(np.iinfo(t).max))
              for t in ("int8", "uint8", "int16", "uint16", "int32", "uint32")}
_PROVED = "proved"  # memo verdict: shapes fit and the dtypes prove the accumulator exact


def check_operands(graph, node: Node, operands, memo: dict | None = None) -> None:
    """Shapes of the operands of a Conv / Gemm (both engines, before the op); in an integer
    graph, also that the accumulator is provably exact (|acc| < 2^53) in both engines.

    `memo`: a dict kept while the graph is unchanged; the verdict for these shapes and
    dtypes is kept in it (see the module docstring)."""
    if node.op not in OPERAND_CHECKED:
        return
    key = None
    if memo is not None:
        try:
            key = ("operands", node.name, *[(a.shape, a.dtype.char) for a in operands])
        except AttributeError:  # not arrays: no verdict kept
            key = None
        verdict = None if key is None else memo.get(key)
        if verdict is _PROVED:
            return
        if verdict is not None:  # shapes fit; the bound depends on the values
            _check_exact(node, operands, verdict)
            return
    verdict = _check(graph, node, operands)
    if key is not None:
        memo[key] = verdict


def _check(graph, node: Node, operands):
    """The checks of `check_operands`; returns `_PROVED`, or the fan-in when the accumulator
    bound needed the operands' values."""
    # a float island (quantize_network's exclude) computes in float64 in both engines
    integer = graph.meta.get("integer") and not node.attrs.get("excluded")
    if node.op in WINDOW_OPS or node.op is op.GLOBAL_AVGPOOL and integer:
        if operands and np.ndim(operands[0]) != 4:
            raise UnsupportedOperatorError(node.name, node.op.value, "only 2-D windows (4-D tensors)")
    if node.op is op.CONV:
        if node.attrs.get("layout", "NCHW") != "NCHW" or node.attrs.get("weight_layout", "OIHW") != "OIHW":
            return _PROVED  # TFLite NHWC convs: checked by interp/zero_point.py on their own layout
        x, w = operands[0], operands[1]
        b = operands[2] if len(operands) > 2 else None
        group = int(node.attrs.get("group", 1))
        if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1] * group or w.shape[0] % group \
                or (b is not None and b.shape != (w.shape[0],)):
            raise _shape_error(node, operands, f"group={group}")
        kernel = node.attrs.get("kernel_shape")
        if kernel is not None and tuple(kernel) != w.shape[2:]:
            raise _shape_error(node, operands, f"kernel_shape {list(kernel)}")
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
    elif node.op is op.GEMM:
        a, w = operands[0], operands[1]
        if a.ndim != 2 or w.ndim != 2:
            raise _shape_error(node, operands, "both must be 2-D")
        m, k = a.shape[::-1] if node.attrs.get("transA", 0) else a.shape
        k_w, n = w.shape[::-1] if node.attrs.get("transB", 0) else w.shape
        if k != k_w:
            raise _shape_error(node, operands, "inner dimensions differ")
        if len(operands) > 2:
            c = operands[2]
            if integer:
                ok = c.shape in ((n,), (1, n)) or c.size == 1 and c.ndim <= 2
            else:
                ok = c.ndim <= 2 and _broadcasts(c.shape, (m, n))
            if not ok:
                raise _shape_error(node, operands, f"bias must broadcast to ({m}, {n})")
        fan_in = k
    else:
        return _PROVED
    if integer and not _check_exact(node, operands, fan_in):
        return fan_in
    return _PROVED


def _broadcasts(shape, to) -> bool:
    try:
        return np.broadcast_shapes(shape, to) == tuple(to)
    except ValueError:
        return False


def _shape_error(node, operands, detail) -> ExecutionError:
    shapes = ", ".join(str(tuple(a.shape)) for a in operands)
    return ExecutionError(f"node '{node.name}' ({node.op.value}): operand shapes {shapes} do not fit ({detail})")


def max_abs(a: np.ndarray) -> int:
    """max |a| as a Python int (no int8 / int64 wrap of np.abs at the dtype minimum)."""
    if a.size == 0:
        return 0
    lo, hi = a.min(), a.max()
    if a.dtype.kind == "f":
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return EXACT_LIMIT
        return max(-math.floor(lo), math.ceil(hi))
    return max(-int(lo), int(hi))


def _check_exact(node, operands, fan_in) -> bool:
    """Raise unless the accumulator provably stays below 2^53; True when the operands'
    dtypes prove it for any values (the values are then not read)."""
    # zero points are subtracted before the products (TFLite graphs): they widen the operands
    x_zero = abs(int(node.attrs.get("input_zero_point", 0)))
    w_zero = abs(int(node.attrs.get("weight_zero_point", 0)))
    widest = [_DTYPE_ABS.get(a.dtype.char) for a in operands[:3]]
    if None not in widest:
        bias = widest[2] if len(operands) > 2 else 0
        if (widest[0] + x_zero) * (widest[1] + w_zero) * fan_in + bias < EXACT_LIMIT:
            return True
    x, w = operands[0], operands[1]
    bias = max_abs(operands[2]) if len(operands) > 2 else 0
    bound = (max_abs(x) + x_zero) * (max_abs(w) + w_zero) * fan_in + bias
    if bound >= EXACT_LIMIT:
        raise ExecutionError(
            f"node '{node.name}' ({node.op.value}): the accumulator may reach {bound} "
            f"(max|x| * max|w| * {fan_in} + max|bias|), beyond 2^53 where the engines cannot "
            "compute it exactly (corrupted weights or activations?)")
    return False
