"""Integer matrix product with exact int64 accumulation."""

import numba
import numpy as np


@numba.njit(cache=True)
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
    Accumulator: int64, products widened to int64 first; exact while the true
    sums fit in int64 (otherwise wraps modulo 2**64, like the twin). No
    rounding. Loop order i, k, j so the inner loop streams rows of ``b`` and
    ``out`` contiguously.
    """
    m_size, k_size = a.shape
    n_size = b.shape[1]
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
