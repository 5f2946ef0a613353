"""Fast exact paths of ``conv2d`` and ``gemm`` (internal).

Both become an *implicit GEMM* over int16 operands with int32 accumulation,
computed by the register-blocked micro-kernels of :mod:`kernels.simd`:

* activations are copied once into a zero-padded NHWC int16 buffer
  (``xbuf``); every output pixel is a row whose elements are read in place
  through a list of tap offsets (no im2col copy): with ``dilation_w == 1``
  and one group, the ``KW * C`` elements of a kernel row are contiguous, so
  a 3x3 conv has 3 taps of ``3 * C`` elements;
* weights are packed per call into 8- or 16-column panels of int16 pairs;
* the int32 tile of a block of 96 pixels is widened to int64, the bias is
  added and the result is stored in the caller's int64 NCHW output.
  Blocks (split by weight panels when they are too few to balance, see
  :func:`_panel_split`) are spread over threads with ``prange``.

Exactness (proved per call by :func:`int32_exact`)
--------------------------------------------------
Let ``ax = max|x|`` and ``aw = max|w|`` over the actual operands and
``kdim`` the number of products of one output (``C/group * KH * KW``, or
``K`` for gemm). The fast path is taken only if ``ax, aw <= 32767`` (exact
int16 operands) and ``ax * aw * kdim <= 2**31 - 1``. Every partial sum the
micro-kernel forms (each ``vpmaddwd`` pair ``a0*b0 + a1*b1`` and each
running ``vpaddd`` total) is a sum of at most ``kdim`` products of
magnitude ``<= ax * aw`` (padding elements multiply a zero weight), hence
fits in int32: int32 arithmetic, which is exact modulo 2**32, returns the
exact integer. int8/uint8 activations with int8 weights give
``ax * aw <= 255 * 128``, i.e. any ``kdim <= 65793``. Otherwise the callers
fall back to their direct int64 loops.
"""

import numba
import numpy as np

from .rounding import FLOOR, HALF_AWAY, HALF_EVEN, round_float
from .simd import MK_6X16, MK_8X8

BLOCK = 96  # output pixels per parallel work item (a multiple of both MR values: 6 and 8)
SLACK = 8  # int16 elements after xbuf: a run padded to an even length may read one past
INT32_MAX = 2 ** 31 - 1
IM2COL_BELOW = 12  # taps shorter than this many int16 pairs are gathered (fused im2col)


@numba.njit(cache=True)
def requant_i32_row(src, b, m, mode, flo, fhi, dst):
    """``dst[i] = int16(clip(round_float(float64(int64(src[i]) + b) * m, mode), flo, fhi))``.

    Returns the ``(min, max)`` of ``int64(src) + b``. Same values as
    ``requant_float`` on the int64 accumulators: for ``|b| < 2**52`` the
    float64 sum ``float64(src[i]) + float64(b)`` is exact (integers far below
    2**53), so it equals ``float64(int64(src[i]) + b)``; written that way, and
    with one loop per rounding mode, the loop vectorises (AVX2 has no
    int64 -> float64 conversion). Larger biases take the scalar path.
    """
    size = src.size
    if size == 0:
        return np.int64(0), np.int64(0)
    lo32 = src[0]
    hi32 = src[0]
    for i in range(size):
        lo32 = min(lo32, src[i])
        hi32 = max(hi32, src[i])
    if abs(b) >= 2 ** 52:
        for i in range(size):
            y = round_float(np.float64(np.int64(src[i]) + b) * m, mode)
            dst[i] = np.int16(min(max(y, flo), fhi))
        return np.int64(lo32) + b, np.int64(hi32) + b
    fb = np.float64(b)
    if mode == HALF_EVEN:
        for i in range(size):
            dst[i] = np.int16(min(max(np.rint((np.float64(src[i]) + fb) * m), flo), fhi))
    elif mode == FLOOR:
        for i in range(size):
            dst[i] = np.int16(min(max(np.floor((np.float64(src[i]) + fb) * m), flo), fhi))
    elif mode == HALF_AWAY:
        for i in range(size):
            y = (np.float64(src[i]) + fb) * m
            t = np.trunc(y)
            d = y - t  # exact; |d| >= 1/2 moves away from zero
            t += (1.0 if d >= 0.5 else 0.0) - (1.0 if d <= -0.5 else 0.0)
            dst[i] = np.int16(min(max(t, flo), fhi))
    else:
        for i in range(size):
            y = round_float((np.float64(src[i]) + fb) * m, mode)
            dst[i] = np.int16(min(max(y, flo), fhi))
    return np.int64(lo32) + b, np.int64(hi32) + b


@numba.njit(cache=True)
def max_abs(a):
    """``max |a|`` as int64 over an integer array of any shape (0 if empty).

    Min and max are tracked in the array's own dtype with selects, not
    branches, so the scan vectorises (23x faster on 1M int16 than the
    branchy int64 version: it was 10 % of a 1024 GEMM, all serial).
    """
    flat = a.ravel()
    if flat.size == 0:
        return np.int64(0)
    hi = flat[0]
    lo = flat[0]
    for i in range(flat.size):
        v = flat[i]
        hi = v if v > hi else hi
        lo = v if v < lo else lo
    return max(np.int64(hi), -np.int64(lo))


@numba.njit(cache=True)
def int32_exact(ax, aw, kdim):
    """True when int16 operands and int32 accumulation are exact (module doc)."""
    if ax > 32767 or aw > 32767 or kdim > INT32_MAX:
        return False
    return ax * aw * kdim <= INT32_MAX


@numba.njit(cache=True, parallel=True)
def nhwc_int16(x, pt, pb, pl, pr):
    """Zero-padded NHWC int16 copy of an (N, C, H, W) array, flat, plus SLACK zeros.

    Values must fit int16 (checked by the caller with :func:`max_abs`).
    Image rows are copied in parallel: serial, this copy was 13 % of a
    one-image ResNet 3x3 conv and capped its 2-thread speed-up.
    """
    n_size, c_size, h, w = x.shape
    hp, wp = h + pt + pb, w + pl + pr
    buf = np.zeros(n_size * hp * wp * c_size + SLACK, np.int16)
    for r in numba.prange(n_size * h):
        n, i = r // h, r % h
        for c in range(c_size):
            row = ((n * hp + i + pt) * wp + pl) * c_size + c
            for j in range(w):
                buf[row + j * c_size] = x[n, c, i, j]
    return buf


@numba.njit(cache=True)
def pack_conv_weights(w, groups, kw_contiguous, pw, kp, im2col):
    """Pack (K, C/g, KH, KW) weights into int16 panels for the micro-kernels.

    Layout: ``[group][panel][tap][pair i][column l // 8][l % 8][h]`` with
    ``pw`` columns per panel and ``kp`` pairs per tap; a tap is a kernel row
    (``kw_contiguous``: elements ``e = kw * C + c``) or a kernel position
    (elements ``e = c``). With ``im2col`` all taps are concatenated into one
    (element ``t * run + e``), as the fused im2col of :func:`igemm_run`
    lays them out. Missing columns and the odd padding element are 0.
    """
    k_out, cg, kh_size, kw_size = w.shape
    kg = k_out // groups
    npanel = (kg + pw - 1) // pw
    ntaps = kh_size if kw_contiguous else kh_size * kw_size
    run = kw_size * cg if kw_contiguous else cg
    panel_size = (1 if im2col else ntaps) * kp * pw * 2
    bp = np.zeros(groups * npanel * panel_size, np.int16)
    for g in range(groups):
        for p in range(npanel):
            base = (g * npanel + p) * panel_size
            for t in range(ntaps):
                for e in range(run):
                    if kw_contiguous:
                        kh, kw, c = t, e // cg, e % cg
                    else:
                        kh, kw, c = t // kw_size, t % kw_size, e
                    if im2col:
                        flat = t * run + e
                        row = base + (flat // 2) * pw * 2 + flat % 2
                    else:
                        row = base + (t * kp + e // 2) * pw * 2 + e % 2
                    for l in range(min(pw, kg - p * pw)):
                        bp[row + (l // 8) * 16 + (l % 8) * 2] = w[g * kg + p * pw + l, c, kh, kw]
    return bp


@numba.njit(cache=True, parallel=True)
def pack_gemm_weights(b, pw, kp):
    """Pack a (K, N) right operand like :func:`pack_conv_weights` (one tap).

    Panels are packed in parallel: at N = 1024 packing is ~9 % of the GEMM
    and would otherwise cap the 2-thread speed-up.
    """
    k_size, n_size = b.shape
    npanel = (n_size + pw - 1) // pw
    panel_size = kp * pw * 2
    bp = np.zeros(npanel * panel_size, np.int16)
    for p in numba.prange(npanel):
        for e in range(k_size):
            row = p * panel_size + (e // 2) * pw * 2 + e % 2
            for l in range(min(pw, n_size - p * pw)):
                bp[row + (l // 8) * 16 + (l % 8) * 2] = b[e, p * pw + l]
    return bp


@numba.njit(cache=True)
def _block_tile(xbuf, geo, taps, kp, bp, blk, g, p0, p1, ctile, rows):
    """int32 tile (BLOCK rows x ldc) of pixel block ``blk`` and group ``g`` into ``ctile``.

    Only the columns of weight panels ``p0 .. p1 - 1`` are computed.
    """
    m_size, s_size, ow_size = geo[0], geo[1], geo[2]
    img_stride, row_stride, col_stride = geo[3], geo[4], geo[5]
    grp_stride, kg, pw, run = geo[7], geo[8], geo[9], geo[10]
    ntaps = taps.size
    npanel = (kg + pw - 1) // pw
    panel_size = (1 if run > 0 else ntaps) * kp * pw * 2
    mr = 6 if pw == 16 else 8
    ldc = npanel * pw
    m0 = blk * BLOCK
    m1 = min(m_size, m0 + BLOCK)
    n = m0 // s_size
    s = m0 - n * s_size
    for r in range(BLOCK + 8):
        if m0 + r < m_size:  # a tail tile repeats the last row
            oh = s // ow_size
            rows[r] = (n * img_stride + oh * row_stride + (s - oh * ow_size) * col_stride
                       + g * grp_stride)
            s += 1
            if s == s_size:
                s = 0
                n += 1
        else:
            rows[r] = rows[r - 1]
    src_buf, src_taps, src_ntaps, src_kp = xbuf, taps, ntaps, kp
    if run > 0:  # fused im2col of this block: rows become contiguous, one tap
        ldk = 2 * ((ntaps * run + 1) // 2)
        # Not zeroed: the odd padding element of a row meets a zero weight.
        cols = np.empty((BLOCK + 8) * ldk + SLACK, np.int16)
        for r in range(BLOCK + 8):
            # unsigned indices: no negative-index wrap-around test, so the copies vectorise
            dst = np.uint64(r * ldk)
            for t in range(ntaps):
                src = np.uint64(rows[r] + taps[t])
                if run <= SLACK:  # fixed-width copy; the overrun is rewritten by the next tap/row
                    for e in range(SLACK):
                        cols[dst + np.uint64(e)] = xbuf[src + np.uint64(e)]
                else:
                    for e in range(run):
                        cols[dst + np.uint64(e)] = xbuf[src + np.uint64(e)]
                dst += np.uint64(run)
            rows[r] = r * ldk
        src_buf, src_taps, src_ntaps, src_kp = cols, np.zeros(1, np.int64), 1, ldk // 2
    for p in range(p0, p1):  # panel outer: its weights stay in L1 across the tiles
        b_off = (g * npanel + p) * panel_size
        for r0 in range(0, m1 - m0, mr):
            c_off = r0 * ldc + p * pw
            if pw == 16:
                MK_6X16(src_buf, rows[r0:r0 + mr], src_taps, src_ntaps, src_kp, bp, b_off,
                        ctile, c_off, ldc)
            else:
                MK_8X8(src_buf, rows[r0:r0 + mr], src_taps, src_ntaps, src_kp, bp, b_off,
                       ctile, c_off, ldc)


@numba.njit(cache=True, parallel=True)
def igemm_run(xbuf, geo, taps, kp, bp, bias, out, threads):
    """Run the implicit GEMM and store ``int64(tile) + bias`` into ``out`` (N, K, S).

    ``geo`` = ``[M, S, OW, image_stride, row_stride, col_stride, groups,
    group_stride, kg, pw, run]`` (strides in int16 elements of ``xbuf``): output
    row ``m`` is pixel ``s = m % S`` of image ``n = m // S``, at
    ``oh, ow = divmod(s, OW)``; it reads ``xbuf`` from
    ``n * image_stride + oh * row_stride + ow * col_stride + g * group_stride``
    plus each tap offset. ``bias`` is int64 (K,). With ``run > 0`` (short
    taps), each block first gathers its rows' ``ntaps * run`` elements into a
    contiguous buffer (fused im2col) and ``bp`` must be packed for one tap of
    ``ceil(ntaps * run / 2)`` pairs.
    """
    m_size, s_size = geo[0], geo[1]
    groups, kg, pw = geo[6], geo[8], geo[9]
    npanel = (kg + pw - 1) // pw
    ldc = npanel * pw
    nblocks = (m_size + BLOCK - 1) // BLOCK
    nsplit = _panel_split(nblocks, npanel, threads)
    for item in numba.prange(nblocks * nsplit):
        blk, part = item // nsplit, item % nsplit
        p0, p1 = part * npanel // nsplit, (part + 1) * npanel // nsplit
        k0, k1 = p0 * pw, min(p1 * pw, kg)
        m0 = blk * BLOCK
        m1 = min(m_size, m0 + BLOCK)
        ctile = np.empty(BLOCK * ldc, np.int32)
        rows = np.empty(BLOCK + 8, np.int64)
        for g in range(groups):
            _block_tile(xbuf, geo, taps, kp, bp, blk, g, p0, p1, ctile, rows)
            ct2 = ctile.reshape((BLOCK, ldc))
            if s_size == 1:  # gemm: (M, N, 1), row-major stores
                for r in range(m1 - m0):
                    crow = ct2[r]
                    orow = out[m0 + r, g * kg:(g + 1) * kg, 0]
                    brow = bias[g * kg:(g + 1) * kg]
                    for k in range(k0, k1):
                        orow[k] = np.int64(crow[k]) + brow[k]
                continue
            n = m0 // s_size
            s0 = m0 - n * s_size
            r = 0
            while r < m1 - m0:  # one image segment at a time: contiguous stores along s
                seg = min(m1 - m0 - r, s_size - s0)
                cseg = ct2[r:r + seg]
                for k in range(k0, k1):
                    kk = g * kg + k
                    b = bias[kk]
                    orow = out[n, kk, s0:s0 + seg]
                    for q in range(seg):
                        orow[q] = np.int64(cseg[q, k]) + b
                r += seg
                n += 1
                s0 = 0
    return out


@numba.njit(cache=True)
def _panel_split(nblocks, npanel, threads):
    """Parts each pixel block's weight panels are cut into, so threads get equal work.

    Few blocks that do not divide evenly among the threads (a 1024-row GEMM
    has 11 blocks: 6 + 5 on two threads, one idle for a sixth of the run) are
    split by panels; many blocks balance by themselves, and splitting repeats
    the per-block row set-up (and the fused im2col gather), so they are not.
    """
    if threads <= 1 or nblocks % threads == 0 or nblocks >= 8 * threads:
        return 1
    for nsplit in range(2, threads + 1):
        if (nblocks * nsplit) % threads == 0 and nsplit <= npanel:
            return nsplit
    return min(threads, npanel)


@numba.njit(cache=True, parallel=True)
def igemm_requant_run(xbuf, geo, taps, kp, bp, bias, multiplier, rq, out, minmax):
    """:func:`igemm_run` fused with ``requant_float`` into an int16 ``out`` (N, K, S).

    ``rq`` = ``[mode, lo, hi]`` with ``|lo|, |hi| <= 2**15``. Each output is
    ``clip(round_float(float64(acc) * multiplier[k], mode), lo, hi)`` with
    ``acc = int64(tile) + bias[k]``, the same single float64 product as
    ``requant_float``. ``minmax[blk]`` receives the block's accumulator
    ``[min, max]`` so the caller can check the accumulator width afterwards.
    """
    m_size, s_size = geo[0], geo[1]
    groups, kg, pw = geo[6], geo[8], geo[9]
    mode = rq[0]
    flo, fhi = np.float64(rq[1]), np.float64(rq[2])
    npanel = (kg + pw - 1) // pw
    ldc = npanel * pw
    nblocks = (m_size + BLOCK - 1) // BLOCK
    for blk in numba.prange(nblocks):
        m0 = blk * BLOCK
        m1 = min(m_size, m0 + BLOCK)
        ctile = np.empty(BLOCK * ldc, np.int32)
        rows = np.empty(BLOCK + 8, np.int64)
        col = np.empty(BLOCK, np.int32)
        lo_acc = np.int64(2 ** 62)
        hi_acc = -lo_acc
        for g in range(groups):
            _block_tile(xbuf, geo, taps, kp, bp, blk, g, 0, npanel, ctile, rows)
            ct2 = ctile.reshape((BLOCK, ldc))
            n = m0 // s_size
            s0 = m0 - n * s_size
            r = 0
            while r < m1 - m0:
                seg = min(m1 - m0 - r, s_size - s0)
                cseg = ct2[r:r + seg]
                for k in range(kg):
                    kk = g * kg + k
                    for q in range(seg):  # gather the column contiguously
                        col[q] = cseg[q, k]
                    lo, hi = requant_i32_row(col[:seg], bias[kk], multiplier[kk], mode, flo, fhi,
                                             out[n, kk, s0:s0 + seg])
                    lo_acc = min(lo_acc, lo)
                    hi_acc = max(hi_acc, hi)
                r += seg
                n += 1
                s0 = 0
        minmax[blk, 0] = lo_acc
        minmax[blk, 1] = hi_acc
    return out


@numba.njit(cache=True)
def nchw_int16(x, pt, pb, pl, pr):
    """Zero-padded (N, C, Hp, Wp) int16 copy of an (N, C, H, W) array (values fit int16)."""
    n_size, c_size, h, w = x.shape
    buf = np.zeros((n_size, c_size, h + pt + pb, w + pl + pr), np.int16)
    for n in range(n_size):
        for c in range(c_size):
            for i in range(h):
                src = x[n, c, i]
                dst = buf[n, c, i + pt, pl:pl + w]
                for j in range(w):
                    dst[j] = src[j]
    return buf


@numba.njit(cache=True)
def _depthwise_plane(xp, w, stride, dil, acc):
    """acc (OH, OW) int32 = depthwise taps of one padded int16 plane ``xp`` with (KH, KW) ``w``."""
    oh_size, ow_size = acc.shape
    sh, sw, dh, dw = stride[0], stride[1], dil[0], dil[1]
    usw = np.uint64(sw)
    if sh == 1 and sw == 1:
        # Stride 1: one long vectorised loop per tap over the plane flattened with its padded
        # width (wp - OW junk columns per row, dropped at the end).
        wp = xp.shape[1]
        length = (oh_size - 1) * wp + ow_size
        flat = xp.ravel()
        wide = np.zeros(length, np.int32)
        for kh in range(w.shape[0]):
            for kw in range(w.shape[1]):
                wv = np.int32(w[kh, kw])
                off = kh * dh * wp + kw * dw
                src = flat[off:off + length]
                for i in range(length):
                    wide[i] = wide[i] + wv * np.int32(src[i])
        for oh in range(oh_size):
            row = wide[oh * wp:oh * wp + ow_size]
            arow = acc[oh]
            for ow in range(ow_size):
                arow[ow] = row[ow]
        return
    acc[:] = 0
    for oh in range(oh_size):
        arow = acc[oh]
        for kh in range(w.shape[0]):
            ih = np.uint64(oh * sh + kh * dh)
            for kw in range(w.shape[1]):
                wv = np.int32(w[kh, kw])
                base = np.uint64(kw * dw)
                if sw == 1:  # unsigned indices: no wrap-around test, vectorised
                    for ow in range(ow_size):
                        arow[ow] = arow[ow] + wv * np.int32(xp[ih, base + np.uint64(ow)])
                else:
                    for ow in range(ow_size):
                        arow[ow] = arow[ow] + wv * np.int32(xp[ih, base + np.uint64(ow) * usw])


@numba.njit(cache=True, parallel=True)
def depthwise_run(xpad, w32, geo, bias, out):
    """Depthwise conv (group == C == K) on padded NCHW int16 planes, int32 lanes along OW.

    ``w32`` is (C, KH, KW) int32, ``geo`` = ``[sh, sw, dh, dw]``; stores
    ``int64(acc) + bias`` into ``out`` (N, C, OH, OW). Exact under the same
    int32 bound as the implicit GEMM (``kdim = KH * KW``).
    """
    n_size, c_size, oh_size, ow_size = out.shape
    for job in numba.prange(n_size * c_size):
        n = job // c_size
        c = job - n * c_size
        acc = np.empty((oh_size, ow_size), np.int32)
        _depthwise_plane(xpad[n, c], w32[c], geo[0:2], geo[2:4], acc)
        b = bias[c]
        for oh in range(oh_size):
            arow = acc[oh]
            orow = out[n, c, oh]
            for ow in range(ow_size):
                orow[ow] = np.int64(arow[ow]) + b
    return out


@numba.njit(cache=True, parallel=True)
def depthwise_requant_run(xpad, w32, geo, bias, multiplier, rq, out, minmax):
    """:func:`depthwise_run` fused with ``requant_float`` into int16 ``out`` (see
    :func:`igemm_requant_run`); ``minmax[job]`` gets each plane's accumulator range."""
    n_size, c_size, oh_size, ow_size = out.shape
    mode = rq[0]
    flo, fhi = np.float64(rq[1]), np.float64(rq[2])
    for job in numba.prange(n_size * c_size):
        n = job // c_size
        c = job - n * c_size
        acc = np.empty((oh_size, ow_size), np.int32)
        _depthwise_plane(xpad[n, c], w32[c], geo[0:2], geo[2:4], acc)
        lo, hi = requant_i32_row(acc.ravel(), bias[c], multiplier[c], mode, flo, fhi,
                                 out[n, c].ravel())
        minmax[job, 0] = lo
        minmax[job, 1] = hi
    return out
