"""Our clip searches on a magnitude histogram: MSE / mean-abs and KL (TensorRT).

Split from `clipping`, whose module doc states the models and formulas; `clipping`
re-exports these names.
"""
from __future__ import annotations

import numpy as np

CANDIDATES = 1000               # ours: c = k / 1000, k = 1..1000
KL_WORK = 1 << 21               # ours: KL thresholds x levels per histogram, ~2M
CHUNK_ELEMENTS = 1 << 20        # bound on a (candidates x bins) temporary, ~8 MB of float64
P_OF_MODE = {"mse": 2.0, "aa": 1.0}


def candidate_ratios(count: int = CANDIDATES) -> np.ndarray:
    """Our candidate clip ratios: k / count for k = 1..count (the last is 1: no clipping)."""
    return np.arange(1, count + 1) / float(count)


def levels(nb_bits: int, signed: bool = True) -> int:
    """Steps of a quantizer over [0, c]: 2^(n-1) - 1 signed, 2^n - 1 unsigned."""
    return (1 << (nb_bits - 1)) - 1 if signed else (1 << nb_bits) - 1


def _as_hist(hist) -> np.ndarray:
    h = np.asarray(hist, dtype=np.float64)
    if h.ndim != 1 or h.size == 0:
        raise ValueError(f"a histogram is a non-empty 1-D array, got shape {h.shape}")
    if np.any(h < 0) or not np.all(np.isfinite(h)):
        raise ValueError("histogram counts must be finite and non-negative")
    return h


# ---------------------------------------------------------------------- ours: MSE / AA
def me_errors(hist, nb_bits: int, p: float, signed: bool = True, candidates=None,
              method: str = "auto") -> np.ndarray:
    """E(c) = sum_i h_i |x_i - q_c(x_i)|^p for every candidate c (our sign-aware model).

    Two evaluations of the same sum, equal up to rounding: "direct" over
    candidates x non-empty bins; "levels" per quantization level from prefix
    sums of h, h x, h x^2 (O(candidates x levels), p = 1 or 2 only). "auto"
    takes the cheaper one.
    """
    h = _as_hist(hist)
    cands = candidate_ratios() if candidates is None else np.asarray(candidates, dtype=np.float64)
    steps = levels(nb_bits, signed)
    nonzero = np.flatnonzero(h)
    if nonzero.size == 0:
        return np.zeros(cands.size)
    if method == "auto":
        method = "levels" if p in (1, 2) and 2 * (steps + 1) < nonzero.size else "direct"
    if method == "levels":
        return _me_errors_levels(h, float(steps), p, cands)
    return _me_errors_direct(h, nonzero, float(steps), p, cands)


def _me_errors_direct(h, nonzero, steps, p, cands):
    x = (nonzero + 0.5) / h.size
    weights = h[nonzero]
    errors = np.empty(cands.size)
    chunk = max(1, CHUNK_ELEMENTS // nonzero.size)
    for start in range(0, cands.size, chunk):
        c = cands[start:start + chunk, None]
        q = np.floor(x * (steps / c) + 0.5)
        np.minimum(q, steps, out=q)
        q *= c / steps
        d = np.abs(q - x, out=q)
        d = d * d if p == 2 else (d if p == 1 else d ** p)
        errors[start:start + chunk] = d @ weights
    return errors


def _me_errors_levels(h, steps, p, cands):
    """Level k = 0..s holds the bins i with floor(x_i s / c + 1/2) = k, i.e. i from
    a_k = ceil((k - 1/2) N c / s - 1/2) (a_0 = 0, a_{s+1} = N; the last level also
    holds the clipped bins, all mapped to q_s = c). Per level, with S0, S1, S2
    the sums of h, h x, h x^2: p = 2 gives S2 - 2 q S1 + q^2 S0; p = 1 splits the
    level at q into q S0 - S1 below and S1 - q S0 above."""
    size = h.size
    x = (np.arange(size) + 0.5) / size
    s0 = np.concatenate(([0.0], np.cumsum(h)))
    s1 = np.concatenate(([0.0], np.cumsum(h * x)))
    s2 = np.concatenate(([0.0], np.cumsum(h * x * x)))
    count = int(steps) + 1
    k = np.arange(count, dtype=np.float64)
    errors = np.empty(cands.size)
    chunk = max(1, CHUNK_ELEMENTS // (count + 1))
    for start in range(0, cands.size, chunk):
        c = cands[start:start + chunk, None]
        q = k * (c / steps)                                           # (m, s+1)
        edges = np.empty((c.shape[0], count + 1), dtype=np.int64)
        edges[:, 0] = 0
        edges[:, -1] = size
        inner = np.ceil((k[1:] - 0.5) * (size * c / steps) - 0.5)
        edges[:, 1:-1] = np.clip(inner, 0, size)
        lo, hi = edges[:, :-1], edges[:, 1:]
        if p == 2:
            e = (s2[hi] - s2[lo]) - 2.0 * q * (s1[hi] - s1[lo]) + q * q * (s0[hi] - s0[lo])
        else:
            mid = np.clip(np.ceil(q * size - 0.5).astype(np.int64), lo, hi)
            e = (q * (s0[mid] - s0[lo]) - (s1[mid] - s1[lo])
                 + (s1[hi] - s1[mid]) - q * (s0[hi] - s0[mid]))
        errors[start:start + chunk] = np.maximum(e, 0.0).sum(axis=1)
    return errors


def me_clipping(hist, nb_bits: int, p: float = 2.0, signed: bool = True, candidates=None) -> float:
    """Clip ratio in (0, 1] minimising the p-th power error of `hist` (ties: smallest c).

    1.0 for an empty histogram, and when the quantizer has at least as many
    steps as the histogram has bins: the histogram no longer resolves the
    rounding error, only the clipping error, which vanishes at c = 1.
    """
    cands = candidate_ratios() if candidates is None else np.asarray(candidates, dtype=np.float64)
    h = _as_hist(hist)
    if not np.any(h) or levels(nb_bits, signed) >= h.size:
        return 1.0
    return float(cands[np.argmin(me_errors(hist, nb_bits, p, signed, cands))])


# ---------------------------------------------------------------------- ours: KL(P||Q)
def _xlogx(v: np.ndarray) -> np.ndarray:
    out = np.zeros_like(v, dtype=np.float64)
    positive = v > 0
    out[positive] = v[positive] * np.log(v[positive])
    return out


def kl_thresholds(size: int, count: int, work: int = KL_WORK) -> np.ndarray:
    """Candidate thresholds i = L, L + d, ..., N (always both ends), d the smallest
    stride keeping (thresholds x levels) within ~`work` (d = 1 up to 10 bits)."""
    if size < count:
        return np.arange(0)
    stride = max(1, -(-(size - count + 1) * (count + 1) // work))
    return np.unique(np.append(np.arange(count, size + 1, stride), size))


def kl_divergences(hist, nb_bits: int, signed: bool = True, zero_spike: bool = True):
    """(thresholds i, KL(P||Q) for each) for TensorRT's candidates i = L..N (`kl_thresholds`).

    Closed form per candidate i (T = total, O = outliers sum(h[i:]), level j
    covering bins [B_j, B_j+1), B_j = ceil(j i / L), S_j its mass in h[:i],
    n_j its number of bins with P > 0, M_j its mass in P: S_j plus O for the
    last level):
        T * KL = sum_b p_b log p_b - T log T - sum_j M_j log(S_j / (n_j * S))
    with p_b the unnormalised P, S = sum_j S_j = sum(h[:i]), and
    sum_b p_b log p_b = sum_{b < i-1} h_b log h_b + (h_{i-1} + O) log(h_{i-1} + O)
    and sum_j M_j log S = T log S.
    """
    h = _as_hist(hist).copy()
    size = h.size
    count = 1 << (nb_bits - 1) if signed else 1 << nb_bits
    if zero_spike and size > 1:
        h[0] = min(h[0], h[1])
    total = h.sum()
    thresholds = kl_thresholds(size, count) if total > 0 else np.arange(0)
    if thresholds.size == 0:
        return thresholds, np.zeros(0)
    mass = np.concatenate(([0.0], np.cumsum(h)))
    filled = np.concatenate(([0], np.cumsum(h > 0)))
    entropy = np.concatenate(([0.0], np.cumsum(_xlogx(h))))
    log_count = np.log(np.maximum(np.arange(size + 2), 1))      # log n for n bins, log 0 := 0
    result = np.empty(thresholds.size)
    chunk = max(1, CHUNK_ELEMENTS // (count + 1))
    j = np.arange(count + 1)
    shift = count.bit_length() - 1                                # L is a power of 2
    for start in range(0, thresholds.size, chunk):
        i = thresholds[start:start + chunk]
        bounds = (j[None, :] * i[:, None] + (count - 1)) >> shift         # B_j = ceil(j i / L)
        level_mass = np.diff(mass[bounds], axis=1)                         # S_j
        level_bins = np.diff(filled[bounds], axis=1)                       # n_j on h
        inside = mass[i]
        outliers = total - inside
        last = h[i - 1]
        level_bins[:, -1] += (outliers > 0) & (last == 0)   # P's last bin is non-empty
        # sum_j M_j log(S_j / n_j), with M_j = S_j except M_last = S_last + outliers
        log_q = np.log(np.where(level_mass > 0, level_mass, 1.0)) - log_count[level_bins]
        cross = np.einsum("kl,kl->k", level_mass, log_q) + outliers * log_q[:, -1]
        sum_plogp = entropy[i - 1] + _xlogx(last + outliers)
        with np.errstate(divide="ignore"):
            kl = (sum_plogp - total * np.log(total) - cross + total * np.log(inside)) / total
        bad = ((outliers > 0) & (level_mass[:, -1] <= 0)) | (inside <= 0)
        kl[bad] = np.inf
        result[start:start + chunk] = kl
    return thresholds, result


def kl_clipping(hist, nb_bits: int, signed: bool = True, zero_spike: bool = True) -> float:
    """Clip ratio i / N minimising KL(P||Q) (TensorRT); 1.0 when N <= levels or h is empty."""
    thresholds, divergence = kl_divergences(hist, nb_bits, signed, zero_spike)
    if thresholds.size == 0 or not np.any(np.isfinite(divergence)):
        return 1.0
    # Values within rounding noise of the minimum are ties (a delta histogram gives KL = 0
    # for every threshold past it, computed as +-1e-17); ties go to the smallest threshold.
    best = np.min(divergence)
    tolerance = 1e-12 * max(1.0, abs(best))
    index = int(np.flatnonzero(divergence <= best + tolerance)[0])
    return float(thresholds[index]) / np.asarray(hist).size
