"""optimize_clipping: choose each rescaling node's clip from a histogram of its output.

`cfg.clipping`:
- "max": nothing to do, the clip is the calibrated max |x| (`modified` False);
- "mse" / "aa": the ratio c in (0, 1] minimising the quantization error of the
  histogram, E(c) = sum_i h_i |x_i - q_c(x_i)|^p with p = 2 (mean squared
  error) or p = 1 ("aa", mean absolute error), x_i the bin centres on [0, 1];
- "kl": the threshold minimising KL(P||Q) between the histogram and its
  quantized version (TensorRT's entropy calibration).
The node's clip becomes `meta["clip"] = c * meta["range"]`, which
`normalize_activations.effective_range` uses instead of the range.

Ours, improving on the reference library (aidge-ptq.md §4.1, §7):
- sign-aware levels: a quantizer rounds [0, c] onto s steps, s = 2^(n-1) - 1
  for a signed node and 2^n - 1 for an unsigned one (`meta["signed"] is False`,
  set by the sign pass), q_c(x) = min(round(x * s / c), s) * c / s; the
  negative side of a signed quantizer ([-2^(n-1), ...]) has one extra level
  that the |x| model ignores. Unsigned nodes are histogrammed on max(x, 0)
  (see `histograms`);
- candidates c = k / 1000, k = 1..1000 (c = 1: no clipping), all of them
  eligible (the first one too), ties to the smallest c; E is vectorised
  over candidates x non-empty bins, or per quantization level from prefix
  sums of h, h x, h x^2 when there are fewer levels than bins (same sums,
  O(candidates x levels)), in chunks of bounded memory;
- KL: TensorRT's algorithm on the magnitude histogram. For each threshold bin
  i = L..N (L = 2^(n-1) levels for a signed node, 2^n unsigned: 128 / 256 at
  8 bits as in TensorRT): P = hist[:i] with the outliers hist[i:] added to
  its last bin; Q = hist[:i] merged into L levels (bin b -> level
  floor(b * L / i), pytorch-quantization's balanced split) and spread back
  uniformly over the bins of each level where P is non-zero; both normalised;
  KL(P||Q) = sum_{P>0} P log(P / Q), +inf when some P > 0 meets Q = 0 (a last
  level holding outliers only). The clip is the edge of the best bin, i / N.
  Every i is tried up to 10 bits; above, a stride (2 at 11 bits, 3 at 12)
  bounds the work (thresholds x levels) to ~2M per histogram.
  Before the search the zero bin is set to min(h0, h1) (pytorch-quantization
  sets bins[0] = bins[1]): exact zeros (pixels, the negative half of an
  unsigned pre-Relu tensor) are represented exactly by every clip, and left
  as a spike they make KL clip far too hard. KL is evaluated for every i at
  O(L) cost from prefix sums of h, [h > 0] and h log h (closed form below),
  not O(i) per candidate.

compat "aidge" reproduces the reference's formulas exactly: N = 2^(n+4) bins
binned with round, candidates c = it / 100 for it = 1..99 with the arg-min
scan starting at the second (c = 0.01 is never chosen; ties to the first),
x_i = (i + 0.5) / N, q_c(x) = min(round(x * steps / c) * c / steps, c) with
steps = 2^(n-1) - 1 for every node, E(c) = sum_i h_i |x_i - q_c(x_i)|^p; and
its reverse KL as decoded: nbQ = 2^(n-1) - 1, j(i) = floor(x_i / c * nbQ),
Q[min(j, nbQ - 1)] += h_i, qNorm = sum_{i: j(i) < nbQ} Q[j(i)],
p_i = h_i / sum(h), q_i = Q[j(i)] / qNorm,
D(c) = sum_{i: j(i) < nbQ, p_i != 0, q_i != 0} q_i log(q_i / p_i).
Sums are accumulated sequentially in bin order, as the C++ loops do.

With "kl", a signed node read only by ReLUs is histogrammed on max(x, 0) (what
the ReLU keeps; its levels stay signed): KL on the magnitudes of a pre-ReLU
tensor matched the negative bulk the ReLU discards and clipped lenet's conv1 to
3 % of its range (41 % accuracy at 8 bits). MSE / mean-abs keep |x|.

With "kl" the input quantizer is clipped by MSE instead: raw inputs are often
discrete (digits' 17 grey levels), and KL on such a spiky histogram clipped
digits_mlp's input to 1/16 of its range (29 % accuracy at 8 bits).
compat "aidge" never clips the input quantizer: the reference has none (its
caller feeds x * (2^(n-1) - 1) for an input in +-1), so its range stays max |x|.

Requires: `calibrate` (meta["range"]); runs after the sign pass and before
`normalize_activations`. Reads the calibration set a second time.
Ensures: with a clipping mode other than "max", every rescaling node with a
non-zero range has `meta["clip"]` in (0, range] and `meta["hist"]` (compat
"aidge": except the input quantizer, which keeps its range).
"""
from __future__ import annotations

import numpy as np

from ..errors import CalibrationError
from ..ir import Graph
from ..ir.node import META_HIST, META_RANGE, META_SIGNED
from .config import PassReport, PTQConfig
from .float_islands import bits_of
from .histograms import collect_histograms, histogram_bins
from .walk import RESCALING

CANDIDATES = 1000               # ours: c = k / 1000, k = 1..1000
KL_WORK = 1 << 21               # ours: KL thresholds x levels per histogram, ~2M
CHUNK_ELEMENTS = 1 << 20        # bound on a (candidates x bins) temporary, ~8 MB of float64
AIDGE_CANDIDATES = np.arange(1, 100) / 100.0
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


# ---------------------------------------------------------------------- compat "aidge"
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


# ---------------------------------------------------------------------- the pass
def clip_ratio(hist, nb_bits: int, mode: str, *, signed: bool = True, compat: str | None = None) -> float:
    """The clip ratio of one histogram for `mode` ("max", "mse", "aa", "kl")."""
    if mode == "max":
        return 1.0
    if compat == "aidge":
        return aidge_kl_clipping(hist, nb_bits) if mode == "kl" else \
            aidge_me_clipping(hist, nb_bits, P_OF_MODE[mode])
    if mode == "kl":
        return kl_clipping(hist, nb_bits, signed)
    return me_clipping(hist, nb_bits, P_OF_MODE[mode], signed)


def optimize_clipping(graph: Graph, cfg: PTQConfig) -> PassReport:
    if cfg.clipping == "max":
        return PassReport("optimize_clipping", False, {"clipping": "max"})
    if cfg.calibration is None:
        raise CalibrationError("optimize_clipping needs calibration data (a second read)")
    compat = cfg.compat == "aidge"
    widest = max([cfg.nb_bits] + list(cfg.node_bits.values()))
    bins = histogram_bins(widest, cfg.compat)
    # KL on the magnitudes of a signed pre-ReLU tensor fits the negative bulk the ReLU discards
    # (lenet, 8 bits: conv1 clipped to 3 % of its range, 41 % accuracy): histogram what survives
    collect_histograms(graph, cfg.calibration, bins, binning="round" if compat else "floor",
                       sign_aware=not compat, rectified=cfg.clipping == "kl" and not compat)
    ratios: dict[str, float] = {}
    skipped: list[str] = []
    unclipped: list[str] = []
    for node in graph.topo_order():
        if node.op not in RESCALING:
            continue
        rng = float(node.meta[META_RANGE])
        if rng <= 0:
            skipped.append(node.name)  # constant zero: any scale represents it
            continue
        if compat and node.attrs.get("role") == "input":
            unclipped.append(node.name)  # the reference never quantizes (so never clips) the input
            continue
        signed = node.meta.get(META_SIGNED, True) is not False
        mode = cfg.clipping
        if mode == "kl" and node.attrs.get("role") == "input" and not compat:
            mode = "mse"  # KL is degenerate on discrete inputs (pixels): see module doc
        ratio = clip_ratio(node.meta[META_HIST], bits_of(node, cfg), mode, signed=signed,
                           compat=cfg.compat)
        node.meta["clip"] = ratio * rng
        ratios[node.name] = ratio
    notes = {"clipping": cfg.clipping, "compat": cfg.compat, "bins": bins, "ratios": ratios,
             "skipped_zero_range": skipped, "unclipped_inputs": unclipped}
    return PassReport("optimize_clipping", True, notes)
