"""Convolution of the NumPy reference (float and fake-quant engines): NumPy + BLAS only.

Three paths, picked from the geometry, each exact on integer-valued operands
under the `float_ops.compute_dtype` bound (every output is one sum of products,
whatever the order):

- pointwise (1x1, no padding): one GEMM per image straight on the NCHW planes,
  ``w (K, C) @ x (C, H*W)``, no im2col copy and no output transpose;
- depthwise (one input channel per output channel): one multiply-add per tap
  on shifted views, channels-last (`_depthwise_nhwc`) or, for strided layers
  with few channels, on the stride phases of NCHW planes (`_depthwise_phases`);
- anything else: im2col in chunks + one GEMM per chunk and group (`_im2col`).
"""
from __future__ import annotations

import numpy as np

from .float_ops import _blas_threads, _integral, _pad_hw, _padded_hw, _windows, compute_dtype

# Column-matrix bytes per matmul. The matrix is ~KH*KW times the input; at
# 4 MB it stays in the last-level cache between the copy and the matmul:
# mnist-8 calibration (two float64 passes over 1,000 images) 0.52 -> 0.38 s vs
# 32 MB. The chunk sets the matmul's width, and BLAS may sum a column in
# another order at another width (its edge kernels): float outputs can move
# in the last bit with it, as they already did with the batch size.
CHUNK_BYTES = 4 << 20

#: Bytes of the output rows one depthwise block holds: the taps of a block then run
#: on data in L2 (EfficientNet-Lite0's depthwise layers: 32 KB 20 ms, 128 KB 15 ms).
DEPTHWISE_BLOCK_BYTES = 128 << 10


def conv2d(x, w, b, strides, dilations, pads, out_hw, group, facts=None):
    """Grouped 2-D convolution, NCHW, zero padding; bias optional.

    Float operands are computed in their dtype. Integer-valued float64 operands (the
    fake-quant engine) go through `compute_dtype`: float32 or float64 BLAS when every
    partial sum is exact there, else int64; the result is float64 either way.
    `facts`: a cache dict for a constant weight (see `compute_dtype`), which also
    keeps its converted copies.
    """
    n = x.shape[0]
    k, cg, kh, kw = w.shape
    kg = k // group
    dtype = np.result_type(x, w)
    compute = compute_dtype(x, w, cg * kh * kw, facts)
    if x.dtype != compute:
        x = x.astype(compute)
    if w.dtype != compute:
        converted = None if facts is None else facts.get(compute)
        if converted is None:
            converted = w.astype(compute)
            if facts is not None:
                facts[compute] = converted
        w = converted
    if kh == kw == 1 and group == 1 and not any(pads):
        y = _pointwise(x, w.reshape(k, cg), strides, out_hw)
    elif cg == 1 and kg == 1 and group > 1:
        y = _depthwise(x, w.reshape(k, kh * kw), (kh, kw), strides, dilations, pads, out_hw)
    else:
        return _im2col(x, w, b, strides, dilations, pads, out_hw, group, dtype)
    return _add_bias(y, b, dtype)


def _add_bias(y, b, dtype):
    """``y + b`` per channel, in place on the fresh `y`, returned in `dtype`.

    An int64 `y` (exact path) takes an integral bias in int64 too, before the one
    rounding to float64.
    """
    if b is not None:
        shape = (1, -1) + (1,) * (y.ndim - 2)
        if not (y.dtype == np.int64 and _integral(b)):  # float32 compute: add in float64
            y = y.astype(dtype, copy=False)
        y += b.astype(y.dtype, copy=False).reshape(shape)
    return y.astype(dtype, copy=False)


def _pointwise(x, w, strides, out_hw):
    """1x1 convolution: ``w (K, C) @ x[n] (C, OH*OW)`` for each image, one BLAS call each."""
    n, c = x.shape[:2]
    oh, ow = out_hw
    if strides != (1, 1):
        x = x[:, :, ::strides[0], ::strides[1]][:, :, :oh, :ow]
    cols = x.reshape(n, c, oh * ow)  # a view for stride 1; a copy of the kept pixels otherwise
    with _blas_threads(w.shape[0] * c * oh * ow):
        y = np.matmul(w, cols)  # broadcast over the batch: (K, C) @ (N, C, S)
    return y.reshape(n, w.shape[0], oh, ow)


def _depthwise(x, w, kernel, strides, dilations, pads, out_hw):
    """Depthwise convolution, `w` (K, KH*KW): one multiply-add per tap, no GEMM.

    A GEMM per channel would be a 1-row product after a KH*KW-fold im2col copy (2-3x
    slower at 5x5). Channels-last is the fast layout when the planes are small and the
    channels many (a tap is then one long run of C-wide rows); strided layers with few
    channels (MobileNet's 112x112 stride-2 block) keep the NCHW phase form.
    """
    if strides != (1, 1) and x.shape[1] < 128 and dilations == (1, 1) and x.shape[0]:
        # one image at a time: a block's taps then reuse cached data whatever the batch
        return np.concatenate([_depthwise_phases(_pad_hw(x[i:i + 1], pads, (0, 0), 0), w, kernel, strides,
                                                 out_hw) for i in range(x.shape[0])])
    return _depthwise_nhwc(x, w, kernel, strides, dilations, pads, out_hw)


def _depthwise_nhwc(x, w, kernel, strides, dilations, pads, out_hw):
    """Depthwise on a channels-last padded copy of each image, rows in blocks.

    Tap (i, j) reads the (rows, OW, C) view of the padded (H', W', C) image at
    offset (i * dh, j * dw) with the strides: at stride 1 its rows are contiguous
    runs of OW*C values, and the weights are tiled to that length so that every
    multiply is one flat run per row. The first tap writes the block, the others
    add to it.
    """
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, strides, dilations, out_hw
    n, c, h, wd = x.shape
    pt, pl, pb, pr = pads
    flat = sw == 1
    taps = np.ascontiguousarray(w.T)  # (KH*KW, C)
    if flat:
        taps = np.tile(taps, (1, ow))  # (KH*KW, OW*C): the weight of every element of a row
    rows = max(1, min(oh, DEPTHWISE_BLOCK_BYTES // (ow * c * x.dtype.itemsize)))
    y = np.empty((n, c, oh, ow), x.dtype)
    xp = np.zeros((h + pt + pb, wd + pl + pr, c), x.dtype)
    acc = np.empty((oh, ow, c), x.dtype)
    term = np.empty((rows, ow, c), x.dtype)
    for img in range(n):
        xp[pt:pt + h, pl:pl + wd] = x[img].transpose(1, 2, 0)  # the padding stays zero
        for r0 in range(0, oh, rows):
            r1 = min(oh, r0 + rows)
            out, tmp = acc[r0:r1], term[:r1 - r0]
            if flat:
                out, tmp = out.reshape(r1 - r0, ow * c), tmp.reshape(r1 - r0, ow * c)
            for i in range(kh):
                top = r0 * sh + i * dh
                band = xp[top: top + (r1 - r0 - 1) * sh + 1: sh]
                for j in range(kw):
                    src = band[:, j * dw: j * dw + (ow - 1) * sw + 1: sw]
                    if flat:
                        src = src.reshape(r1 - r0, ow * c)  # a view: W and C runs merge
                    if i == 0 and j == 0:
                        np.multiply(src, taps[0], out=out)
                    else:
                        np.multiply(src, taps[i * kw + j], out=tmp)
                        out += tmp
        y[img] = acc.transpose(2, 0, 1)
    return y


def _depthwise_phases(xp, w, kernel, strides, out_hw):
    """Depthwise conv of padded NCHW `xp` on its stride phases, `w` (K, KH*KW).

    With stride s the padded planes are split into their s*s phases (rows and
    columns by residue mod s); tap (i, j) reads phase (i % s, j % s) shifted by
    (i // s, j // s), so every output row is a contiguous run of a flattened phase
    (OW values, then junk up to the phase width, dropped at the end). Channels go in
    blocks of about DEPTHWISE_BLOCK_BYTES so that all taps of a block reuse cached data.
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
    term = np.empty((n, min(block, k), length), xp.dtype)
    for c0 in range(0, k, block):
        c1 = min(k, c0 + block)
        acc, tmp = y[:, c0:c1], term[:, :c1 - c0]
        for i in range(kh):
            for j in range(kw):
                start = (i // sh) * width + j // sw
                src = phases[i % sh, j % sw][:, c0:c1, start:start + length]
                if i == 0 and j == 0:
                    np.multiply(src, w[c0:c1, 0].reshape(1, -1, 1), out=acc)
                else:
                    np.multiply(src, w[c0:c1, i * kw + j].reshape(1, -1, 1), out=tmp)
                    acc += tmp
    return y.reshape(n, k, oh, width)[:, :, :, :ow]


def _im2col(x, w, b, strides, dilations, pads, out_hw, group, dtype):
    """im2col in batch chunks of about CHUNK_BYTES, then one matmul per chunk and group.

    The columns are laid out (group, C/group*KH*KW, N*OH*OW): the gather then
    copies whole output rows (contiguous along W), ~4x faster than putting the
    kernel taps innermost when C/group is small (mnist-8's first layer).
    """
    n = x.shape[0]
    k, cg, kh, kw = w.shape
    oh, ow = out_hw
    compute = x.dtype
    wg = w.reshape(group, k // group, cg * kh * kw)
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
    return _add_bias(y, b if bias is None else None, dtype)
