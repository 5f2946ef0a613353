"""Element-wise kernels: add, concat along channels, relu, clip.

All take arrays of any shape (no broadcasting: the caller validates shapes).
"""

import numba
import numpy as np


@numba.njit(cache=True)
def add(a, b):
    """Exact sum ``a + b`` as int64.

    Parameters
    ----------
    a, b : same-shape arrays, any integer dtypes

    Returns
    -------
    int64 array, same shape

    Notes
    -----
    Accumulator: int64 (exact for all inputs up to int32/uint32). No rounding
    and no saturation: the caller applies ``fit_accumulator``.
    """
    if a.shape != b.shape:
        raise ValueError("add: operand shapes differ")
    fa, fb = a.ravel(), b.ravel()
    out = np.empty(fa.size, np.int64)
    for i in range(fa.size):
        out[i] = np.int64(fa[i]) + np.int64(fb[i])
    return out.reshape(a.shape)


@numba.njit(cache=True)
def concat2(a, b):
    """Concatenate two arrays along axis 1.

    Parameters
    ----------
    a : (N, Ca, ...) array
    b : (N, Cb, ...) array, same dtype and trailing dims as ``a``

    Returns
    -------
    (N, Ca + Cb, ...) array of ``a.dtype``

    Notes
    -----
    Pure data movement, no arithmetic. For more than two inputs the caller
    folds: ``concat2(concat2(x0, x1), x2)``.
    """
    if a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise ValueError("concat2: batch or trailing dimensions differ")
    # Per batch item, axis 1 onwards is one contiguous block in a, b and out.
    fa, fb = a.ravel(), b.ravel()
    n_batch = a.shape[0]
    block_a = fa.size // n_batch if n_batch else 0
    block_b = fb.size // n_batch if n_batch else 0
    out = np.empty(fa.size + fb.size, a.dtype)
    i = 0
    for n in range(n_batch):
        for j in range(n * block_a, (n + 1) * block_a):
            out[i] = fa[j]
            i += 1
        for j in range(n * block_b, (n + 1) * block_b):
            out[i] = fb[j]
            i += 1
    return out.reshape((n_batch, a.shape[1] + b.shape[1]) + a.shape[2:])


@numba.njit(cache=True)
def relu(x):
    """``max(x, 0)`` element-wise.

    Parameters
    ----------
    x : array, any integer dtype and shape

    Returns
    -------
    array of ``x.dtype`` and shape

    Notes
    -----
    Comparison only: no accumulator, no rounding.
    """
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = flat[i] if flat[i] > 0 else 0
    return out.reshape(x.shape)


@numba.njit(cache=True)
def clip(x, lo, hi):
    """``min(max(x, lo), hi)`` element-wise.

    Parameters
    ----------
    x : array, any integer dtype and shape
    lo, hi : int
        ``lo <= hi``, both representable in ``x.dtype`` (caller checks).

    Returns
    -------
    array of ``x.dtype`` and shape

    Notes
    -----
    Comparison only: no accumulator, no rounding.
    """
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in range(flat.size):
        out[i] = min(max(flat[i], lo), hi)
    return out.reshape(x.shape)


def add_ref(a, b):
    """NumPy twin of :func:`add`."""
    return a.astype(np.int64) + b.astype(np.int64)


def concat2_ref(a, b):
    """NumPy twin of :func:`concat2`."""
    return np.concatenate([a, b], axis=1)


def relu_ref(x):
    """NumPy twin of :func:`relu`."""
    return np.maximum(x, 0).astype(x.dtype)


def clip_ref(x, lo, hi):
    """NumPy twin of :func:`clip`."""
    return np.clip(x.astype(np.int64), lo, hi).astype(x.dtype)
