"""Small-channel convolutions with output pixels as SIMD lanes (internal).

For convs with few input channels (an MNIST first layer: C = 1, 5x5), the
implicit GEMM of :mod:`kernels.igemm` has very short taps and must gather an
im2col row per pixel. Here the roles are swapped: a micro-kernel tile is 4
output channels x 16 consecutive output pixels of one output row; the image
is stored once as *pair-interleaved* int16 rows (element ``w`` holds
``(x[w], x[w + 1])``), so the 16 pixels of a kernel-column pair
``(kw, kw + 1)`` are one contiguous load and the weight pair is broadcast —
no im2col, and the output rows are stored contiguously.

Only for ``group == 1``, ``stride_w == 1`` and ``dilation_w == 1``. Exact
under the same bound as the implicit GEMM (:func:`kernels.igemm.int32_exact`
with ``kdim = C * KH * KW``): the padding pair element meets a zero weight.
"""

import numba
import numpy as np

from .igemm import requant_i32_row
from .simd import MK_ROW_4X16

LANES = 16  # pixels per micro-kernel tile
ROWS = 4  # output channels per micro-kernel tile


@numba.njit(cache=True)
def pair_image(x, pt, pb, pl, pr, wq):
    """(N, C, Hp, wq, 2) int16, flat: element ``[n, c, h, w]`` = ``(xp[h, w], xp[h, w + 1])``
    of the zero-padded image ``xp`` (zero beyond its width)."""
    n_size, c_size, h, w = x.shape
    hp = h + pt + pb
    buf = np.zeros(n_size * c_size * hp * wq * 2 + 2 * LANES, np.int16)
    for n in range(n_size):
        for c in range(c_size):
            for i in range(h):
                row = (((n * c_size + c) * hp + i + pt) * wq + pl) * 2
                src = x[n, c, i]
                for j in range(w):
                    v = np.int16(src[j])
                    buf[row + 2 * j] = v  # (x[j], x[j + 1]) at j ...
                    if j + pl >= 1:
                        buf[row + 2 * j - 1] = v  # ... and the second half of pair j - 1
    return buf


@numba.njit(cache=True)
def pack_row_weights(w):
    """(K rounded up to 4, C * KH * ceil(KW / 2), 2) int16 weight pairs, flat; zero padded."""
    k_out, c_size, kh_size, kw_size = w.shape
    npair = (kw_size + 1) // 2
    ntaps = c_size * kh_size * npair
    kp = ((k_out + ROWS - 1) // ROWS) * ROWS
    wq = np.zeros(kp * ntaps * 2, np.int16)
    for k in range(k_out):
        for c in range(c_size):
            for i in range(kh_size):
                for j in range(kw_size):
                    t = (c * kh_size + i) * npair + j // 2
                    wq[(k * ntaps + t) * 2 + j % 2] = w[k, c, i, j]
    return wq


@numba.njit(cache=True)
def _image_tiles(wq, xq, xtaps, geo, n, ctile):
    """ctile (K rounded up to 4, OH, OW rounded up to 16) int32 for image ``n``."""
    c_size, hp, wq_w, sh = geo[0], geo[1], geo[2], geo[3]
    k_pad, oh_size, ow_pad = ctile.shape
    ntaps = xtaps.size
    wrows = np.empty(ROWS, np.int64)
    flat = ctile.ravel()
    ldc = oh_size * ow_pad
    for oh in range(oh_size):
        base = ((n * c_size) * hp + oh * sh) * wq_w * 2
        for k0 in range(0, k_pad, ROWS):
            for r in range(ROWS):
                wrows[r] = (k0 + r) * ntaps * 2
            for ow0 in range(0, ow_pad, LANES):
                MK_ROW_4X16(wq, wrows, ntaps, xq, base + 2 * ow0, xtaps, flat,
                            k0 * ldc + oh * ow_pad + ow0, ldc)


@numba.njit(cache=True, parallel=True)
def rowconv_run(wq, xq, xtaps, geo, bias, out):
    """``out`` (N, K, OH, OW) int64 = ``int64(acc) + bias``, images in parallel.

    ``geo`` = ``[C, Hp, wq_width, stride_h]``; ``xtaps`` are the int16-element
    offsets of the taps ``(c, kh, kw pair)`` in the pair image.
    """
    n_size, k_out, oh_size, ow_size = out.shape
    k_pad = ((k_out + ROWS - 1) // ROWS) * ROWS
    ow_pad = ((ow_size + LANES - 1) // LANES) * LANES
    for n in numba.prange(n_size):
        ctile = np.empty((k_pad, oh_size, ow_pad), np.int32)
        _image_tiles(wq, xq, xtaps, geo, n, ctile)
        for k in range(k_out):
            b = bias[k]
            for oh in range(oh_size):
                crow = ctile[k, oh]
                orow = out[n, k, oh]
                for ow in range(ow_size):
                    orow[ow] = np.int64(crow[ow]) + b
    return out


@numba.njit(cache=True, parallel=True)
def rowconv_requant_run(wq, xq, xtaps, geo, bias, multiplier, rq, out, minmax):
    """:func:`rowconv_run` fused with ``requant_float`` into int16 ``out``; ``minmax[n]``
    gets each image's accumulator range (see ``igemm_requant_run``)."""
    n_size, k_out, oh_size, ow_size = out.shape
    k_pad = ((k_out + ROWS - 1) // ROWS) * ROWS
    ow_pad = ((ow_size + LANES - 1) // LANES) * LANES
    mode = rq[0]
    flo, fhi = np.float64(rq[1]), np.float64(rq[2])
    for n in numba.prange(n_size):
        ctile = np.empty((k_pad, oh_size, ow_pad), np.int32)
        _image_tiles(wq, xq, xtaps, geo, n, ctile)
        plane = np.empty((oh_size, ow_size), np.int32)
        lo_acc = np.int64(2 ** 62)
        hi_acc = -lo_acc
        for k in range(k_out):
            for oh in range(oh_size):  # drop the padding columns: one contiguous plane
                crow = ctile[k, oh]
                prow = plane[oh]
                for ow in range(ow_size):
                    prow[ow] = crow[ow]
            lo, hi = requant_i32_row(plane.ravel(), bias[k], multiplier[k], mode, flo, fhi,
                                     out[n, k].ravel())
            lo_acc = min(lo_acc, lo)
            hi_acc = max(hi_acc, hi)
        minmax[n, 0] = lo_acc
        minmax[n, 1] = hi_acc
    return out


@numba.njit(cache=True)
def rowconv_setup(x, w, geometry, ow_size):
    """Pair image, packed weights, tap offsets and geo of :func:`rowconv_run`."""
    _, c_size, h, _ = x.shape
    kh_size, kw_size = w.shape[2], w.shape[3]
    pt, pl, pb, pr, dh = geometry[2], geometry[3], geometry[4], geometry[5], geometry[6]
    hp = h + pt + pb
    ow_pad = ((ow_size + LANES - 1) // LANES) * LANES
    wq_w = ow_pad + kw_size + 1  # every tile's reads stay inside its own row
    xq = pair_image(x, pt, pb, pl, pr, wq_w)
    npair = (kw_size + 1) // 2
    xtaps = np.empty(c_size * kh_size * npair, np.int64)
    for c in range(c_size):
        for i in range(kh_size):
            for p in range(npair):
                xtaps[(c * kh_size + i) * npair + p] = ((c * hp + i * dh) * wq_w + 2 * p) * 2
    geo = np.array([c_size, hp, wq_w, geometry[0]], np.int64)
    return pack_row_weights(w), xq, xtaps, geo
