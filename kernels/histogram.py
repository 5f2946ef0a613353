"""Magnitude histogram of float64 values, the statistic of clipping calibration.

Each value ``v`` gives a magnitude ``m = |v|``, or ``m = max(v, 0)`` when
``unsigned``, binned into ``bins`` equal bins over ``[0, rng]``::

    t = m / rng * bins                          (two float64 operations, in this order)
    index = min(floor(t), bins - 1)             "floor" binning
    index = min(floor(t) + (t - floor(t) >= 1/2), bins - 1)
                                                "round" binning: ties away from zero

``t - floor(t)`` is exact in float64, so the tie test never rounds.
``rng <= 0`` (a constant-zero tensor) puts every value in bin 0. A NaN has
no bin: both functions raise ``ValueError`` with the count of NaNs.
The kernel is one pass over the values with no temporary arrays.
"""

import numba
import numpy as np


@numba.njit(cache=True)
def _histogram(values, rng, counts, unsigned, ties_away):
    bins = np.float64(counts.shape[0])
    top = bins - 1.0
    nans = 0
    for k in range(values.shape[0]):
        v = values[k]
        if v != v:
            nans += 1
            continue
        m = (v if v > 0.0 else 0.0) if unsigned else abs(v)
        t = m / rng * bins
        index = np.floor(t)
        if ties_away and t - index >= 0.5:
            index += 1.0
        counts[np.int64(min(index, top))] += 1
    return nans


def _flat(values, bins):
    if bins < 1:
        raise ValueError(f"histogram: needs at least one bin, got {bins}")
    return np.ascontiguousarray(np.asarray(values, np.float64).ravel())


def histogram(values, rng, bins, unsigned=False, ties_away=False):
    """Count the magnitudes of ``values`` in ``bins`` equal bins over ``[0, rng]``.

    Parameters
    ----------
    values : array_like of float, any shape
        Converted to float64 (a copy only when it is not already contiguous float64).
    rng : float
        Upper end of the binned range; ``<= 0`` puts everything in bin 0.
    bins : int
        Number of bins, ``>= 1``.
    unsigned : bool
        Bin ``max(v, 0)`` instead of ``|v|``.
    ties_away : bool
        "round" binning (ties away from zero) instead of "floor" (module doc).

    Returns
    -------
    counts : ndarray of int64, shape (bins,)
        Summing to ``values.size``. Raises ``ValueError`` for a NaN.
    """
    flat = _flat(values, bins)
    if rng != rng:  # a NaN range would index the counts at int64(NaN): far out of bounds
        raise ValueError("histogram: the range is NaN")
    counts = np.zeros(int(bins), np.int64)
    if rng <= 0:
        counts[0] = flat.size
        return counts
    nans = _histogram(flat, float(rng), counts, bool(unsigned), bool(ties_away))
    if nans:
        raise ValueError(f"histogram: {nans} NaN value(s) have no bin")
    return counts


def bin_indices_ref(magnitudes, rng, bins, ties_away=False):
    """int64 bin index of each magnitude (any shape), vectorised (module doc); ``rng > 0``."""
    with np.errstate(over="ignore", invalid="ignore"):  # m / rng may overflow: the last bin
        t = np.asarray(magnitudes, np.float64) / rng * bins
        index = np.floor(t)
        if ties_away:
            index += (t - index) >= 0.5
    np.minimum(index, bins - 1, out=index)
    return index.astype(np.int64)


def histogram_ref(values, rng, bins, unsigned=False, ties_away=False):
    """NumPy twin of :func:`histogram`: vectorised bin indices, then ``bincount``."""
    flat = _flat(values, bins)
    if rng <= 0:
        return np.bincount(np.zeros(flat.size, np.int64), minlength=bins).astype(np.int64)
    nans = int(np.count_nonzero(np.isnan(flat)))
    if nans:
        raise ValueError(f"histogram: {nans} NaN value(s) have no bin")
    m = np.maximum(flat, 0.0) if unsigned else np.abs(flat)
    return np.bincount(bin_indices_ref(m, rng, bins, ties_away), minlength=bins).astype(np.int64)


histogram.jitted = _histogram  # the jitted body (tests check its jit options)
