"""The reference library's clip searches (compat "aidge"), formula for formula.

Split from `clipping` (whose module doc states the formulas); `clipping` re-exports
these names. Candidates c = it / 100 for it = 1..99; sums accumulated in bin order,
as the C++ loops do.
"""
from __future__ import annotations

import numpy as np

from .clipping_search import CHUNK_ELEMENTS, _as_hist

AIDGE_CANDIDATES = np.arange(1, 100) / 100.0


def _aidge_argmin(errors: np.ndarray) -> float:
    """The reference's scan: starts at the 2nd candidate, strict <, so the first minimum wins."""
    scan = np.where(np.isnan(errors[1:]), np.inf, errors[1:])
    return float(AIDGE_CANDIDATES[1 + int(np.argmin(scan))])


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """std::round of non-negative values, exactly (no 0.5 added before the floor)."""
    floor = np.floor(v)
    return floor + ((v - floor) >= 0.5)


def aidge_me_errors(hist, nb_bits: int, p: float) -> np.ndarray:
    """The reference's E(c) for c = 0.01..0.99 (sequential sums, as its C++ loop)."""
    h = _as_hist(hist)
    size = h.size
    steps = float((1 << (nb_bits - 1)) - 1)
    nonzero = np.flatnonzero(h)      # an empty bin adds exactly 0.0 to the running sum
    x = (nonzero + 0.5) / size
    h = h[nonzero]
    errors = np.zeros(AIDGE_CANDIDATES.size)
    if nonzero.size == 0:
        return errors
    chunk = max(1, CHUNK_ELEMENTS // nonzero.size)
    for start in range(0, AIDGE_CANDIDATES.size, chunk):
        c = AIDGE_CANDIDATES[start:start + chunk, None]
        q = np.minimum(_round_half_away(x * steps / c) * c / steps, c)
        d = np.abs(x - q)
        err = h * (d * d if p == 2 else (d if p == 1 else d ** p))
        errors[start:start + chunk] = np.cumsum(err, axis=1)[:, -1]
    return errors


def aidge_me_clipping(hist, nb_bits: int, p: float = 2.0) -> float:
    """The reference's `computeMEClipping(hist, nbBits, p)` (aidge-ptq.md §4.1)."""
    return _aidge_argmin(aidge_me_errors(hist, nb_bits, p))


def aidge_kl_divergences(hist, nb_bits: int) -> np.ndarray:
    """The reference's reverse divergence D(c) for c = 0.01..0.99, as decoded (§4.1).

    Q and D only need the non-empty bins (an empty bin adds exactly 0.0), but
    qNorm counts Q[j(i)] once per source bin, empty or not, in bin order.
    """
    h = _as_hist(hist)
    size = h.size
    nbq = (1 << (nb_bits - 1)) - 1
    x = (np.arange(size) + 0.5) / size
    total = np.cumsum(h)[-1]
    nonzero = np.flatnonzero(h)
    result = np.zeros(AIDGE_CANDIDATES.size)
    if nonzero.size == 0:
        return result
    counts = h[nonzero]
    p = counts / total
    chunk = max(1, CHUNK_ELEMENTS // size)
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, AIDGE_CANDIDATES.size, chunk):
            c = AIDGE_CANDIDATES[start:start + chunk, None]
            k = c.shape[0]
            j = np.floor(x / c * nbq).astype(np.int64)                         # (k, N)
            inside = j < nbq
            slot = np.minimum(j, nbq - 1, out=j)
            used = slot[:, nonzero]
            rows = np.arange(k)[:, None] * nbq
            q_hist = np.bincount((rows + used).ravel(), weights=np.broadcast_to(counts, used.shape).ravel(),
                                 minlength=k * nbq).reshape(k, nbq)
            q_at = np.take_along_axis(q_hist, slot, axis=1)
            q_norm = np.cumsum(np.where(inside, q_at, 0.0), axis=1)[:, -1:]
            q = q_at[:, nonzero] / q_norm
            keep = inside[:, nonzero] & (q != 0)                               # p != 0 here
            terms = np.where(keep, q * np.log(q / p), 0.0)
            result[start:start + k] = np.cumsum(terms, axis=1)[:, -1]
    return result


def aidge_kl_clipping(hist, nb_bits: int) -> float:
    """The reference's `computeKLClipping(hist, nbBits)`: reverse KL, clipped mass excluded."""
    return _aidge_argmin(aidge_kl_divergences(hist, nb_bits))
