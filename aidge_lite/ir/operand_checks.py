"""Runtime level of the validation layer (`validate.py`): the arrays an op is about to read.

`check_operands` runs in the graph walk both engines share (`Interpreter.run_node`), before
the op: window ops take 4-D tensors; a Conv / Gemm's ranks, channels, groups, bias shape and
`kernel_shape` fit its operands; in an integer graph, a bound on the accumulator proves it
exact in both engines (the integer engine's int64 and the fake-quant engine's float64).
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


def check_operands(graph, node: Node, operands) -> None:
    """Shapes of the operands of a Conv / Gemm (both engines, before the op); in an integer
    graph, also that the accumulator is provably exact (|acc| < 2^53) in both engines."""
    # a float island (quantize_network's exclude) computes in float64 in both engines
    integer = graph.meta.get("integer") and not node.attrs.get("excluded")
    if node.op in WINDOW_OPS or node.op is op.GLOBAL_AVGPOOL and integer:
        if operands and np.ndim(operands[0]) != 4:
            raise UnsupportedOperatorError(node.name, node.op.value, "only 2-D windows (4-D tensors)")
    if node.op is op.CONV:
        if node.attrs.get("layout", "NCHW") != "NCHW" or node.attrs.get("weight_layout", "OIHW") != "OIHW":
            return  # TFLite NHWC convs: checked by interp/zero_point.py on their own layout
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
        return
    if integer:
        _check_exact(node, operands, fan_in)


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


def _check_exact(node, operands, fan_in) -> None:
    x, w = operands[0], operands[1]
    bias = max_abs(operands[2]) if len(operands) > 2 else 0
    # zero points are subtracted before the products (TFLite graphs): they widen the operands
    x_max = max_abs(x) + abs(int(node.attrs.get("input_zero_point", 0)))
    w_max = max_abs(w) + abs(int(node.attrs.get("weight_zero_point", 0)))
    bound = x_max * w_max * fan_in + bias
    if bound >= EXACT_LIMIT:
        raise ExecutionError(
            f"node '{node.name}' ({node.op.value}): the accumulator may reach {bound} "
            f"(max|x| * max|w| * {fan_in} + max|bias|), beyond 2^53 where the engines cannot "
            "compute it exactly (corrupted weights or activations?)")
