"""Window geometry shared by the float and integer engines (conv and pools)."""
from __future__ import annotations

import math

from ..errors import UnsupportedOperatorError
from ..ir import Node


def window_geometry(node: Node, in_hw, kernel_hw):
    """Resolve strides, dilations and (top, left, bottom, right) pads of a 2-D window.

    Handles ONNX `auto_pad` (SAME_UPPER puts the odd pixel at the end, SAME_LOWER
    at the start) and `ceil_mode` (pools: extra end padding that never counts).
    Returns (strides, dilations, pads, out_hw, ceil_extra) where ceil_extra is
    the end padding added for ceil_mode only.
    """
    attrs = node.attrs
    strides = tuple(attrs.get("strides", (1, 1)))
    dilations = tuple(attrs.get("dilations", (1, 1)))
    if len(in_hw) != 2 or len(kernel_hw) != 2:
        raise UnsupportedOperatorError(node.name, node.op.value, "only 2-D windows (4-D tensors)")
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
        out_hw.append(max(out, 0))
        extra.append(max((out - 1) * strides[axis] + eff_k - span, 0))
    return strides, dilations, pads, tuple(out_hw), tuple(extra)
