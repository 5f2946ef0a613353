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

Histograms: a second walk over the first `clipping_samples` calibration samples (default
256, None: all; compat "aidge": all) bins over [0, range], the range taken from every
sample. The cap bounds the second walk's cost (EfficientNet-Lite0, 500 crops: ~50 s ->
~26 s) without touching the ranges; a tensor's histogram shape has settled by then
(hundreds of thousands of values per tensor and sample at 224x224). With
`PTQConfig(one_walk_histograms=True)` (off by default; not a `quantize_network`
option), `calibrate` collects them in its walk instead (`histograms.RunningHistogram`),
over [0, R) with R the power of two above the range (`meta["hist_range"]`, in
(range, 2 range]); the MSE / mean-abs search then tries the same clip values,
k / 1000 of the range, on bin centres of that grid (2N bins over [0, R): at least
N over the range, 4096 at 8 bits). KL keeps a second walk over [0, range]: its
divergence depends on the bin grid (with the finer one it clipped lenet's conv1 to
3 % of its range again). The one walk saves a float64 network run per calibration
sample (EfficientNet-Lite0, 500 crops: ~75 s of ~195 s CPU). Measured on
EfficientNet-Lite0, 8 bits, 256 natural crops, 256 held-out, MSE + signs +
per-channel: without bias correction top-1 agreement / SQNR 89.8 % / 16.7 dB vs
89.5 % / 17.0 dB with the second walk (clip ratios moved by a median of 0.001, at most
0.067), but with bias correction 89.8 % / 19.4 dB vs 90.2 % / 22.0 dB, and lower in all
four pairings measured: hence off by default. Later measurement (256 crops, 128 held-out):
the whole loss comes back when one node of the two-walk result takes the one-walk clip
(getitem_15's 0.693 -> 0.701 of its range: 20.3 -> 18.0 dB), and sweeping that one clip
over 0.685..0.75 gives 22.0 / 20.3 / 18.6 / 18.0 / 20.1 / 19.9 dB with bias correction
but 16.5-16.9 dB without: the binning is right, bias correction's result is that noisy
in the clips, and the one-walk clips happened to land low on this set. compat "aidge"
keeps the second walk: the reference bins over the final range.

Requires: `calibrate` (meta["range"], and the running histograms unless compat
"aidge"); runs after the sign pass and before `normalize_activations`.
Ensures: with a clipping mode other than "max", every rescaling node with a
non-zero range has `meta["clip"]` in (0, range] and `meta["hist"]` (compat
"aidge": except the input quantizer, which keeps its range).
"""
from __future__ import annotations

import numpy as np

from ..errors import CalibrationError
from ..ir import Graph
from ..ir.node import META_HIST, META_RANGE, META_SIGNED
from .clipping_aidge import (AIDGE_CANDIDATES, aidge_kl_clipping, aidge_kl_divergences,  # noqa: F401
                             aidge_me_clipping, aidge_me_errors)
from .clipping_search import (CANDIDATES, CHUNK_ELEMENTS, KL_WORK, P_OF_MODE,  # noqa: F401
                              candidate_ratios, kl_clipping, kl_divergences, kl_thresholds, levels,
                              me_clipping, me_errors)
from .config import PassReport, PTQConfig
from .float_islands import bits_of
from .histograms import META_RUNNING_HIST, collect_histograms, histogram_bins
from .walk import RESCALING

META_HIST_RANGE = "hist_range"  # upper end of the bins of meta["hist"] when it is not meta["range"]


def _running_ratio(hist, nb_bits: int, mode: str, signed: bool, scale: float) -> float:
    """MSE / AA clip ratio k / 1000 (of the tensor's range) from a histogram over [0, R),
    the range being `scale` * R: the candidates are k / 1000 * scale of R (ties: smallest)."""
    ratios = candidate_ratios()
    if not np.any(hist) or levels(nb_bits, signed) >= np.asarray(hist).size:
        return 1.0
    return float(ratios[np.argmin(me_errors(hist, nb_bits, P_OF_MODE[mode], signed, ratios * scale))])


def _take_running_histograms(graph: Graph, rescalers) -> bool:
    """meta["hist"] from calibrate's running histograms (MSE / mean-abs): max(x, 0) for an
    unsigned node, |x| for the others.
    False (nothing set) when one is missing: no running histograms, or a node a join made
    signed after `calibrate` kept only max(x, 0) for it."""
    chosen = {}
    for node in rescalers:
        running = node.meta.pop(META_RUNNING_HIST, None)
        if running is None:
            continue
        unsigned = node.meta.get(META_SIGNED, True) is False
        wanted, other = ("positive", "magnitude") if unsigned else ("magnitude", "positive")
        hist = running[wanted]
        if hist is None and node.meta.get("min", -1.0) >= 0.0:
            hist = running[other]  # never negative: max(x, 0) and |x| are the same counts
        if hist is not None:
            chosen[node.name] = (hist, running["range"])
    if len(chosen) < len(rescalers):
        return False
    for node in rescalers:
        node.meta[META_HIST], node.meta[META_HIST_RANGE] = chosen[node.name]
    return True


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
    rescalers = [n for n in graph.topo_order() if n.op in RESCALING]
    walks = 1 if _take_running_histograms(graph, rescalers) else 2
    if walks == 2:  # KL and compat "aidge" (binning over the final range), or ranges from elsewhere
        for node in rescalers:
            node.meta.pop(META_HIST_RANGE, None)
        # KL on the magnitudes of a signed pre-ReLU tensor fits the negative bulk the ReLU discards
        # (lenet, 8 bits: conv1 clipped to 3 % of its range, 41 % accuracy): histogram what survives
        # the first `clipping_samples` (compat: all, as the reference): a histogram's shape settles
        # long before its range, which the ranges walk took from every sample
        data = cfg.calibration if compat else cfg.calibration.head(cfg.clipping_samples)
        collect_histograms(graph, data, bins, binning="round" if compat else "floor",
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
        hist_range = node.meta.get(META_HIST_RANGE, rng)
        if hist_range == rng:
            ratio = clip_ratio(node.meta[META_HIST], bits_of(node, cfg), mode, signed=signed,
                               compat=cfg.compat)
        else:  # bins over [0, R), R in (range, 2 range]: the same clip values, k / 1000 of the range
            ratio = _running_ratio(node.meta[META_HIST], bits_of(node, cfg), mode, signed, rng / hist_range)
        node.meta["clip"] = ratio * rng
        ratios[node.name] = ratio
    notes = {"clipping": cfg.clipping, "compat": cfg.compat, "bins": bins, "ratios": ratios,
             "skipped_zero_range": skipped, "unclipped_inputs": unclipped, "walks": walks,
             "samples": None if compat or walks == 1 else cfg.clipping_samples}
    return PassReport("optimize_clipping", True, notes)
