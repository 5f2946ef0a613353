"""1x1 convolutions of 8-bit activations by int8 weights with ``vpdpbusd`` (internal).

The byte variant of :mod:`kernels.pointwise`: ``vpdpbusd`` multiplies unsigned
bytes by signed bytes, four products per int32 lane, twice the multiply-adds of
``vpdpwssd`` per instruction. int8 activations are shifted into ``[0, 255]``
(``u = x + 128``) and the shift is taken back exactly in the bias:
``sum_c w[k, c] * x[c] = sum_c w[k, c] * u[c] - 128 * sum_c w[k, c]``, an int64
correction per output channel (uint8 activations need none). The image is
stored as channel *quads* interleaved pixel by pixel
(``xq[n, t, s] = (u[n, 4t], .., u[n, 4t + 3])`` at pixel ``s``), weight quads
``(w[k, 4t], .., w[k, 4t + 3])`` are broadcast.

Exact: each lane sums at most ``C`` products of magnitude ``<= 255 * 128``, so
the int32 lanes never wrap while ``C <= 65793`` (checked by the caller,
:func:`usable`); padding channels are zero in the weights.
"""

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from .igemm import requant_i32_row
from .pointwise import CHUNK, MR, NV, TP

MAX_C = 65793  # 255 * 128 * C <= 2**31 - 1
_I32, _I64 = ir.IntType(32), ir.IntType(64)
_V16I32 = ir.VectorType(_I32, 16)


@intrinsic
def _busd_tile(typingctx, w, w_off, ntaps, x, x_off, x_stride, c, c_off, ldc):
    """``MR x TP`` int32 tile: ``c[c_off + r * ldc + p] = sum_t sum_h
    w[w_off + r * 4 * ntaps + 4t + h] * x[x_off + t * x_stride + 4p + h]`` (x unsigned bytes)."""
    sig = types.void(w, w_off, ntaps, x, x_off, x_stride, c, c_off, ldc)

    def codegen(context, builder, signature, args):
        aty = signature.args

        def data(i):
            return context.make_array(aty[i])(context, builder, args[i]).data

        def int64(i):
            return context.cast(builder, args[i], aty[i], types.int64)

        w_ptr, x_ptr, c_ptr = data(0), data(3), data(6)
        w_off, ntaps, x_off, x_stride, c_off, ldc = (int64(i) for i in (1, 2, 4, 5, 7, 8))
        dpbusd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_V16I32, [_V16I32] * 3), "llvm.x86.avx512.vpdpbusd.512")

        def const(v):
            return ir.Constant(_I64, v)

        row_len = builder.shl(ntaps, const(2))
        w_rows = [builder.gep(w_ptr, [builder.add(w_off, builder.mul(const(r), row_len))]) for r in range(MR)]
        x_start = builder.gep(x_ptr, [x_off])
        zero = ir.Constant(_V16I32, [0] * 16)
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(NV)] for _ in range(MR)]
        with cgutils.for_range(builder, ntaps) as loop:
            t = loop.index
            xt = builder.gep(x_start, [builder.mul(t, x_stride)])
            xv = [builder.load(builder.bitcast(builder.gep(xt, [const(64 * v)]), _V16I32.as_pointer()),
                               align=1) for v in range(NV)]
            four_t = builder.shl(t, const(2))
            for r in range(MR):
                quad = builder.load(builder.bitcast(builder.gep(w_rows[r], [four_t]), _I32.as_pointer()),
                                    align=1)
                bcast = builder.insert_element(ir.Constant(_V16I32, None), quad, ir.Constant(_I32, 0))
                bcast = builder.shuffle_vector(bcast, ir.Constant(_V16I32, None),
                                               ir.Constant(_V16I32, [0] * 16))
                for v in range(NV):
                    slot = acc[r][v]
                    # vpdpbusd(acc, unsigned bytes, signed bytes)
                    builder.store(builder.call(dpbusd, [builder.load(slot), xv[v], bcast]), slot)
        for r in range(MR):
            row = builder.add(c_off, builder.mul(const(r), ldc))
            for v in range(NV):
                p = builder.bitcast(builder.gep(c_ptr, [builder.add(row, const(16 * v))]),
                                    _V16I32.as_pointer())
                builder.store(builder.load(acc[r][v]), p, align=4)
        return context.get_dummy_value()

    return sig, codegen


def usable(x, w) -> bool:
    """8-bit activations, int8 weights, few enough channels for exact int32 lanes."""
    return x.dtype in (np.int8, np.uint8) and w.dtype == np.int8 and x.shape[1] <= MAX_C


@numba.njit(cache=True)
def pack_quad_weights(w):
    """``(panels, sums)``: (K rounded up to MR, ceil(C / 4), 4) int8 flat weight quads (zero
    padded) and the int64 row sums ``sum_c w[k, c]`` (for the activation shift)."""
    k_out, c_in = w.shape[0], w.shape[1]
    ntaps = (c_in + 3) // 4
    kp = ((k_out + MR - 1) // MR) * MR
    wq = np.zeros(kp * ntaps * 4, np.int8)
    sums = np.zeros(k_out, np.int64)
    for k in range(k_out):
        for c in range(c_in):
            wq[k * ntaps * 4 + c] = w[k, c, 0, 0]
            sums[k] += w[k, c, 0, 0]
    return wq, sums


@numba.njit(cache=True, parallel=True)
def quad_channels(x, s_pad, shift):
    """(N, ceil(C / 4), s_pad, 4) uint8 flat: ``[n, t, s, h] = x[n, 4t + h, s] + shift`` (zero beyond)."""
    n_size, c_in = x.shape[0], x.shape[1]
    s_size = x.shape[2] * x.shape[3]
    ntaps = (c_in + 3) // 4
    xq = np.zeros(n_size * ntaps * s_pad * 4, np.uint8)
    for job in numba.prange(n_size * ntaps):
        n, t = job // ntaps, job % ntaps
        q32 = xq[job * s_pad * 4:(job + 1) * s_pad * 4].view(np.uint32)
        for h in range(min(4, c_in - 4 * t)):
            src = x[n, 4 * t + h].ravel()
            for s in range(s_size):  # one whole-word read-modify-write per pixel: vectorises
                q32[s] |= np.uint32(np.uint8(np.int32(src[s]) + shift)) << np.uint32(8 * h)
    return xq


@numba.njit(cache=True, parallel=True)
def quad_requant_run(wq, xq, bias, multiplier, rq, out, minmax):
    """The pointwise conv fused with ``requant_float`` into ``out`` (N, K, S) from quad
    layouts (``bias`` already corrected for the shift); as ``pointwise_requant_run``."""
    n_size, k_out, s_size = out.shape
    k_pad = ((k_out + MR - 1) // MR) * MR
    ntaps = wq.size // (4 * k_pad)
    s_pad = ((s_size + TP - 1) // TP) * TP
    nchunk = (s_pad + CHUNK - 1) // CHUNK
    mode = rq[0]
    flo, fhi = np.float64(rq[1]), np.float64(rq[2])
    for job in numba.prange(n_size * nchunk):
        n, p0 = job // nchunk, (job % nchunk) * CHUNK
        width = min(CHUNK, s_pad - p0)
        strip = np.empty(MR * width, np.int32)
        x_base = n * ntaps * s_pad * 4 + 4 * p0
        seg = min(width, s_size - p0)
        lo_acc = np.int64(2 ** 62)
        hi_acc = -lo_acc
        for k0 in range(0, k_pad, MR):
            for q in range(0, width, TP):
                _busd_tile(wq, k0 * ntaps * 4, ntaps, xq, x_base + 4 * q, s_pad * 4, strip, q, width)
            for r in range(min(MR, k_out - k0)):
                k = k0 + r
                lo, hi = requant_i32_row(strip[r * width:r * width + seg], bias[k], multiplier[k], mode,
                                         flo, fhi, out[n, k, p0:p0 + seg])
                lo_acc = min(lo_acc, lo)
                hi_acc = max(hi_acc, hi)
        minmax[job, 0] = lo_acc
        minmax[job, 1] = hi_acc
    return out


@numba.njit(cache=True)
def quad_conv_requant(x, wq, sums, shift, bias, multiplier, params, out, threads):
    """``conv2d_requant`` of 8-bit ``x`` by packed int8 1x1 weights into ``out`` (N, K, H, W);
    ``shift``: 128 for int8 ``x``, 0 for uint8. Returns ``[min, max]`` of the accumulators
    (``threads`` unused)."""
    n_size, k_out, h, wd = out.shape
    s_pad = ((h * wd + TP - 1) // TP) * TP
    corrected = bias - shift * sums  # exact int64: sum w * x = sum w * (x + shift) - shift * sum w
    blocks = np.empty((n_size * ((s_pad + CHUNK - 1) // CHUNK), 2), np.int64)
    quad_requant_run(wq, quad_channels(x, s_pad, shift), corrected, multiplier, params,
                     out.reshape((n_size, k_out, h * wd)), blocks)
    minmax = np.empty(2, np.int64)
    minmax[0] = blocks[:, 0].min()
    minmax[1] = blocks[:, 1].max()
    return minmax
