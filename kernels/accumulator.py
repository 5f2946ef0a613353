"""Fit an int64 accumulator into a narrower signed accumulator width."""

import numba
import numpy as np


@numba.njit(cache=True)
def fit_accumulator(acc, bits, wrap):
    """Wrap or saturate values to the signed ``bits``-bit range.

    Parameters
    ----------
    acc : int64 array, C-contiguous (the caller usually passes a 1-D ravel)
    bits : int
        Accumulator width, 1..64; 64 leaves every value unchanged.
    wrap : bool
        True: two's-complement wrap-around (keep the low ``bits`` bits,
        sign-extend). False: saturate to ``[-2**(bits-1), 2**(bits-1) - 1]``.

    Returns
    -------
    out : int64 array, same shape as ``acc``
    n_overflow : int
        Number of elements that were outside the range (in either mode).

    Notes
    -----
    Uses only masks and comparisons, so nothing can overflow int64. No rounding.
    """
    if bits < 1 or bits > 64:
        raise ValueError("fit_accumulator: bits must be in 1..64")
    flat = acc.ravel()
    out = np.empty(flat.size, np.int64)
    if bits >= 64:
        out[:] = flat
        return out.reshape(acc.shape), 0
    hi = (np.int64(1) << (bits - 1)) - 1
    lo = -hi - 1
    mask = (np.int64(1) << bits) - 1
    n_overflow = 0
    for i in range(flat.size):
        v = flat[i]
        if lo <= v <= hi:
            out[i] = v
            continue
        n_overflow += 1
        if wrap:
            low = v & mask
            out[i] = low - mask - 1 if low > hi else low
        else:
            out[i] = hi if v > hi else lo
    return out.reshape(acc.shape), n_overflow


def fit_accumulator_ref(acc, bits, wrap):
    """NumPy twin of :func:`fit_accumulator` (the spec), any shape."""
    acc = np.asarray(acc, np.int64)
    if bits >= 64:
        return acc.copy(), 0
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    n_overflow = int(np.count_nonzero((acc < lo) | (acc > hi)))
    if not wrap:
        return np.clip(acc, lo, hi), n_overflow
    # Classic sign extension of the low `bits` bits (numpy shifts wrap).
    drop = np.int64(64 - bits)
    return (acc << drop) >> drop, n_overflow
