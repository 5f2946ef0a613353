"""Register-blocked int16 x int16 -> int32 GEMM micro-kernels (internal).

LLVM never emits a register-blocked ``vpmaddwd`` GEMM from plain Numba loops
(they reach ~30 GOP/s on an AVX2 core); these micro-kernels are written
directly in LLVM IR through ``numba.extending.intrinsic`` and reach ~4x that.

A micro-kernel computes an ``MR x (8 * NRV)`` int32 tile::

    c[c_off + r * ldc + j] = sum_t sum_e x[rows[r] + taps[t] + e] * B(t, e, j)

for ``e < 2 * kp`` (elements are taken in int16 pairs), ``t < ntaps``; ``B``
is packed as ``bp[b_off + ((t * kp + i) * NRV + v) * 16 + 2 * l + h]`` =
``B(t, 2i + h, 8v + l)``. Accumulation is int32 with ``vpmaddwd``
(``a0*b0 + a1*b1`` per lane) and ``vpaddd``; both wrap modulo 2**32, so the
caller must prove every partial sum fits in int32 (see :mod:`kernels.igemm`).

Without AVX2 on the host (or with ``NUMBA_CPU_NAME`` forcing another target)
the same interface is served by plain Numba loops (slow but identical).
"""

import numba
import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic


def _host_has_avx2() -> bool:
    cpu_name = numba.config.CPU_NAME
    if cpu_name not in (None, "", "host"):
        return False
    if numba.config.CPU_FEATURES:
        return "+avx2" in numba.config.CPU_FEATURES
    try:
        return bool(_llvm.get_host_cpu_features().get("avx2", False))
    except RuntimeError:
        return False


HAS_AVX2 = _host_has_avx2()

_I16, _I32, _I64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
_V8I32 = ir.VectorType(_I32, 8)
_V16I16 = ir.VectorType(_I16, 16)


def _make_intrinsic(mr, nrv):
    """The AVX2 micro-kernel for an ``mr x 8*nrv`` tile, as a Numba intrinsic."""

    @intrinsic
    def microkernel(typingctx, x, rows, taps, ntaps, kp, bp, b_off, c, c_off, ldc):
        sig = types.void(x, rows, taps, ntaps, kp, bp, b_off, c, c_off, ldc)

        def codegen(context, builder, signature, args):
            x_v, rows_v, taps_v, ntaps_v, kp_v, bp_v, boff_v, c_v, coff_v, ldc_v = args
            aty = signature.args

            def data(i, value):
                return context.make_array(aty[i])(context, builder, value).data

            x_ptr, rows_ptr, taps_ptr = data(0, x_v), data(1, rows_v), data(2, taps_v)
            b_ptr, c_ptr = data(5, bp_v), data(7, c_v)
            ntaps_v = context.cast(builder, ntaps_v, aty[3], types.int64)
            kp_v = context.cast(builder, kp_v, aty[4], types.int64)
            boff_v = context.cast(builder, boff_v, aty[6], types.int64)
            coff_v = context.cast(builder, coff_v, aty[8], types.int64)
            ldc_v = context.cast(builder, ldc_v, aty[9], types.int64)
            pmadd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_V8I32, [_V16I16, _V16I16]),
                "llvm.x86.avx2.pmadd.wd")

            def const(v):
                return ir.Constant(_I64, v)

            row_base = [builder.load(builder.gep(rows_ptr, [const(r)])) for r in range(mr)]
            zero = ir.Constant(_V8I32, [0] * 8)
            acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(nrv)]
                   for _ in range(mr)]
            b_cur = cgutils.alloca_once_value(builder, boff_v)  # running element offset in bp
            with cgutils.for_range(builder, ntaps_v) as tap_loop:
                tap = builder.load(builder.gep(taps_ptr, [tap_loop.index]))
                starts = [builder.gep(x_ptr, [builder.add(row_base[r], tap)]) for r in range(mr)]
                with cgutils.for_range(builder, kp_v) as k_loop:
                    two_i = builder.shl(k_loop.index, const(1))
                    boff = builder.load(b_cur)
                    bvec = []
                    for v in range(nrv):
                        p = builder.gep(b_ptr, [builder.add(boff, const(16 * v))])
                        bvec.append(builder.load(builder.bitcast(p, _V16I16.as_pointer()), align=2))
                    builder.store(builder.add(boff, const(16 * nrv)), b_cur)
                    for r in range(mr):
                        p = builder.bitcast(builder.gep(starts[r], [two_i]), _I32.as_pointer())
                        a32 = builder.load(p, align=2)
                        a8 = builder.insert_element(ir.Constant(_V8I32, None), a32, ir.Constant(_I32, 0))
                        a8 = builder.shuffle_vector(a8, ir.Constant(_V8I32, None),
                                                    ir.Constant(_V8I32, [0] * 8))
                        a16 = builder.bitcast(a8, _V16I16)
                        for v in range(nrv):
                            prod = builder.call(pmadd, [a16, bvec[v]])
                            slot = acc[r][v]
                            builder.store(builder.add(builder.load(slot), prod), slot)
            for r in range(mr):
                row_off = builder.add(coff_v, builder.mul(const(r), ldc_v))
                for v in range(nrv):
                    p = builder.gep(c_ptr, [builder.add(row_off, const(8 * v))])
                    builder.store(builder.load(acc[r][v]), builder.bitcast(p, _V8I32.as_pointer()),
                                  align=4)
            return context.get_dummy_value()

        return sig, codegen

    return microkernel


@numba.njit(cache=True)
def _portable(mr, nrv, x, rows, taps, ntaps, kp, bp, b_off, c, c_off, ldc):
    """Plain-Numba micro-kernel (no AVX2): same arithmetic, int32 wrap-around."""
    width = 8 * nrv
    acc = np.zeros((mr, width), np.int32)
    b = b_off
    for t in range(ntaps):
        for i in range(kp):
            for r in range(mr):
                base = rows[r] + taps[t] + 2 * i
                a0 = np.int32(x[base])
                a1 = np.int32(x[base + 1])
                for v in range(nrv):
                    for lane in range(8):
                        q = b + 16 * v + 2 * lane
                        acc[r, 8 * v + lane] += np.int32(a0 * np.int32(bp[q])
                                                         + a1 * np.int32(bp[q + 1]))
            b += 16 * nrv
    for r in range(mr):
        for j in range(width):
            c[c_off + r * ldc + j] = acc[r, j]


@numba.njit(cache=True)
def _portable_6x16(x, rows, taps, ntaps, kp, bp, b_off, c, c_off, ldc):
    _portable(6, 2, x, rows, taps, ntaps, kp, bp, b_off, c, c_off, ldc)


@numba.njit(cache=True)
def _portable_8x8(x, rows, taps, ntaps, kp, bp, b_off, c, c_off, ldc):
    _portable(8, 1, x, rows, taps, ntaps, kp, bp, b_off, c, c_off, ldc)


# (MR, NRV) variants: 6 x 16 for wide panels, 8 x 8 for narrow ones (<= 8 columns).
if HAS_AVX2:
    MK_6X16 = _make_intrinsic(6, 2)
    MK_8X8 = _make_intrinsic(8, 1)
else:
    MK_6X16 = _portable_6x16
    MK_8X8 = _portable_8x8


def _make_rowlane_intrinsic(mr, nrv):
    """AVX2 micro-kernel with pixels as lanes: ``mr`` weight rows x ``8 * nrv`` pixels.

    ``c[c_off + r * ldc + 8v + l] = sum_t pmadd(w[w_rows[r] + 2t : +2],
    x[x_base + xtaps[t] + 16v + 2l : +2])``: the weights (an int16 pair per
    tap) are broadcast, the image is read as pair-interleaved int16 vectors
    at per-tap offsets (no packing). Same int32 arithmetic and bound as the
    other micro-kernels.
    """

    @intrinsic
    def microkernel(typingctx, w, w_rows, ntaps, x, x_base, xtaps, c, c_off, ldc):
        sig = types.void(w, w_rows, ntaps, x, x_base, xtaps, c, c_off, ldc)

        def codegen(context, builder, signature, args):
            w_v, wrows_v, ntaps_v, x_v, xbase_v, xtaps_v, c_v, coff_v, ldc_v = args
            aty = signature.args

            def data(i, value):
                return context.make_array(aty[i])(context, builder, value).data

            w_ptr, wrows_ptr, x_ptr, xtaps_ptr, c_ptr = (data(0, w_v), data(1, wrows_v), data(3, x_v),
                                                         data(5, xtaps_v), data(6, c_v))
            ntaps_v = context.cast(builder, ntaps_v, aty[2], types.int64)
            xbase_v = context.cast(builder, xbase_v, aty[4], types.int64)
            coff_v = context.cast(builder, coff_v, aty[7], types.int64)
            ldc_v = context.cast(builder, ldc_v, aty[8], types.int64)
            pmadd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_V8I32, [_V16I16, _V16I16]),
                "llvm.x86.avx2.pmadd.wd")

            def const(v):
                return ir.Constant(_I64, v)

            w_base = [builder.gep(w_ptr, [builder.load(builder.gep(wrows_ptr, [const(r)]))])
                      for r in range(mr)]
            x_start = builder.gep(x_ptr, [xbase_v])
            zero = ir.Constant(_V8I32, [0] * 8)
            acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(nrv)] for _ in range(mr)]
            with cgutils.for_range(builder, ntaps_v) as tap_loop:
                t = tap_loop.index
                xt = builder.gep(x_start, [builder.load(builder.gep(xtaps_ptr, [t]))])
                bvec = []
                for v in range(nrv):
                    p = builder.bitcast(builder.gep(xt, [const(16 * v)]), _V16I16.as_pointer())
                    bvec.append(builder.load(p, align=2))
                two_t = builder.shl(t, const(1))
                for r in range(mr):
                    p = builder.bitcast(builder.gep(w_base[r], [two_t]), _I32.as_pointer())
                    a32 = builder.load(p, align=2)
                    a8 = builder.insert_element(ir.Constant(_V8I32, None), a32, ir.Constant(_I32, 0))
                    a8 = builder.shuffle_vector(a8, ir.Constant(_V8I32, None), ir.Constant(_V8I32, [0] * 8))
                    a16 = builder.bitcast(a8, _V16I16)
                    for v in range(nrv):
                        slot = acc[r][v]
                        builder.store(builder.add(builder.load(slot), builder.call(pmadd, [a16, bvec[v]])),
                                      slot)
            for r in range(mr):
                row_off = builder.add(coff_v, builder.mul(const(r), ldc_v))
                for v in range(nrv):
                    p = builder.gep(c_ptr, [builder.add(row_off, const(8 * v))])
                    builder.store(builder.load(acc[r][v]), builder.bitcast(p, _V8I32.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return microkernel


@numba.njit(cache=True)
def _rowlane_portable(w, w_rows, ntaps, x, x_base, xtaps, c, c_off, ldc):
    """Plain-Numba :data:`MK_ROW_4X16` (no AVX2)."""
    acc = np.zeros((4, 16), np.int32)
    for t in range(ntaps):
        xt = x_base + xtaps[t]
        for r in range(4):
            a0 = np.int32(w[w_rows[r] + 2 * t])
            a1 = np.int32(w[w_rows[r] + 2 * t + 1])
            for lane in range(16):
                acc[r, lane] += np.int32(a0 * np.int32(x[xt + 2 * lane]) + a1 * np.int32(x[xt + 2 * lane + 1]))
    for r in range(4):
        for j in range(16):
            c[c_off + r * ldc + j] = acc[r, j]


# Pixels-as-lanes variant (small-channel convs): 4 output channels x 16 pixels.
MK_ROW_4X16 = _make_rowlane_intrinsic(4, 2) if HAS_AVX2 else _rowlane_portable
