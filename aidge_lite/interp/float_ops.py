"""NumPy implementations of the windowed operators (conv, pools).

Both loop over the kernel offsets and do one vectorised operation per offset:
memory stays at one patch, and with integer-valued float64 operands every sum
is exact (all partial sums stay far below 2**53).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


# Column-matrix bytes per matmul. The matrix is ~KH*KW times the input; at
# 4 MB it stays in the last-level cache between the copy and the matmul:
# mnist-8 calibration (two float64 passes over 1,000 images) 0.52 -> 0.38 s vs
# 32 MB. The chunk sets the matmul's width, and BLAS may sum a column in
# another order at another width (its edge kernels): float outputs can move
# in the last bit with it, as they already did with the batch size. Measured
# on the zoo: the quantized graphs of 36 model x option cases bit-identical,
# float32 logits of 2,000 test images within 1 ulp, no prediction changed.
CHUNK_BYTES = 4 << 20


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


def conv2d(x, w, b, strides, dilations, pads, out_hw, group):
    """Grouped 2-D convolution, NCHW, zero padding; bias optional.

    im2col in batch chunks of about CHUNK_BYTES, then one matmul per chunk and group.
    The columns are laid out (group, C/group*KH*KW, N*OH*OW): the gather then
    copies whole output rows (contiguous along W), ~4x faster than putting the
    kernel taps innermost when C/group is small (mnist-8's first layer).
    """
    n = x.shape[0]
    k, cg, kh, kw = w.shape
    oh, ow = out_hw
    kg = k // group
    dtype = np.result_type(x, w)
    compute = np.dtype(np.float32) if _exact_in_float32(x, w, cg * kh * kw) else dtype
    wg = w.reshape(group, kg, cg * kh * kw).astype(compute)  # (g, kg, cg*kh*kw)
    if compute != dtype:
        x = x.astype(compute)
    per_image = max(group * oh * ow * cg * kh * kw * compute.itemsize, 1)
    chunk = max(1, CHUNK_BYTES // per_image)
    y = np.empty((n, k, oh, ow), dtype)
    for start in range(0, n, chunk):
        xs = x[start:start + chunk]
        m = xs.shape[0]
        xp = _pad_hw(xs, pads, (0, 0), 0).reshape(m, group, cg, *_padded_hw(xs, pads))
        windows = _windows(xp, (kh, kw), strides, dilations, out_hw)  # (m, g, cg, oh, ow, kh, kw)
        cols = windows.transpose(1, 2, 5, 6, 0, 3, 4).reshape(group, cg * kh * kw, m * oh * ow)
        out = wg @ cols  # (g, kg, m*oh*ow)
        y[start:start + m] = out.reshape(k, m, oh, ow).transpose(1, 0, 2, 3)
    if b is not None:
        y += b.reshape(1, k, 1, 1).astype(dtype)
    return y


def _exact_in_float32(x, w, kdim) -> bool:
    """True when a float32 GEMM gives exactly the float64 result of this integer-valued conv.

    Holds for float64 operands that are all integers with
    ``max|x| * max|w| * kdim < 2**24``: every product and every partial sum
    (in any summation order, BLAS's included) is then an integer of
    magnitude < 2**24, exactly representable in float32, so no rounding ever
    happens and the result equals the exact sum, as float64 computes it.
    The fake-quant engine's convolutions (8-bit integers) qualify.
    """
    if x.dtype != np.float64 or w.dtype != np.float64 or x.size == 0 or w.size == 0:
        return False
    ax = max(float(x.max()), -float(x.min()))
    aw = max(float(w.max()), -float(w.min()))
    if not ax * aw * kdim < 2.0 ** 24:  # also False for NaN
        return False
    return bool(np.array_equal(np.rint(w), w) and np.array_equal(np.rint(x), x))


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
