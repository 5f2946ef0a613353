"""Lowering of the int8 (TFLite) softmax: its parameters checked before the engine
runs, and the bounds of a row's sum of exponentials (TFLite aborts at 2**28)."""
from __future__ import annotations

import numpy as np

from ..ir import OpType
from .ops import PRECHECK, _fail, _inputs, _out, _step, lowering

op = OpType


def _softmax_params(node):
    """[input_multiplier, input_left_shift, diff_min] of an integer SOFTMAX, validated as
    `kernels.softmax.check_softmax_args` does (every int32 of the C kernel stays in range)."""
    from ..kernels.softmax import check_softmax_args, pack_softmax_params

    if "diff_min" not in node.attrs:
        raise _fail(node, "a float softmax: the C library has the int8 (TFLite) softmax only")
    params = pack_softmax_params(node.attrs)
    try:
        check_softmax_args(np.zeros((1, 1), np.int8), params)
    except ValueError as exc:
        raise _fail(node, str(exc)) from None
    return [int(p) for p in params]


PRECHECK[op.SOFTMAX] = lambda graph, node: _softmax_params(node)


def softmax_sum_bounds(params, cols: int) -> tuple[int, int]:
    """(smallest, largest) Q12.19 sum of exponentials a row of `cols` int8 values can reach.

    Every element contributes c(d) = RDBPOT(exp(SRDHM(d * 2**shift, multiplier)), 12)
    (0 below diff_min), d = x - max(row) in [-255, 0]; the maximum contributes c(0).
    Both bounds are reached: all values equal (cols * c(0)), and one 127 with every
    other value at the d that minimises c (any d in [-255, 0] is 127 + d for some int8).
    TFLite aborts on a row whose sum reaches 2**28.
    """
    from ..kernels.gemmlowp import _rdbpot_ref, _srdhm_ref
    from ..kernels.softmax import ACCUMULATION_INTEGER_BITS, _exp_on_negative_values_ref

    multiplier, shift, diff_min = params
    d = np.arange(-255, 1, dtype=np.int64)
    keep = d >= diff_min
    e = _exp_on_negative_values_ref(_srdhm_ref(np.where(keep, d, 0) << shift, multiplier))
    contrib = np.where(keep, _rdbpot_ref(e, ACCUMULATION_INTEGER_BITS), 0)
    top = int(contrib[-1])
    return top + (cols - 1) * int(contrib.min()), cols * top


@lowering(op.SOFTMAX)
def softmax(prog, graph, node, shape, engine_dtype):
    from ..kernels.softmax import SUM_LIMIT

    (x,) = _inputs(prog, node)
    multiplier, shift, diff_min = _softmax_params(node)
    axis = int(node.attrs.get("axis", -1))
    if axis % len(shape) != len(shape) - 1:
        raise _fail(node, f"softmax over axis {axis} of {shape}: the int8 kernel takes the last axis")
    if x.dtype != "int8":
        raise _fail(node, f"input stored as {x.dtype}: the int8 softmax takes int8 values")
    cols = int(shape[-1])
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    low, high = softmax_sum_bounds((multiplier, shift, diff_min), cols)
    if cols and low >= SUM_LIMIT:
        raise _fail(node, f"every input makes a row's sum of exponentials reach 2**28 ({cols} "
                          "columns): TFLite's reference kernel aborts on all of them")
    out = _out(prog, node, "int8", shape, engine_dtype)
    if high < SUM_LIMIT:
        note = (f"/* {cols} columns: the sum of exponentials stays below 2**28 (at most {high}), "
                "TFLite's abort cannot happen */")
    else:
        note = (f"/* {cols} columns: a row whose sum of exponentials reaches 2**28 (TFLite aborts) "
                "is written as -128 and model_run returns AIDGE_STATUS_SOFTMAX */")
    call = (f"if (aidge_softmax_i8({x.cname}, {out.cname}, {rows}, {cols}, {multiplier}, {shift}, "
            f"{diff_min}))")
    return _step(node, [note, call, "        status |= AIDGE_STATUS_SOFTMAX;"], [x.name], out)
