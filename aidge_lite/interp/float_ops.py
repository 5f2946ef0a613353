"""NumPy implementations of the windowed operators (pools) and of matmul.

Convolution lives in `float_conv` (re-exported here as `conv2d`); pools loop over
the kernel offsets with one vectorised operation per offset. The fake-quant engine computes on
integer-valued float64: a float GEMM is exact there while every partial sum
stays below 2**53 (2**24 in float32), whatever order BLAS sums in. The bound
``max|x| * max|w| * K`` is checked per call (`compute_dtype`): float32 below
2**24, float64 below 2**53, and beyond it an exact int64 product (NumPy's
integer matmul, no BLAS). No Numba kernel is involved: the engines stay
independent. BLAS threads follow the work size (`kernels.threads.blas_threads`).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _patch(xp, i, j, strides, dilations, out_hw):
    """The (…, OH, OW) view of padded `xp` seen by kernel offset (i, j)."""
    (sh, sw), (dh, dw), (oh, ow) = strides, dilations, out_hw
    return xp[..., i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]


def _windows(xp, kernel, strides, dilations, out_hw):
    """Read-only (…, OH, OW, KH, KW) view of every window of padded `xp` (no copy)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, strides, dilations, out_hw
    span = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(-2, -1))
    return span[..., : sh * (oh - 1) + 1: sh, : sw * (ow - 1) + 1: sw, ::dh, ::dw]


def _pad_hw(x, pads, extra, value):
    pt, pl, pb, pr = pads
    widths = [(0, 0)] * (x.ndim - 2) + [(pt, pb + extra[0]), (pl, pr + extra[1])]
    return np.pad(x, widths, constant_values=value)


def matmul(a, b):
    """``a @ b`` (2-D or stacked), exact for integer-valued float64 operands like `conv2d`."""
    dtype = np.result_type(a, b)
    compute = compute_dtype(a, b, a.shape[-1] if a.ndim else 1)
    if compute == dtype:
        with _blas_threads(a.size * (b.shape[-1] if b.ndim else 1)):
            return a @ b
    with _blas_threads(a.size * (b.shape[-1] if b.ndim else 1)):
        return (a.astype(compute) @ b.astype(compute)).astype(dtype)


def compute_dtype(x, w, kdim, facts: dict | None = None) -> np.dtype:
    """The dtype whose GEMM gives exactly the float64 result of an integer-valued product.

    For float64 operands that are all integers, with ``bound = max|x| * max|w| * kdim``:
    every product and partial sum (in any summation order, BLAS's included) is an
    integer of magnitude <= bound. float32 represents them all below 2**24, float64
    below 2**53: the GEMM then returns the exact sum. Beyond 2**53 a float GEMM would
    round partial sums in an order BLAS picks: int64 instead (exact while the sum
    fits, as in the integer engine), rounded once to float64 by the caller. Any other
    operands (float graphs, non-integer values) keep their own dtype.

    `facts`: a dict kept with a constant `w` (the caller's cache) for its max|w| and
    integrality, which then cost one pass over the weights per graph, not per call.
    """
    dtype = np.result_type(x, w)
    if x.dtype != np.float64 or w.dtype != np.float64 or x.size == 0 or w.size == 0:
        return dtype
    facts = {} if facts is None else facts
    ax = max(float(x.max()), -float(x.min()))
    if "peak" not in facts:
        facts["peak"] = max(float(w.max()), -float(w.min()))
    aw = facts["peak"]
    bound = ax * aw * kdim
    if not np.isfinite(bound) or 2.0 ** 24 <= bound < 2.0 ** 53:
        return dtype  # float64 is exact (integers) or is the specification (non-integers)
    if bound >= 2.0 ** 53 and not (ax < 2.0 ** 62 and aw < 2.0 ** 62):
        return dtype  # not int64 material either
    if "integral" not in facts:
        facts["integral"] = _integral(w)
    if not (facts["integral"] and _integral(x)):
        return dtype
    return np.dtype(np.float32) if bound < 2.0 ** 24 else np.dtype(np.int64)


def _integral(a) -> bool:
    return bool(np.array_equal(np.rint(a), a))


def _blas_threads(work):
    from aidge_lite.kernels.threads import blas_threads  # thread control only, no kernel

    return blas_threads(work)


def _padded_hw(x, pads):
    return x.shape[2] + pads[0] + pads[2], x.shape[3] + pads[1] + pads[3]


def max_pool2d(x, kernel, strides, dilations, pads, out_hw, extra):
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    xp = _pad_hw(x, pads, extra, fill)
    out = None
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            patch = _patch(xp, i, j, strides, dilations, out_hw)
            out = patch.copy() if out is None else np.maximum(out, patch)
    return out


def window_sums(x, kernel, strides, dilations, pads, out_hw, extra):
    """Sum of each pooling window (padding contributes zeros)."""
    xp = _pad_hw(x, pads, extra, 0)
    out = np.zeros(x.shape[:2] + tuple(out_hw), dtype=np.result_type(x, np.int64))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            out += _patch(xp, i, j, strides, dilations, out_hw)
    return out


def window_counts(in_hw, kernel, strides, dilations, pads, out_hw, extra, include_pad):
    """How many elements each average-pool window divides by, shape (OH, OW).

    The ceil_mode overhang (`extra`) never counts; explicit pads count only
    when `include_pad`.
    """
    ones = np.ones((1, 1) + tuple(in_hw), dtype=np.int64)
    if include_pad:
        pt, pl, pb, pr = pads
        ones = np.pad(ones, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=1)
        pads = (0, 0, 0, 0)
    return window_sums(ones, kernel, strides, dilations, pads, out_hw, extra)[0, 0]


from .float_conv import conv2d  # noqa: E402,F401  (uses the helpers above)
