"""1x1 convolutions (stride 1, no padding, one group) as NCHW GEMMs (internal).

In NCHW a pointwise conv is ``out[n] = W (K x C) @ x[n] (C x S)`` with
``S = H * W``: the output rows are already the NCHW planes. So pixels are the
SIMD lanes here: the image is stored once as channel *pairs* interleaved
pixel by pixel (``xq[n, t, s] = (x[n, 2t, s], x[n, 2t + 1, s])``), each
weight pair ``(w[k, 2t], w[k, 2t + 1])`` is broadcast, and AVX-512 VNNI
``vpdpwssd`` adds both products to an int32 lane in one instruction. A
micro-kernel tile is :data:`MR` output channels x :data:`TP` pixels; the
int32 rows it leaves are contiguous, so the requantization epilogue reads
them without the transposition the implicit GEMM of :mod:`kernels.igemm`
needs (its tiles are pixels x channels).

Exact under the same bound as the implicit GEMM
(:func:`kernels.igemm.int32_exact` with ``kdim = C``): ``vpdpwssd`` wraps
modulo 2**32 like ``vpmaddwd`` + ``vpaddd``, every partial sum is a sum of at
most ``C`` products, and the odd padding channel is zero in both operands.
Without AVX-512 VNNI on the host, :func:`use_pointwise` is False and the
callers keep the implicit GEMM (:func:`micro_kernel_portable` is the same
arithmetic in plain loops, used by the tests).
"""

import numba
import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from .igemm import requant_i32_row

MR = 8  # output channels per micro-kernel tile
NV = 2  # 16-lane int32 vectors per tile row
TP = 16 * NV  # pixels per micro-kernel tile
CHUNK = 512  # pixels per parallel work item (a multiple of TP): its x pairs stay in L2


def _host_has_vnni512() -> bool:
    cpu_name = numba.config.CPU_NAME
    if cpu_name not in (None, "", "host"):
        return False
    if numba.config.CPU_FEATURES:
        return all(f"+{f}" in numba.config.CPU_FEATURES for f in ("avx512bw", "avx512vnni"))
    try:
        features = _llvm.get_host_cpu_features()
    except RuntimeError:
        return False
    return bool(features.get("avx512bw", False) and features.get("avx512vnni", False))


HAS_VNNI512 = _host_has_vnni512()

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_V16I32 = ir.VectorType(_I32, 16)


@intrinsic
def _vnni_tile(typingctx, w, w_off, ntaps, x, x_off, x_stride, c, c_off, ldc):
    """``MR x TP`` int32 tile: ``c[c_off + r * ldc + p] = sum_t sum_h
    w[w_off + r * 2 * ntaps + 2t + h] * x[x_off + t * x_stride + 2p + h]``."""
    sig = types.void(w, w_off, ntaps, x, x_off, x_stride, c, c_off, ldc)

    def codegen(context, builder, signature, args):
        aty = signature.args

        def data(i):
            return context.make_array(aty[i])(context, builder, args[i]).data

        def int64(i):
            return context.cast(builder, args[i], aty[i], types.int64)

        w_ptr, x_ptr, c_ptr = data(0), data(3), data(6)
        w_off, ntaps, x_off, x_stride, c_off, ldc = (int64(i) for i in (1, 2, 4, 5, 7, 8))
        dpwssd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_V16I32, [_V16I32] * 3), "llvm.x86.avx512.vpdpwssd.512")

        def const(v):
            return ir.Constant(_I64, v)

        row_len = builder.shl(ntaps, const(1))
        w_rows = [builder.gep(w_ptr, [builder.add(w_off, builder.mul(const(r), row_len))])
                  for r in range(MR)]
        x_start = builder.gep(x_ptr, [x_off])
        zero = ir.Constant(_V16I32, [0] * 16)
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(NV)] for _ in range(MR)]
        with cgutils.for_range(builder, ntaps) as loop:
            t = loop.index
            xt = builder.gep(x_start, [builder.mul(t, x_stride)])
            xv = [builder.load(builder.bitcast(builder.gep(xt, [const(32 * v)]), _V16I32.as_pointer()),
                               align=2) for v in range(NV)]
            two_t = builder.shl(t, const(1))
            for r in range(MR):
                pair = builder.load(builder.bitcast(builder.gep(w_rows[r], [two_t]), _I32.as_pointer()),
                                    align=2)
                bcast = builder.insert_element(ir.Constant(_V16I32, None), pair, ir.Constant(_I32, 0))
                bcast = builder.shuffle_vector(bcast, ir.Constant(_V16I32, None),
                                               ir.Constant(_V16I32, [0] * 16))
                for v in range(NV):
                    slot = acc[r][v]
                    builder.store(builder.call(dpwssd, [builder.load(slot), bcast, xv[v]]), slot)
        for r in range(MR):
            row = builder.add(c_off, builder.mul(const(r), ldc))
            for v in range(NV):
                p = builder.bitcast(builder.gep(c_ptr, [builder.add(row, const(16 * v))]),
                                    _V16I32.as_pointer())
                builder.store(builder.load(acc[r][v]), p, align=4)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True)
def micro_kernel_portable(w, w_off, ntaps, x, x_off, x_stride, c, c_off, ldc):
    """Plain-Numba twin of the VNNI micro-kernel: same int32 wrap-around arithmetic."""
    for r in range(MR):
        for p in range(TP):
            acc = np.int32(0)
            for t in range(ntaps):
                wb = w_off + r * 2 * ntaps + 2 * t
                xb = x_off + t * x_stride + 2 * p
                acc = np.int32(acc + np.int32(np.int32(w[wb]) * np.int32(x[xb])
                                              + np.int32(w[wb + 1]) * np.int32(x[xb + 1])))
            c[c_off + r * ldc + p] = acc


def use_pointwise(x_shape, w_shape, geometry) -> bool:
    """Whether :func:`kernels.conv2d` takes this path (host with AVX-512 VNNI, 1x1,
    unit strides, no padding, one group)."""
    return bool(HAS_VNNI512 and w_shape[2] == 1 and w_shape[3] == 1 and geometry[8] == 1
                and geometry[0] == 1 and geometry[1] == 1 and not any(geometry[2:6]))


@numba.njit(cache=True)
def pack_pointwise_weights(w):
    """(K rounded up to MR, ceil(C / 2), 2) int16 flat: ``[k, t, h] = w[k, 2t + h, 0, 0]``, zero padded."""
    k_out, c_in = w.shape[0], w.shape[1]
    ntaps = (c_in + 1) // 2
    kp = ((k_out + MR - 1) // MR) * MR
    wq = np.zeros(kp * ntaps * 2, np.int16)
    for k in range(k_out):
        for c in range(c_in):
            wq[k * ntaps * 2 + c] = w[k, c, 0, 0]
    return wq


@numba.njit(cache=True, parallel=True)
def pair_channels(x, s_pad):
    """(N, ceil(C / 2), s_pad, 2) int16 flat: ``[n, t, s, h] = x[n, 2t + h, s]`` (zero beyond)."""
    n_size, c_in = x.shape[0], x.shape[1]
    s_size = x.shape[2] * x.shape[3]
    ntaps = (c_in + 1) // 2
    xq = np.zeros(n_size * ntaps * s_pad * 2, np.int16)
    for job in numba.prange(n_size * ntaps):
        n, t = job // ntaps, job % ntaps
        base = job * s_pad * 2
        even = x[n, 2 * t].ravel()
        for s in range(s_size):
            xq[base + 2 * s] = even[s]
        if 2 * t + 1 < c_in:
            odd = x[n, 2 * t + 1].ravel()
            for s in range(s_size):
                xq[base + 2 * s + 1] = odd[s]
    return xq


@numba.njit(cache=True)
def _chunk_tiles(wq, xq, ntaps, s_pad, n, p0, width, ctile):
    """ctile (K rounded up to MR, width) int32: pixels ``p0 .. p0 + width`` of image ``n``."""
    k_pad = ctile.shape[0]
    flat = ctile.ravel()
    x_base = n * ntaps * s_pad * 2 + 2 * p0
    for k0 in range(0, k_pad, MR):
        for q in range(0, width, TP):
            _vnni_tile(wq, k0 * ntaps * 2, ntaps, xq, x_base + 2 * q, s_pad * 2, flat,
                       k0 * width + q, width)


@numba.njit(cache=True, parallel=True)
def pointwise_run(wq, xq, bias, out):
    """``out`` (N, K, S) int64 = ``int64(W @ x[n]) + bias``; (image, pixel chunk) pairs in parallel.

    ``wq`` from :func:`pack_pointwise_weights`, ``xq`` from :func:`pair_channels`
    with ``s_pad = S`` rounded up to :data:`TP`.
    """
    n_size, k_out, s_size = out.shape
    k_pad = ((k_out + MR - 1) // MR) * MR
    ntaps = wq.size // (2 * k_pad)
    s_pad = ((s_size + TP - 1) // TP) * TP
    nchunk = (s_pad + CHUNK - 1) // CHUNK
    for job in numba.prange(n_size * nchunk):
        n, p0 = job // nchunk, (job % nchunk) * CHUNK
        width = min(CHUNK, s_pad - p0)
        ctile = np.empty((k_pad, width), np.int32)
        _chunk_tiles(wq, xq, ntaps, s_pad, n, p0, width, ctile)
        seg = min(width, s_size - p0)
        for k in range(k_out):
            b = bias[k]
            crow = ctile[k]
            orow = out[n, k, p0:p0 + seg]
            for q in range(seg):
                orow[q] = np.int64(crow[q]) + b
    return out


@numba.njit(cache=True, parallel=True)
def pointwise_requant_run(wq, xq, bias, multiplier, rq, out, minmax):
    """:func:`pointwise_run` fused with ``requant_float`` into ``out`` (N, K, S), int8/uint8/int16
    (see ``kernels.igemm.igemm_requant_run``); ``minmax[job]`` gets each work item's
    accumulator ``[min, max]``, ``minmax`` having ``N * ceil(s_pad / CHUNK)`` rows.

    Each ``MR``-row strip of a chunk is requantized as soon as it is computed, while
    its int32 sums are still in L1 (16 KiB a strip).
    """
    n_size, k_out, s_size = out.shape
    k_pad = ((k_out + MR - 1) // MR) * MR
    ntaps = wq.size // (2 * k_pad)
    s_pad = ((s_size + TP - 1) // TP) * TP
    nchunk = (s_pad + CHUNK - 1) // CHUNK
    mode = rq[0]
    flo, fhi = np.float64(rq[1]), np.float64(rq[2])
    for job in numba.prange(n_size * nchunk):
        n, p0 = job // nchunk, (job % nchunk) * CHUNK
        width = min(CHUNK, s_pad - p0)
        strip = np.empty(MR * width, np.int32)
        x_base = n * ntaps * s_pad * 2 + 2 * p0
        seg = min(width, s_size - p0)
        lo_acc = np.int64(2 ** 62)
        hi_acc = -lo_acc
        for k0 in range(0, k_pad, MR):
            for q in range(0, width, TP):
                _vnni_tile(wq, k0 * ntaps * 2, ntaps, xq, x_base + 2 * q, s_pad * 2, strip, q, width)
            for r in range(min(MR, k_out - k0)):
                k = k0 + r
                lo, hi = requant_i32_row(strip[r * width:r * width + seg], bias[k], multiplier[k], mode,
                                         flo, fhi, out[n, k, p0:p0 + seg])
                lo_acc = min(lo_acc, lo)
                hi_acc = max(hi_acc, hi)
        minmax[job, 0] = lo_acc
        minmax[job, 1] = hi_acc
    return out


def pointwise_ref(x, w, bias):
    """NumPy twin of the pointwise path: ``int64(w[:, :, 0, 0]) @ x`` per image, plus bias,
    as (N, K, H, W) int64 (the same values as ``conv2d_ref`` with a 1x1 kernel)."""
    n_size, c_in, h, wd = x.shape
    acc = np.einsum("kc,ncs->nks", w[:, :, 0, 0].astype(np.int64),
                    x.reshape(n_size, c_in, h * wd).astype(np.int64))
    return (acc + bias.astype(np.int64)[None, :, None]).reshape(n_size, w.shape[0], h, wd)


@numba.njit(cache=True)
def pointwise_conv(x, wq, bias, k_out, threads):
    """``conv2d`` of (N, C, H, W) int16 ``x`` by packed 1x1 weights ``wq``: (N, K, H, W) int64.

    ``threads``: unused (the caller's thread count, as for the other bodies).
    """
    n_size, _, h, wd = x.shape
    s_pad = ((h * wd + TP - 1) // TP) * TP
    out = np.empty((n_size, k_out, h * wd), np.int64)
    pointwise_run(wq, pair_channels(x, s_pad), bias, out)
    return out.reshape((n_size, k_out, h, wd))


@numba.njit(cache=True)
def pointwise_conv_requant(x, wq, bias, multiplier, params, out, threads):
    """``conv2d_requant`` on the pointwise path into ``out`` (N, K, H, W), int8, uint8 or
    int16 (``params``' bounds fit it); returns ``[min, max]`` of the accumulators."""
    n_size, k_out, h, wd = out.shape
    s_pad = ((h * wd + TP - 1) // TP) * TP
    blocks = np.empty((n_size * ((s_pad + CHUNK - 1) // CHUNK), 2), np.int64)
    pointwise_requant_run(wq, pair_channels(x, s_pad), bias, multiplier, params,
                          out.reshape((n_size, k_out, h * wd)), blocks)
    minmax = np.empty(2, np.int64)
    minmax[0] = blocks[:, 0].min()
    minmax[1] = blocks[:, 1].max()
    return minmax
