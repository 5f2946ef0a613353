"""histograms: streaming histograms of every rescaling node's output.

A `HistogramObserver` is the reference interpreter (float64, like
`calibrate.RangeObserver`) with an observer in `run_node`: for every rescaling
node (SCALING/QUANTIZER) it bins the node's output into N bins over
[0, range], range = `meta["range"]` from `calibrate`, and keeps only the
int64 counts, never the activations, so memory does not depend on the size of
the calibration set. It is a helper of the `optimize_clipping` pass (which
needs a second read of the calibration set, after the ranges are known).

What is binned (the magnitude the quantizer has to represent):
- a signed node: |x| (the quantizer is symmetric);
- an unsigned node (`meta["signed"] is False`, set by the sign pass): max(x, 0).
  Such a node's input is non-negative or all its readers are Relus, so a
  negative value ends as 0 whatever the clip and must not pull the clip up;
- compat "aidge": |x| for every node, as the reference library does.

Bin index of a magnitude m (N bins over [0, range]):
- ours: min(floor(m / range * N), N - 1): bin i holds [i, i+1) * range / N,
  so its centre (i + 0.5) / N (used by the clip search) is its true midpoint;
- compat "aidge": min(round(m / range * N), N - 1), round = half away from
  zero (C++ std::round), the reference's rule (aidge-ptq.md §4.1).
A node whose range is 0 (a constant-zero tensor) puts everything in bin 0.

Bin count (`histogram_bins`): 2^(n+4), the reference's default (4096 at 8
bits); ours caps it at 2^12 = 4096 (reached at 8 bits): above 8 bits the
levels get as fine as the bins and clipping gains nothing (once the levels
reach the bin count, from 14 bits signed for MSE/AA and 13 for KL, the search
keeps c = 1), while 2^20 bins at 16 bits would cost 8 MB per node and seconds
of search. Compat keeps 2^(n+4).

One walk instead of two (`RunningHistogram`, opt-in `PTQConfig.one_walk_histograms`,
not compat "aidge"): the
binning above needs the final range, so it reads the calibration set a second
time. `calibrate` instead bins each rescaling node's output while it measures
the ranges, over [0, R) with R the smallest power of two above every magnitude
seen so far. When a batch exceeds R, R doubles and bins 2i, 2i+1 merge into
bin i: with R and N powers of two, t = m / R * N is m times a power of two
(exact), and floor(floor(t) / 2) = floor(t / 2), so the merged counts are the
ones binning at 2R from the start would give, whatever the batch order.
R ends in (range, 2 range]; `calibrate` takes 2N bins, so at least N cover the range. Both |x| and,
for a node whose readers all clamp negatives (the only ones the sign pass can
make unsigned with negative values), max(x, 0) are kept; `optimize_clipping`
takes the one the sign pass asks for. MSE / mean-abs only: KL's divergence depends
on the bin grid, so KL keeps the second walk.

Requires: `calibrate` (meta["range"]); the sign pass if sign-aware binning is
wanted. Ensures: every rescaling node has `meta["hist"]`, an int64 array of N
counts summing to the number of calibration values it produced.
"""
from __future__ import annotations

import math

import numpy as np

from aidge_lite.kernels.histogram import bin_indices_ref
from aidge_lite.kernels.histogram import histogram as magnitude_histogram

from ..errors import QuantizationError
from ..interp.reference import ReferenceInterpreter
from ..ir import NON_NEGATIVE, Graph, OpType
from ..ir.node import META_HIST, META_RANGE, META_SIGNED
from .walk import RESCALING

META_RUNNING_HIST = "running_hist"   # a RunningHistogram, from calibrate to optimize_clipping
BINS_EXTRA_BITS = 4        # N = 2^(nb_bits + 4), the reference's rule
MAX_HIST_BITS = 12         # our cap: N <= 2^12 = 4096, the 8-bit count
BINNINGS = ("floor", "round")


def histogram_bins(nb_bits: int, compat: str | None = None) -> int:
    """Number of bins for `nb_bits`: 2^(n+4), capped at 2^12 unless compat "aidge"."""
    bits = nb_bits + BINS_EXTRA_BITS
    return 1 << (bits if compat == "aidge" else min(bits, MAX_HIST_BITS))


def bin_indices(magnitudes: np.ndarray, rng: float, bins: int, binning: str = "floor") -> np.ndarray:
    """int64 bin index of each non-negative magnitude over [0, rng] with `bins` bins.

    "floor": min(floor(m / rng * N), N - 1); "round": min(round(m / rng * N), N - 1)
    with ties away from zero (computed exactly: floor plus a comparison of the
    fraction with 1/2, never by adding 0.5 first).
    """
    if binning not in BINNINGS:
        raise QuantizationError(f"binning must be one of {BINNINGS}, got {binning!r}")
    m = np.asarray(magnitudes, dtype=np.float64)
    if rng <= 0:
        return np.zeros(m.shape, dtype=np.int64)
    return bin_indices_ref(m, rng, bins, ties_away=binning == "round")


def histogram(values: np.ndarray, rng: float, bins: int, *, binning: str = "floor",
              unsigned: bool = False) -> np.ndarray:
    """Counts of |values| (or max(values, 0) when `unsigned`) in `bins` bins over [0, rng].

    The counts of `bin_indices`, computed in one jitted pass (`kernels.histogram`,
    the same float64 operations): the observer bins every activation of every
    calibration batch, and the NumPy version's temporaries made it a sixth of
    a calibration run. A NaN raises `ValueError`.
    """
    if binning not in BINNINGS:
        raise QuantizationError(f"binning must be one of {BINNINGS}, got {binning!r}")
    return magnitude_histogram(values, rng, bins, unsigned=unsigned, ties_away=binning == "round")


class HistogramObserver(ReferenceInterpreter):
    """Reference interpreter (float64) accumulating a histogram per rescaling node.

    `hists[name]` holds the counts of node `name`; run the observer on as many
    batches as wanted, then read `hists` (or call `store` to write them to meta).
    """

    observes_only = True  # reads each value when produced, keeps none

    def __init__(self, graph: Graph, bins: int, *, binning: str = "floor", sign_aware: bool = True,
                 rectified: bool = False):
        super().__init__(np.float64)
        if binning not in BINNINGS:
            raise QuantizationError(f"binning must be one of {BINNINGS}, got {binning!r}")
        if bins < 1:
            raise QuantizationError(f"a histogram needs at least one bin, got {bins}")
        self.bins, self.binning = int(bins), binning
        self.specs: dict[str, tuple[float, bool]] = {}
        for node in graph.topo_order():
            if node.op not in RESCALING:
                continue
            if META_RANGE not in node.meta:
                raise QuantizationError(
                    f"node '{node.name}': no calibrated range; histograms need `calibrate` first"
                )
            unsigned = sign_aware and node.meta.get(META_SIGNED, True) is False
            # `rectified`: a node read only by ReLUs is histogrammed on max(x, 0), what survives
            unsigned = unsigned or (rectified and _feeds_only_relus(graph, node.name))
            self.specs[node.name] = (float(node.meta[META_RANGE]), unsigned)
        self.hists = {name: np.zeros(self.bins, dtype=np.int64) for name in self.specs}

    def run_node(self, node, operands):
        value = super().run_node(node, operands)
        spec = self.specs.get(node.name)
        if spec is not None:
            rng, unsigned = spec
            try:
                self.hists[node.name] += histogram(value, rng, self.bins, binning=self.binning,
                                                   unsigned=unsigned)
            except ValueError as exc:
                raise QuantizationError(f"node '{node.name}': {exc}") from None
        return value

    def store(self, graph: Graph) -> None:
        for name, hist in self.hists.items():
            graph.node(name).meta[META_HIST] = hist


def _feeds_only_relus(graph: Graph, name: str) -> bool:
    consumers = graph.consumers(name)
    return bool(consumers) and name not in graph.outputs and all(c.op is OpType.RELU for c in consumers)


def collect_histograms(graph: Graph, calibration, bins: int, *, binning: str = "floor",
                       sign_aware: bool = True, rectified: bool = False) -> dict[str, np.ndarray]:
    """Stream `calibration` (a `CalibrationSet`) through `graph` and store `meta["hist"]`.

    Returns {rescaling node name: int64 counts}. A one-shot iterator already
    read by `calibrate` makes `CalibrationSet.batches` raise `CalibrationError`.
    """
    observer = HistogramObserver(graph, bins, binning=binning, sign_aware=sign_aware,
                                 rectified=rectified)
    for batch in calibration.batches(graph):
        observer.run(graph, batch)
    observer.store(graph)
    return observer.hists


class RunningHistogram:
    """Counts over [0, R) with R a power of two above every magnitude added, doubled as
    needed (module doc): of |x| (`magnitude`) and/or of max(x, 0) (`positive`), each None
    unless asked for; `bins` a power of 2."""

    def __init__(self, bins: int, magnitude: bool = True, positive: bool = False):
        if bins < 1 or bins & (bins - 1):
            raise QuantizationError(f"a running histogram needs a power-of-two bin count, got {bins}")
        self.bins, self.rng = int(bins), 0.0
        self.magnitude = np.zeros(self.bins, dtype=np.int64) if magnitude else None
        self.positive = np.zeros(self.bins, dtype=np.int64) if positive else None

    def add(self, value: np.ndarray, low: float, high: float) -> None:
        """Bin `value`, whose min and max are `low` and `high` (finite)."""
        top = max(-low, high)
        if top >= self.rng and top > 0:
            self._grow(math.ldexp(1.0, math.frexp(top)[1]))  # 2^e > top (mantissa < 1)
        counts = None
        if self.magnitude is not None:
            counts = magnitude_histogram(value, self.rng, self.bins)
            self.magnitude += counts
        if self.positive is not None:
            if counts is None or low < 0:  # no negatives: max(x, 0) = |x|
                counts = magnitude_histogram(value, self.rng, self.bins, unsigned=True)
            self.positive += counts

    def _grow(self, rng: float) -> None:
        if self.rng > 0:  # zeros alone so far: all in bin 0, which every range keeps
            doublings = round(math.log2(rng / self.rng))
            for counts in (self.magnitude, self.positive):
                if counts is None:
                    continue
                merged = counts
                for _ in range(min(doublings, self.bins.bit_length())):
                    merged = merged.reshape(-1, 2).sum(axis=1) if merged.size > 1 else merged
                    merged = np.concatenate((merged, np.zeros(self.bins - merged.size, np.int64)))
                counts[:] = merged
        self.rng = rng


def running_histograms(graph: Graph, bins: int, *, signs: bool) -> dict[str, RunningHistogram]:
    """An empty `RunningHistogram` per rescaling node, binning what `optimize_clipping` will
    read: max(x, 0) for a node every reader of which clamps negatives (a Relu, a Clip from
    >= 0) when the sign pass runs (`signs`: it makes such a node unsigned unless a join
    forces it signed); |x| otherwise."""
    result = {}
    for node in graph.topo_order():
        if node.op not in RESCALING:
            continue
        readers = graph.consumers(node.name)
        clamped = bool(readers) and node.name not in graph.outputs and all(
            r.op in NON_NEGATIVE or (r.op is OpType.CLIP and r.attrs.get("min") is not None
                                     and float(r.attrs["min"]) >= 0.0)
            for r in readers)
        positive = clamped and signs
        result[node.name] = RunningHistogram(bins, magnitude=not positive, positive=positive)
    return result
