"""Thread count of the kernels (Numba ``prange``) and of the BLAS they may call.

``set_threads(n)`` is the one knob: it sets Numba's thread count for the
calling thread (``numba.set_num_threads``) and, when ``threadpoolctl`` is
installed, limits the BLAS library numpy uses (the float paths of the
fake-quant engine) to the same count. Independent of ``aidge_lite``.

>>> from aidge_lite import kernels
>>> kernels.set_threads(1)      # doctest: +SKIP
>>> with kernels.with_threads(2):  # doctest: +SKIP
...     ...
"""

from contextlib import contextmanager

import numba

_blas_limiter = None


def max_threads() -> int:
    """Threads Numba was started with (``NUMBA_NUM_THREADS``, default: all cores)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def get_threads() -> int:
    """Current thread count of the kernels for the calling thread."""
    return int(numba.get_num_threads())


def set_threads(n: int | None = None) -> int:
    """Use ``n`` threads (``None``: all of them) in the kernels and in BLAS.

    Returns the previous kernel thread count. ``n`` is clipped to
    ``[1, max_threads()]``.
    """
    global _blas_limiter
    previous = get_threads()
    n = max_threads() if n is None else max(1, min(int(n), max_threads()))
    numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # BLAS keeps its own setting
        return previous
    _blas_limiter = threadpool_limits(limits=n, user_api="blas")
    return previous


@contextmanager
def with_threads(n: int | None):
    """Context manager: run the block with ``n`` threads, then restore."""
    previous = set_threads(n)
    try:
        yield
    finally:
        set_threads(previous)
