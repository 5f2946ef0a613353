"""NumPy implementations of the windowed operators (conv, pools) and of matmul.

Convolution is im2col + a BLAS matmul (depthwise: one multiply-add per tap over
contiguous runs, `_depthwise`); pools loop over the kernel offsets with one
vectorised operation per offset. The fake-quant engine computes on
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
    compute = compute_dtype(x, w, cg * kh * kw)
    wg = w.reshape(group, kg, cg * kh * kw).astype(compute)  # (g, kg, cg*kh*kw)
    if compute != dtype:
        x = x.astype(compute)
    if cg == 1 and kg == 1 and group > 1 and tuple(dilations) == (1, 1):
        y = _depthwise(_pad_hw(x, pads, (0, 0), 0), wg.reshape(k, kh * kw), (kh, kw), strides, out_hw)
        return _with_bias(y, b, dtype, k)
    per_image = max(group * oh * ow * cg * kh * kw * compute.itemsize, 1)
    chunk = max(1, CHUNK_BYTES // per_image)
    exact_int = compute == np.int64
    y = np.empty((n, k, oh, ow), compute if exact_int else dtype)
    # the bias is added as each chunk is stored (one pass less over a large output): in
    # y's dtype, which holds the exact sum for integers, as a separate `y += b` would
    bias = None if b is None or exact_int and not _integral(b) else b.reshape(1, k, 1, 1).astype(y.dtype)
    with _blas_threads(min(n, chunk) * k * oh * ow * cg * kh * kw):  # the work of one matmul
        for start in range(0, n, chunk):
            xs = x[start:start + chunk]
            m = xs.shape[0]
            xp = _pad_hw(xs, pads, (0, 0), 0).reshape(m, group, cg, *_padded_hw(xs, pads))
            windows = _windows(xp, (kh, kw), strides, dilations, out_hw)  # (m, g, cg, oh, ow, kh, kw)
            cols = windows.transpose(1, 2, 5, 6, 0, 3, 4).reshape(group, cg * kh * kw, m * oh * ow)
            out = (wg @ cols).reshape(k, m, oh, ow).transpose(1, 0, 2, 3)  # (m, k, oh, ow)
            if bias is None:
                y[start:start + m] = out
            else:
                np.add(out, bias, out=y[start:start + m])
    return _with_bias(y, b if bias is None else None, dtype, k)


def _with_bias(y, b, dtype, k):
    """``y + b`` per channel in `dtype`; an int64 `y` (exact path) takes an integer bias first."""
    if b is not None:
        if y.dtype == np.int64 and _integral(b):  # the bias too, before the one rounding to float64
            y += b.astype(np.int64).reshape(1, k, 1, 1)
        else:
            y = y.astype(dtype, copy=False)
            y += b.reshape(1, k, 1, 1).astype(dtype)
    return y.astype(dtype, copy=False)


def matmul(a, b):
    """``a @ b`` (2-D or stacked), exact for integer-valued float64 operands like `conv2d`."""
    dtype = np.result_type(a, b)
    compute = compute_dtype(a, b, a.shape[-1] if a.ndim else 1)
    if compute == dtype:
        with _blas_threads(a.size * (b.shape[-1] if b.ndim else 1)):
            return a @ b
    with _blas_threads(a.size * (b.shape[-1] if b.ndim else 1)):
        return (a.astype(compute) @ b.astype(compute)).astype(dtype)


def compute_dtype(x, w, kdim) -> np.dtype:
    """The dtype whose GEMM gives exactly the float64 result of an integer-valued product.

    For float64 operands that are all integers, with ``bound = max|x| * max|w| * kdim``:
    every product and partial sum (in any summation order, BLAS's included) is an
    integer of magnitude <= bound. float32 represents them all below 2**24, float64
    below 2**53: the GEMM then returns the exact sum. Beyond 2**53 a float GEMM would
    round partial sums in an order BLAS picks: int64 instead (exact while the sum
    fits, as in the integer engine), rounded once to float64 by the caller. Any other
    operands (float graphs, non-integer values) keep their own dtype.
    """
    dtype = np.result_type(x, w)
    if x.dtype != np.float64 or w.dtype != np.float64 or x.size == 0 or w.size == 0:
        return dtype
    ax = max(float(x.max()), -float(x.min()))
    aw = max(float(w.max()), -float(w.min()))
    bound = ax * aw * kdim
    if not np.isfinite(bound) or 2.0 ** 24 <= bound < 2.0 ** 53:
        return dtype  # float64 is exact (integers) or is the specification (non-integers)
    if bound >= 2.0 ** 53 and not (ax < 2.0 ** 62 and aw < 2.0 ** 62):
        return dtype  # not int64 material either
    if not (_integral(w) and _integral(x)):
        return dtype
    return np.dtype(np.float32) if bound < 2.0 ** 24 else np.dtype(np.int64)


def _integral(a) -> bool:
    return bool(np.array_equal(np.rint(a), a))


def _blas_threads(work):
    from aidge_lite.kernels.threads import blas_threads  # thread control only, no kernel

    return blas_threads(work)


#: Bytes of one channel block of the depthwise path: its taps then run on data in L2.
DEPTHWISE_BLOCK_BYTES = 128 << 10


def _depthwise(xp, w, kernel, strides, out_hw):
    """Depthwise conv (one input channel per output channel) of padded `xp`, `w` (K, KH*KW).

    One multiply-add per tap instead of a GEMM per channel (a 1-row product after a
    KH*KW-fold im2col copy: 2-3x slower at 5x5): with stride s the padded planes are
    split into their s*s phases (rows and columns by residue mod s); tap (i, j) reads
    phase (i % s, j % s) shifted by (i // s, j // s), so every output row is a contiguous
    run of a flattened phase (OW values, then junk up to the phase width, dropped at the
    end). Channels go in blocks of about DEPTHWISE_BLOCK_BYTES so that all taps of a
    block reuse cached data. Integer-valued operands: each output is one sum of KH*KW
    products, exact under the same bound as the GEMM.
    """
    (kh, kw), (sh, sw), (oh, ow) = kernel, strides, out_hw
    n, k = xp.shape[:2]
    width = -(-xp.shape[3] // sw)
    rows = -(-xp.shape[2] // sh) + 1  # a spare row: a run's junk tail may overhang
    phases = {}
    for a in range(min(sh, kh)):
        for c in range(min(sw, kw)):
            plane = xp[:, :, a::sh, c::sw]
            buf = np.zeros((n, k, rows, width), xp.dtype)
            buf[:, :, :plane.shape[2], :plane.shape[3]] = plane
            phases[a, c] = buf.reshape(n, k, rows * width)
    length = oh * width
    block = max(1, DEPTHWISE_BLOCK_BYTES // (length * xp.dtype.itemsize))
    y = np.empty((n, k, length), xp.dtype)
    for c0 in range(0, k, block):
        c1 = min(k, c0 + block)
        acc = np.zeros((n, c1 - c0, length), xp.dtype)
        term = np.empty_like(acc)
        for i in range(kh):
            for j in range(kw):
                start = (i // sh) * width + j // sw
                src = phases[i % sh, j % sw][:, c0:c1, start:start + length]
                np.multiply(src, w[c0:c1, i * kw + j].reshape(1, -1, 1), out=term)
                acc += term
        y[:, c0:c1] = acc
    return y.reshape(n, k, oh, width)[:, :, :, :ow]


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
