"""Integer matrix product with a constant right operand packed once (internal).

A classifier's Gemm at batch 1 is ``(1, K) @ (K, N)``: packing ``b`` into the
micro-kernel panels (:func:`kernels.igemm.pack_gemm_weights`) and scanning it
for ``max|b|`` cost ~30x the product itself. :func:`gemm_pack` does both once;
:func:`gemm_packed` then runs the same implicit GEMM as :func:`kernels.gemm`
(same exactness proof, :func:`kernels.igemm.int32_exact`) and falls back to
:func:`kernels.gemm` itself when the proof fails, so the results are
identical.
"""

import numba
import numpy as np

from .canonical import as_array, as_operand
from .checks import check_gemm_args
from .gemm import gemm, gemm_ref
from .igemm import SLACK, igemm_run, int32_exact, max_abs, pack_gemm_weights
from .threads import call_with_threads


def gemm_pack(b):
    """Pack a (K, N) integer right operand once for :func:`gemm_packed`.

    Returns
    -------
    tuple
        ``(b, panels, max|b|)``: ``b`` as given (the fallback operand),
        its int16 panels (empty when ``b`` does not fit int16 or is empty) and
        ``max |b|`` as an int.
    """
    if not isinstance(b, np.ndarray) or b.ndim != 2 or b.dtype.kind not in "iu":
        raise ValueError(f"gemm_pack: b must be a 2-D integer array, got {getattr(b, 'shape', b)}")
    canon = as_operand(b)
    if canon.dtype != np.int16 or 0 in canon.shape:
        return b, np.empty(0, np.int16), -1
    pw = 8 if b.shape[1] <= 8 else 16
    return b, pack_gemm_weights(canon, pw, (b.shape[0] + 1) // 2), int(max_abs(canon))


def gemm_packed(a, packed, bias):
    """``bias + a @ b`` in exact integer arithmetic, ``packed = gemm_pack(b)``.

    Parameters
    ----------
    a : (M, K) int8, uint8, int16, uint16 or int32
    packed : tuple from :func:`gemm_pack` of a (K, N) ``b``
    bias : (N,) int32 or int64

    Returns
    -------
    (M, N) int64, equal to ``gemm(a, b, bias)``.
    """
    b, panels, bmax = packed
    check_gemm_args(a, b, np.asarray(bias))
    a_c = as_operand(a)
    if a_c.dtype == np.int64 and a_c.size and max_abs(a_c) <= 32767:
        a_c = a_c.astype(np.int16)  # the same values (an int64 pooled activation): the fast path
    if panels.size == 0 or a_c.dtype != np.int16 or a_c.shape[0] == 0:
        return gemm(a, b, bias)
    pw = 8 if b.shape[1] <= 8 else 16
    if panels.shape != (-(-b.shape[1] // pw) * pw * ((b.shape[0] + 1) // 2) * 2,):
        raise ValueError(f"gemm_packed: panels {panels.shape} do not come from gemm_pack of b {b.shape}")
    work = int(a_c.shape[0]) * int(b.shape[1]) * int(a_c.shape[1])
    out = call_with_threads(work, _gemm_packed_body, a_c, panels, np.int64(bmax), b.shape[1],
                            as_array(bias, np.int64))
    return gemm(a, b, bias) if out is None else out


class PreparedGemm:
    """:func:`gemm_packed` of one ``packed`` / ``bias`` for inputs of one shape and 8/16-bit
    dtype, its checks made once (:func:`gemm_prepare`): a call only checks that ``a`` has that
    shape and dtype, then runs the jitted body (or :func:`kernels.gemm` when it declines)."""

    __slots__ = ("a_shape", "a_dtype", "b", "panels", "bmax", "bias", "bias64", "work")

    def __call__(self, a):
        """``bias + a @ b`` as (M, N) int64, equal to ``gemm_packed(a, packed, bias)``."""
        if a.shape != self.a_shape or a.dtype != self.a_dtype:
            raise ValueError(f"prepared gemm: a {a.dtype}{a.shape} is not the "
                             f"{self.a_dtype}{self.a_shape} it was prepared for")
        out = call_with_threads(self.work, _gemm_packed_body, as_array(a, np.int16), self.panels, self.bmax,
                                self.b.shape[1], self.bias64)
        return gemm(a, self.b, self.bias) if out is None else out


def gemm_prepare(a_shape, a_dtype, packed, bias):
    """Check :func:`gemm_packed`'s operands for inputs of ``a_shape`` / ``a_dtype`` once.

    Returns
    -------
    PreparedGemm or None
        Called as ``prepared(a)``; None when :func:`gemm_packed` would decide its path on
        the values or takes :func:`kernels.gemm` anyway (``a`` wider than 16 bits, ``b`` not
        packed, no rows). Holds a copy of ``bias`` (later changes to it are not seen).
    """
    a_dtype = np.dtype(a_dtype)
    b, panels, bmax = packed
    a = np.broadcast_to(np.zeros((), a_dtype), tuple(int(s) for s in a_shape))  # shape-only stand-in
    check_gemm_args(a, b, np.asarray(bias))
    if panels.size == 0 or not (a_dtype.itemsize == 1 or a_dtype == np.int16) or a.shape[0] == 0:
        return None
    pw = 8 if b.shape[1] <= 8 else 16
    if panels.shape != (-(-b.shape[1] // pw) * pw * ((b.shape[0] + 1) // 2) * 2,):
        raise ValueError(f"gemm_prepare: panels {panels.shape} do not come from gemm_pack of b {b.shape}")
    run = PreparedGemm()
    run.a_shape, run.a_dtype, run.b, run.panels, run.bmax = a.shape, a_dtype, b, panels, np.int64(bmax)
    run.bias = np.array(bias, copy=True)
    run.bias64 = as_array(run.bias, np.int64).copy()
    run.work = int(a.shape[0]) * int(b.shape[1]) * int(a.shape[1])
    return run


@numba.njit(cache=True)
def _gemm_packed_body(a, panels, bmax, n_size, bias, threads):
    """The fast path of :func:`gemm_packed`, or None when the int32 bound is not proven."""
    m_size, k_size = a.shape
    if not int32_exact(max_abs(a), bmax, k_size):
        return None
    xbuf = np.zeros(m_size * k_size + SLACK, np.int16)
    xbuf[:m_size * k_size] = a.ravel()
    pw = 8 if n_size <= 8 else 16
    geo = np.array([m_size, 1, 1, k_size, 0, 0, 1, 0, n_size, pw, 0], np.int64)
    out = np.empty((m_size, n_size, 1), np.int64)
    igemm_run(xbuf, geo, np.zeros(1, np.int64), (k_size + 1) // 2, panels, bias, out, threads)
    return out.reshape((m_size, n_size))


def gemm_packed_ref(a, packed, bias):
    """NumPy twin of :func:`gemm_packed`: ``gemm_ref`` on the operand ``packed`` holds."""
    return gemm_ref(a, packed[0], bias)
