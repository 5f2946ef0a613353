"""Window geometry shared by the float and integer engines (conv and pools).

Both engines resolve a window through `window_geometry`, so a geometry they
cannot compute (a kernel larger than the padded input, a pool window lying
entirely in the padding) is refused by both with the same error.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ExecutionError, UnsupportedOperatorError
from ..ir import Node, OpType
from ..ir.validate import check_window_attrs


def window_geometry(node: Node, in_hw, kernel_hw):
    """Resolve strides, dilations and (top, left, bottom, right) pads of a 2-D window.

    Handles ONNX `auto_pad` (SAME_UPPER puts the odd pixel at the end, SAME_LOWER
    at the start) and `ceil_mode` (pools: extra end padding that never counts).
    Returns (strides, dilations, pads, out_hw, ceil_extra) where ceil_extra is
    the end padding added for ceil_mode only.
    """
    attrs = node.attrs
    check_window_attrs(node)  # integers, > 0, pads >= 0: never trust a graph edited since
    strides = tuple(attrs.get("strides", (1, 1)))
    dilations = tuple(attrs.get("dilations", (1, 1)))
    if len(in_hw) != 2 or len(kernel_hw) != 2:
        raise UnsupportedOperatorError(node.name, node.op.value, "only 2-D windows (4-D tensors)")
    if min(in_hw) < 1 or min(kernel_hw) < 1:
        raise ExecutionError(f"node '{node.name}' ({node.op.value}): empty input {tuple(in_hw)} "
                             f"or kernel {tuple(kernel_hw)}")
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(in_hw, kernel_hw, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = (begin[0], begin[1], end[0], end[1])
    elif auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    else:
        p = tuple(attrs.get("pads", (0, 0, 0, 0)))
        pads = (p[0], p[1], p[2], p[3])
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    out_hw, extra = [], []
    for axis in range(2):
        span = in_hw[axis] + pads[axis] + pads[axis + 2]
        eff_k = dilations[axis] * (kernel_hw[axis] - 1) + 1
        if ceil_mode:
            out = math.ceil((span - eff_k) / strides[axis]) + 1
            # a window starting in the end padding is dropped (ONNX/ORT rule)
            if (out - 1) * strides[axis] >= in_hw[axis] + pads[axis]:
                out -= 1
        else:
            out = (span - eff_k) // strides[axis] + 1
        if out <= 0:
            raise ExecutionError(
                f"node '{node.name}' ({node.op.value}): window {eff_k} (kernel {kernel_hw[axis]}, "
                f"dilation {dilations[axis]}) does not fit the padded input {span} along axis "
                f"{axis + 2} (input {tuple(in_hw)}, pads {pads})")
        out_hw.append(out)
        extra.append(max((out - 1) * strides[axis] + eff_k - span, 0))
    if node.op is not OpType.CONV:
        _check_windows_see_input(node, in_hw, kernel_hw, strides, dilations, pads, out_hw)
    if node.op is OpType.AVGPOOL and "rounding" in attrs and attrs.get("count_include_pad") and any(extra):
        # the integer form (both engines): the kernel divides by kh * kw, which would count
        # ceil_mode's extra end padding that ONNX leaves out
        raise UnsupportedOperatorError(node.name, "AveragePool", "ceil_mode with count_include_pad")
    return strides, dilations, pads, tuple(out_hw), tuple(extra)


def _check_windows_see_input(node, in_hw, kernel_hw, strides, dilations, pads, out_hw):
    """Every pool window must read at least one input value: an empty max is -inf in
    floats and has no integer value, an empty average divides by zero."""
    for axis in range(2):
        if pads[axis] == 0 and dilations[axis] == 1 and \
                (out_hw[axis] - 1) * strides[axis] + kernel_hw[axis] <= in_hw[axis]:
            continue  # no padding, no holes, the last window ends inside: all see the input
        starts = np.arange(out_hw[axis], dtype=np.int64) * strides[axis] - pads[axis]
        taps = starts[:, None] + np.arange(kernel_hw[axis], dtype=np.int64) * dilations[axis]
        if not ((taps >= 0) & (taps < in_hw[axis])).any(axis=1).all():
            raise ExecutionError(
                f"node '{node.name}' ({node.op.value}): a pooling window lies entirely in the "
                f"padding along axis {axis + 2} (input {tuple(in_hw)}, kernel {tuple(kernel_hw)}, "
                f"strides {strides}, dilations {dilations}, pads {pads})")
