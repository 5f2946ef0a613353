"""Integer matrix product with exact int64 accumulation."""

import numba
import numpy as np

from .canonical import as_array, as_operand
from .checks import check_gemm_args
from .igemm import SLACK, igemm_run, int32_exact, max_abs, pack_gemm_weights
from .threads import call_with_threads


def gemm(a, b, bias):
    """``bias + a @ b`` in exact integer arithmetic.

    Parameters
    ----------
    a : (M, K) int8, uint8, int16, uint16 or int32
    b : (K, N) int8, int16 or int32
    bias : (N,) int32 or int64

    Returns
    -------
    (M, N) int64

    Notes
    -----
    Fast path (:mod:`kernels.igemm`): when the actual operand bounds prove
    it exact (``max|a| * max|b| * K <= 2**31 - 1``, both maxima
    ``<= 32767``), int16 operands with int32 accumulation in register-blocked
    ``vpmaddwd`` micro-kernels, ``prange`` over 96-row blocks; int64 bias
    added afterwards. Otherwise an i, k, j loop with an int64 accumulator,
    products widened to int64 first; exact while the true sums fit in int64
    (otherwise wraps modulo 2**64, like the twin). No rounding. A Python
    function: it widens the operands to int16 / int64 (:mod:`kernels.canonical`),
    then calls one jitted body compiled for those types only.
    """
    check_gemm_args(a, b, np.asarray(bias))  # O(1): Numba would read past the buffers
    a, b = as_operand(a), as_operand(b)
    work = int(a.shape[0]) * int(b.shape[1]) * int(a.shape[1]) if a.ndim == 2 and b.ndim == 2 else 0
    return call_with_threads(work, _gemm_body, a, b, as_array(bias, np.int64))


@numba.njit(cache=True)
def _gemm_body(a, b, bias, threads):
    """:func:`gemm` on canonical operands (int16 or int64 a and b, int64 bias).

    ``threads`` is the caller's ``numba.get_num_threads()``: read in Python,
    because calling it in jitted code makes Numba refuse to cache the function.
    """
    m_size, k_size = a.shape
    n_size = b.shape[1]
    if (m_size > 0 and n_size > 0 and k_size > 0
            and int32_exact(max_abs(a), max_abs(b), k_size)):
        xbuf = np.zeros(m_size * k_size + SLACK, np.int16)
        flat = np.ascontiguousarray(a).ravel()
        for i in range(flat.size):
            xbuf[i] = flat[i]
        pw = 8 if n_size <= 8 else 16
        kp = (k_size + 1) // 2
        bp = pack_gemm_weights(b, pw, kp)
        geo = np.array([m_size, 1, 1, k_size, 0, 0, 1, 0, n_size, pw, 0], np.int64)
        out = np.empty((m_size, n_size, 1), np.int64)
        igemm_run(xbuf, geo, np.zeros(1, np.int64), kp, bp, bias.astype(np.int64), out, threads)
        return out.reshape((m_size, n_size))
    out = np.empty((m_size, n_size), np.int64)
    for i in range(m_size):
        for j in range(n_size):
            out[i, j] = bias[j]
        for k in range(k_size):
            aik = np.int64(a[i, k])
            for j in range(n_size):
                out[i, j] += aik * np.int64(b[k, j])
    return out


def gemm_ref(a, b, bias):
    """NumPy twin of :func:`gemm` (the spec): int64 matmul plus bias."""
    return a.astype(np.int64) @ b.astype(np.int64) + bias.astype(np.int64)


gemm.jitted = _gemm_body  # the jitted body behind the Python entry point
