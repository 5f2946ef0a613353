"""Thread use of the kernels (Numba ``prange``) and of the BLAS numpy calls.

``set_threads(n)`` is the one knob: the most threads a call may use, for
Numba (``numba.set_num_threads``, per calling thread) and for numpy's BLAS.
Within it, each call takes what its work size pays for (`threads_for`):
waking a thread costs tens of microseconds, so a call below
`WORK_PER_THREAD` multiply-adds per thread runs serial (`call_with_threads`);
`call_serial` runs a whole sequence of such calls under one setting.

Two process-wide settings, made on import because the libraries read them
once, when their thread pools start:

- ``OMP_WAIT_POLICY=PASSIVE`` (unless the environment sets it): Numba's OpenMP
  threads sleep between parallel regions instead of spinning for ~0.2 s; on a
  2-core machine a spinning worker takes the core the caller's Python needs
  (500 one-image mnist-8 calls: 29.7 s spinning, 0.64 s passive).
- numpy's OpenBLAS follows `set_threads` through ``openblas_set_num_threads``
  (found with ctypes in the loaded libraries; threadpoolctl is not needed),
  and `blas_threads` runs small GEMMs on one thread: OpenBLAS threads spin too
  (quantize_network was 3.3x slower on 2 threads than on 1).

Independent of ``aidge_lite``.

>>> from aidge_lite import kernels
>>> kernels.set_threads(1)      # doctest: +SKIP
>>> with kernels.with_threads(2):  # doctest: +SKIP
...     ...
"""

import ctypes
import os
from contextlib import contextmanager

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before Numba starts its OpenMP pool

import numba  # noqa: E402

#: Multiply-adds (or element operations) a thread must get before a second one is woken:
#: ~50-100 us of serial work. Measured (2 cores, passive waiting): int8 convs up to 4M MACs
#: were 0.65-0.9x as fast on 2 threads as on 1.
WORK_PER_THREAD = 1 << 22

#: Multiply-adds below which a float GEMM runs on one BLAS thread.
BLAS_WORK_PER_THREAD = 1 << 24


def max_threads() -> int:
    """Threads Numba was started with (``NUMBA_NUM_THREADS``, default: all cores)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def get_threads() -> int:
    """Current thread count of the kernels for the calling thread."""
    return int(numba.get_num_threads())


def threads_for(work: int, limit: int | None = None) -> int:
    """Threads worth using for `work` multiply-adds: ``1 <= n <= limit``.

    `limit`: the most allowed (default: the caller's `get_threads()`).
    """
    limit = get_threads() if limit is None else int(limit)
    return max(1, min(limit, int(work) // WORK_PER_THREAD))


def call_with_threads(work: int, fn, *args):
    """``fn(*args, n)`` with Numba limited to ``n = threads_for(work)`` threads for the call."""
    get, put = _COUNTS or _numba_counts()
    current = get()
    n = 1 if work < WORK_PER_THREAD else max(1, min(current, int(work) // WORK_PER_THREAD))
    if n == current:
        return fn(*args, n)
    put(n)
    try:
        return fn(*args, n)
    finally:
        put(current)


def call_serial(fn, *args):
    """``fn(*args)`` with Numba limited to one thread: for a sequence of kernel calls each
    below `WORK_PER_THREAD`, one change of the thread count instead of two per call."""
    get, put = _COUNTS or _numba_counts()
    current = get()
    if current == 1:
        return fn(*args)
    put(1)
    try:
        return fn(*args)
    finally:
        put(current)


def _numba_counts():
    """(get, set) of Numba's thread count for the calling thread: its C functions once its
    pool runs (a one-image call makes 3-4 kernel calls: the public functions' lock and
    checks were ~4 % of it), else the public ones. `n` is always in [1, current] here."""
    global _COUNTS
    if _COUNTS is not None:
        return _COUNTS
    numba.get_num_threads()  # starts the pool: the C functions exist from here on
    try:
        from numba.np.ufunc import parallel

        counts = (parallel._get_num_threads, parallel._set_num_threads)
        if counts[0]() != numba.get_num_threads():
            raise AttributeError
    except (ImportError, AttributeError, TypeError):  # another Numba: the public API
        counts = (numba.get_num_threads, numba.set_num_threads)
    _COUNTS = counts  # one assignment: a thread racing here sets the same pair
    return counts


_COUNTS: tuple | None = None


def set_threads(n: int | None = None) -> int:
    """Use at most ``n`` threads (``None``: all of them) in the kernels and in BLAS.

    Returns the previous kernel thread count. ``n`` is clipped to
    ``[1, max_threads()]``.
    """
    previous = get_threads()
    n = max_threads() if n is None else max(1, min(int(n), max_threads()))
    numba.set_num_threads(n)
    _BLAS.limit = n
    _BLAS.set(n)
    return previous


@contextmanager
def with_threads(n: int | None):
    """Context manager: run the block with ``n`` threads, then restore."""
    previous = set_threads(n)
    try:
        yield
    finally:
        set_threads(previous)


@contextmanager
def blas_threads(work: int):
    """Run the block's BLAS calls on the threads `work` multiply-adds pay for.

    One thread below `BLAS_WORK_PER_THREAD` per thread, else up to the
    `set_threads` limit (default: what OpenBLAS started with).
    """
    limit = _BLAS.limit if _BLAS.limit is not None else _BLAS.start
    n = max(1, min(limit, int(work) // BLAS_WORK_PER_THREAD))
    if not _BLAS.found or n == _BLAS.current:
        yield
        return
    previous = _BLAS.current
    _BLAS.set(n)
    try:
        yield
    finally:
        _BLAS.set(previous)


class _Blas:
    """numpy's OpenBLAS, driven through its C API (``openblas_set_num_threads``)."""

    _SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                "openblas_set_num_threads64_", "openblas_set_num_threads")

    def __init__(self):
        self.found = False
        self.limit = None      # set_threads' limit (None: never called)
        self.start = 1
        self.current = None
        self._set = self._get = None

    def load(self):
        """Find the OpenBLAS numpy loaded (Linux: /proc/self/maps); quietly nothing elsewhere."""
        import numpy  # noqa: F401  (loads its BLAS)

        try:
            with open("/proc/self/maps") as maps:
                paths = sorted({line.split()[-1] for line in maps
                                if "openblas" in line.rsplit("/", 1)[-1].lower() and ".so" in line})
        except OSError:
            return
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for name in self._SETTERS:
                setter = getattr(lib, name, None)
                getter = getattr(lib, name.replace("set_num_threads", "get_num_threads"), None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                    self._set, self._get, self.found = setter, getter, True
                    self.start = self.current = max(1, int(getter()))
                    return

    def set(self, n: int) -> None:
        if self.found and n != self.current:
            self._set(int(n))
            self.current = int(n)

    def threads(self) -> int | None:
        """Threads OpenBLAS uses now (None when it was not found)."""
        return int(self._get()) if self.found else None


_BLAS = _Blas()
_BLAS.load()


def get_blas_threads() -> int | None:
    """Threads numpy's OpenBLAS uses now (None if it could not be found)."""
    return _BLAS.threads()
