"""Depthwise convolutions with AVX-512 VNNI (internal).

A depthwise conv (``group == C == K``, one input channel per output) has no
reduction over channels, so :mod:`kernels.igemm` cannot use it; here output
pixels are the SIMD lanes and two *horizontal taps* make one ``vpdpwssd``
pair. Each channel plane is copied once into a *pair plane* ``Q`` of int16
pairs, so that the taps ``(kw, kw + 1)`` of output ``(oh, ow)`` are one int32
element:

* ``stride_w == 1``: ``Q[r, j] = (xp[r, j], xp[r, j + 1])``; tap pair ``i``
  (``kw = 2i, 2i + 1``) of output column ``ow`` is ``Q[., ow + 2i]``;
* ``stride_w == 2``: ``Q[r, j] = (xp[r, 2j], xp[r, 2j + 1])`` (the padded row
  itself); tap pair ``i`` is ``Q[., ow + i]``;

where ``xp`` is the zero-padded plane. Rows are stored by phase
(``r = row // stride_h`` within phase ``row % stride_h``), so output row
``oh``, kernel row ``kh`` reads phase ``kh % stride_h``, row ``oh + kh //
stride_h``: every tap is one constant offset from the output's flat index
``L = oh * wq + ow`` (``wq`` the pair-row width). The kernel computes all
``L < (OH - 1) * wq + OW`` with 16 lanes per vector (the ``wq - OW`` columns
between rows are computed and dropped), and a weight pair ``(w[kh, 2i],
w[kh, 2i + 1])`` (0 past ``KW``) is broadcast per tap. A 3x3 kernel takes 6
``vpdpwssd`` per 16 outputs, a 5x5 one 15.

Exact under the bound of the other int16 paths
(:func:`kernels.igemm.int32_exact`, ``kdim = KH * KW``): every lane, kept or
dropped, sums at most ``KH * KW`` products of real or zero inputs by real or
zero weights, and ``vpdpwssd`` wraps modulo 2**32. Only for a host with
AVX-512 VNNI, dilation 1 and ``stride_w`` 1 or 2 (:func:`use_depthwise`);
the other cases keep :func:`kernels.igemm.depthwise_run`.
"""

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from .igemm import requant_i32_row
from .pointwise import HAS_VNNI512

SLACK = 128  # int32 elements after each pair plane: the last vectors read past its end
PLANES = 16  # output channels per parallel work item: they share one zeroed pair-plane buffer
MAX_CG = 4  # input channels per group up to which a (grouped) conv takes this path
_I32, _I64 = ir.IntType(32), ir.IntType(64)
_V16I32 = ir.VectorType(_I32, 16)


def _make_kernel(nv):
    """Intrinsic for ``16 * nv`` lanes: ``acc[acc_off + l] = sum_t vpdpwssd(
    bcast(wq pair w_off / 2 + t), Q[q_off / 2 + taps[t] + l])`` (offsets in int16 elements)."""

    @intrinsic
    def kernel(typingctx, q, q_off, taps, ntaps, wq, w_off, acc, acc_off):
        sig = types.void(q, q_off, taps, ntaps, wq, w_off, acc, acc_off)

        def codegen(context, builder, signature, args):
            aty = signature.args

            def data(i):
                return context.make_array(aty[i])(context, builder, args[i]).data

            def int64(i):
                return context.cast(builder, args[i], aty[i], types.int64)

            q_ptr, taps_ptr, w_ptr, acc_ptr = data(0), data(2), data(4), data(6)
            q_off, ntaps, w_off, acc_off = int64(1), int64(3), int64(5), int64(7)
            dpwssd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_V16I32, [_V16I32] * 3), "llvm.x86.avx512.vpdpwssd.512")

            def const(v):
                return ir.Constant(_I64, v)

            q_start = builder.gep(q_ptr, [q_off])
            w_start = builder.gep(w_ptr, [w_off])
            zero = ir.Constant(_V16I32, [0] * 16)
            acc = [cgutils.alloca_once_value(builder, zero) for _ in range(nv)]
            with cgutils.for_range(builder, ntaps) as loop:
                t = loop.index
                tap = builder.shl(builder.load(builder.gep(taps_ptr, [t])), const(1))
                pair = builder.load(builder.bitcast(builder.gep(w_start, [builder.shl(t, const(1))]),
                                                    _I32.as_pointer()), align=2)
                bcast = builder.insert_element(ir.Constant(_V16I32, None), pair, ir.Constant(_I32, 0))
                bcast = builder.shuffle_vector(bcast, ir.Constant(_V16I32, None),
                                               ir.Constant(_V16I32, [0] * 16))
                src = builder.gep(q_start, [tap])
                for v in range(nv):
                    xv = builder.load(builder.bitcast(builder.gep(src, [const(32 * v)]),
                                                      _V16I32.as_pointer()), align=2)
                    builder.store(builder.call(dpwssd, [builder.load(acc[v]), bcast, xv]), acc[v])
            for v in range(nv):
                p = builder.bitcast(builder.gep(acc_ptr, [builder.add(acc_off, const(16 * v))]),
                                    _V16I32.as_pointer())
                builder.store(builder.load(acc[v]), p, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return kernel


_DW_X4 = _make_kernel(4)
_DW_X1 = _make_kernel(1)


def use_depthwise(x_shape, w_shape, geometry) -> bool:
    """Whether :func:`kernels.conv2d` takes this path: AVX-512 VNNI host, dilation 1,
    ``stride_w`` 1 or 2, and few input channels per group (depthwise ``group == C``, or
    up to :data:`MAX_CG` per group: an RGB stem conv)."""
    groups = geometry[8]
    return bool(HAS_VNNI512 and w_shape[1] * groups == x_shape[1] and w_shape[0] % groups == 0
                and (w_shape[1] == 1 or w_shape[1] <= MAX_CG)
                and geometry[6] == 1 and geometry[7] == 1 and geometry[1] in (1, 2))


@numba.njit(cache=True)
def dw_layout(h, wd, cg, kh_size, kw_size, geometry):
    """``[OH, OW, wq, rows per phase, plane size, ntaps]`` and the taps' int32-element
    offsets (module doc) into the ``cg`` pair planes of a group, stored one after another."""
    sh, sw, pt, pl, pb, pr = geometry[0], geometry[1], geometry[2], geometry[3], geometry[4], geometry[5]
    wp = wd + pl + pr
    oh_size = (h + pt + pb - kh_size) // sh + 1
    ow_size = (wp - kw_size) // sw + 1
    wq = wp if sw == 1 else (wp + 1) // 2
    rpp = oh_size + (kh_size - 1) // sh + 1
    npair = (kw_size + 1) // 2
    plane = sh * rpp * wq + SLACK
    taps = np.empty(cg * kh_size * npair, np.int64)
    for ci in range(cg):
        for kh in range(kh_size):
            for i in range(npair):
                col = 2 * i if sw == 1 else i
                row = (kh % sh) * rpp + kh // sh  # phase kh % sh, row kh // sh within it
                taps[(ci * kh_size + kh) * npair + i] = ci * plane + row * wq + col
    return np.array([oh_size, ow_size, wq, rpp, plane, taps.size], np.int64), taps


@numba.njit(cache=True)
def pack_dw_weights(w):
    """(K, C / group, KH, ceil(KW / 2), 2) int16 flat weight pairs (0 past KW)."""
    k_out, cg, kh_size, kw_size = w.shape
    npair = (kw_size + 1) // 2
    wq = np.zeros(k_out * cg * kh_size * npair * 2, np.int16)
    for k in range(k_out):
        for ci in range(cg):
            for i in range(kh_size):
                for j in range(kw_size):
                    wq[(((k * cg + ci) * kh_size + i) * npair + j // 2) * 2 + j % 2] = w[k, ci, i, j]
    return wq


@numba.njit(cache=True)
def _fill_pairs(x, n, c, geometry, lay, q, q32, p0):
    """Pair plane of input plane ``x[n, c]`` into ``q`` from int32 element ``p0`` (int16,
    zero at the padding positions) and its int32 view ``q32``. Plain indexed loops with unsigned indices
    (no views or slices per row: at 7x7 those cost more than the copies)."""
    h, wd = x.shape[2], x.shape[3]
    sh, sw, pt, pl = geometry[0], geometry[1], geometry[2], geometry[3]
    wq, rpp = lay[2], lay[3]
    uwd, one = np.uint64(wd), np.uint64(1)
    for ph in range(sh):
        for r in range(rpp):
            i = r * sh + ph - pt
            if i < 0 or i >= h:
                continue
            if sw == 2:  # the padded row itself: pairs are consecutive elements
                base = np.uint64((p0 + (ph * rpp + r) * wq) * 2 + pl)
                for j in range(uwd):
                    q[base + j] = x[n, c, i, j]
            else:  # int32 element j holds (xp[j], xp[j + 1]): low half first, as vpdpwssd pairs them
                base = np.uint64(p0 + (ph * rpp + r) * wq + pl)
                for j in range(uwd - one):
                    q32[base + j] = (np.int32(x[n, c, i, j]) & 0xFFFF) | (np.int32(x[n, c, i, j + one]) << 16)
                q32[base + uwd - one] = np.int32(x[n, c, i, wd - 1]) & 0xFFFF
                if pl > 0:
                    q32[base - one] = np.int32(x[n, c, i, 0]) << 16


@numba.njit(cache=True)
def _fill_group(x, n, g, cg, geometry, lay, q, q32):
    """Pair planes of the ``cg`` input channels of group ``g`` of image ``n``, one after another.
    The padding positions are never written: a zeroed buffer stays valid across calls."""
    for ci in range(cg):
        _fill_pairs(x, n, g * cg + ci, geometry, lay, q, q32, ci * lay[4])


@numba.njit(cache=True)
def _plane(wq_pairs, w_off, lay, taps, q, acc, plane):
    """``plane`` (OH * OW) int32: one output channel's sums over the filled pair planes
    (bias excluded); its weight pairs start at ``wq_pairs[w_off]``."""
    oh_size, ow_size, wq, ntaps = lay[0], lay[1], lay[2], lay[5]
    length = (oh_size - 1) * wq + ow_size
    pos = 0
    while pos + 64 <= length:
        _DW_X4(q, 2 * pos, taps, ntaps, wq_pairs, w_off, acc, pos)
        pos += 64
    while pos < length:
        _DW_X1(q, 2 * pos, taps, ntaps, wq_pairs, w_off, acc, pos)
        pos += 16
    for oh in range(oh_size):  # drop the columns between rows
        src = np.uint64(oh * wq)
        dst = np.uint64(oh * ow_size)
        for ow in range(np.uint64(ow_size)):
            plane[dst + ow] = acc[src + ow]


@numba.njit(cache=True, parallel=True)
def dw_requant_run(x, wq_pairs, geometry, groups, lay, taps, bias, multiplier, rq, out, minmax):
    """The conv fused with ``requant_float`` into ``out`` (N, K, OH * OW) (int8/16);
    ``minmax[n * K + k]`` gets plane ``(n, k)``'s accumulator ``[min, max]`` (see
    ``igemm_requant_run``). Work items: :data:`PLANES` output channels of one image."""
    n_size, c_size = out.shape[0], out.shape[1]
    oh_size, ow_size, wq = lay[0], lay[1], lay[2]
    per_k = taps.size * 2
    cg = x.shape[1] // groups
    kg = c_size // groups
    mode = rq[0]
    flo, fhi = np.float64(rq[1]), np.float64(rq[2])
    nchunk = (c_size + PLANES - 1) // PLANES
    for job in numba.prange(n_size * nchunk):
        n, c0 = job // nchunk, (job % nchunk) * PLANES
        q = np.zeros(2 * (cg * lay[4]), np.int16)
        q32 = q.view(np.int32)
        filled = -1
        acc = np.empty((oh_size - 1) * wq + ow_size + 16, np.int32)
        plane = np.empty(oh_size * ow_size, np.int32)
        for c in range(c0, min(c0 + PLANES, c_size)):
            if c // kg != filled:
                filled = c // kg
                _fill_group(x, n, filled, cg, geometry, lay, q, q32)
            _plane(wq_pairs, c * per_k, lay, taps, q, acc, plane)
            lo, hi = requant_i32_row(plane, bias[c], multiplier[c], mode, flo, fhi, out[n, c])
            minmax[n * c_size + c, 0] = lo
            minmax[n * c_size + c, 1] = hi
    return out


@numba.njit(cache=True, parallel=True)
def dw_run(x, wq_pairs, geometry, groups, lay, taps, bias, out):
    """The conv into int64 ``out`` (N, K, OH * OW): ``int64(sum) + bias``."""
    n_size, c_size = out.shape[0], out.shape[1]
    oh_size, ow_size, wq = lay[0], lay[1], lay[2]
    per_k = taps.size * 2
    cg = x.shape[1] // groups
    kg = c_size // groups
    nchunk = (c_size + PLANES - 1) // PLANES
    for job in numba.prange(n_size * nchunk):
        n, c0 = job // nchunk, (job % nchunk) * PLANES
        q = np.zeros(2 * (cg * lay[4]), np.int16)
        q32 = q.view(np.int32)
        filled = -1
        acc = np.empty((oh_size - 1) * wq + ow_size + 16, np.int32)
        plane = np.empty(oh_size * ow_size, np.int32)
        for c in range(c0, min(c0 + PLANES, c_size)):
            if c // kg != filled:
                filled = c // kg
                _fill_group(x, n, filled, cg, geometry, lay, q, q32)
            _plane(wq_pairs, c * per_k, lay, taps, q, acc, plane)
            orow = out[n, c]
            b = bias[c]
            for i in range(plane.size):
                orow[i] = np.int64(plane[i]) + b
    return out


@numba.njit(cache=True)
def depthwise_conv(x, w, bias, geometry, threads):
    """``conv2d`` on this path: (N, K, OH, OW) int64 (``threads`` unused)."""
    lay, taps = dw_layout(x.shape[2], x.shape[3], w.shape[1], w.shape[2], w.shape[3], geometry)
    out = np.empty((x.shape[0], w.shape[0], lay[0] * lay[1]), np.int64)
    dw_run(x, pack_dw_weights(w), geometry, geometry[8], lay, taps, bias, out)
    return out.reshape((x.shape[0], w.shape[0], lay[0], lay[1]))


@numba.njit(cache=True)
def depthwise_conv_requant(x, w, bias, geometry, multiplier, params, out, threads):
    """``conv2d_requant`` on this path into ``out`` (N, K, OH, OW), int8, uint8 or int16
    (``params``' bounds fit it); returns ``[min, max]`` of the accumulators."""
    lay, taps = dw_layout(x.shape[2], x.shape[3], w.shape[1], w.shape[2], w.shape[3], geometry)
    n_size, k_out = out.shape[0], out.shape[1]
    blocks = np.empty((n_size * k_out, 2), np.int64)
    dw_requant_run(x, pack_dw_weights(w), geometry, geometry[8], lay, taps, bias, multiplier, params,
                   out.reshape((n_size, k_out, lay[0] * lay[1])), blocks)
    minmax = np.empty(2, np.int64)
    minmax[0] = blocks[:, 0].min()
    minmax[1] = blocks[:, 1].max()
    return minmax


@numba.njit(cache=True)
def depthwise_conv_requant_packed(x, wq_pairs, lay, taps, bias, geometry, multiplier, params, out, threads):
    """:func:`depthwise_conv_requant` with the weight pairs (:func:`pack_dw_weights`) and the
    layout (:func:`dw_layout` for ``x``'s shape) made once by the caller, who has checked them
    against ``x``, ``w`` and ``out`` (``kernels.conv2d_requant_prepare``)."""
    n_size, k_out = out.shape[0], out.shape[1]
    blocks = np.empty((n_size * k_out, 2), np.int64)
    dw_requant_run(x, wq_pairs, geometry, geometry[8], lay, taps, bias, multiplier, params,
                   out.reshape((n_size, k_out, lay[0] * lay[1])), blocks)
    minmax = np.empty(2, np.int64)
    minmax[0] = blocks[:, 0].min()
    minmax[1] = blocks[:, 1].max()
    return minmax


def depthwise_ref(x, w, bias, geometry):
    """NumPy twin of this path (dilation 1): the grouped conv as (N, K, OH, OW) int64, tap by tap."""
    sh, sw, pt, pl, pb, pr = (int(g) for g in geometry[:6])
    groups = int(geometry[8])
    k_out, cg, kh_size, kw_size = w.shape
    kg = k_out // groups
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (xp.shape[2] - kh_size) // sh + 1
    ow = (xp.shape[3] - kw_size) // sw + 1
    src = np.arange(k_out) // kg * cg  # first input channel of each output's group
    out = np.zeros((x.shape[0], k_out, oh, ow), np.int64)
    for ci in range(cg):
        for i in range(kh_size):
            for j in range(kw_size):
                tap = xp[:, src + ci, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
                out += tap * w[:, ci, i, j].astype(np.int64)[None, :, None, None]
    return out + bias.astype(np.int64)[None, :, None, None]
