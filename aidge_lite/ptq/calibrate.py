"""calibrate: measure the range of every tensor on the calibration set.

Calibration is the reference interpreter with an observer in `run_node` (one
graph walk; the torch.fx ShapeProp pattern). It streams the calibration set
batch by batch and keeps only running statistics, never raw activations, so
its memory does not grow with the number of images. It runs in float64, as
the reference library does.

With `one_walk_histograms` and MSE / mean-abs clipping (not compat "aidge") the same walk bins
every rescaling node's output (`histograms.RunningHistogram`), so clipping
needs no second read of the data.

Ensures: every non-constant node has `meta["range"]` = max |x| and
`meta["min"]`/`meta["max"]` over the calibration set.
"""
from __future__ import annotations

import numpy as np

from ..errors import CalibrationError, QuantizationError
from ..interp.reference import ReferenceInterpreter
from ..ir import Graph, OpType
from ..ir.node import META_RANGE
from .config import PassReport, PTQConfig
from .histograms import META_RUNNING_HIST, histogram_bins, running_histograms


class RangeObserver(ReferenceInterpreter):
    """Reference interpreter that records min, max and max|x| of every tensor, and
    feeds the `hists` ({node name: `RunningHistogram`}) in the same walk."""

    observes_only = True  # reads each value when produced, keeps none

    def __init__(self, hists: dict | None = None):
        super().__init__(np.float64)
        self.hists = hists or {}
        self.bounds: dict[str, tuple[float, float]] = {}  # this batch's (min, max) per tensor

    def run(self, graph, feeds, **kwargs):
        self.bounds = {}
        return super().run(graph, feeds, **kwargs)

    def run_node(self, node, operands):
        value = super().run_node(node, operands)
        if node.op is not OpType.CONSTANT:
            hist = self.hists.get(node.name)
            known = None if hist is not None or not node.inputs else self.bounds.get(node.inputs[0])
            self.bounds[node.name] = _observe(node, value, hist, _monotone_bounds(node, known))
        return value

    def prepare_input(self, node, value):
        value = super().prepare_input(node, value)
        self.bounds[node.name] = _observe(node, value, self.hists.get(node.name))
        return value


#: ops whose output holds exactly their first operand's values (another shape)
_SAME_VALUES = frozenset({OpType.FLATTEN, OpType.RESHAPE, OpType.TRANSPOSE, OpType.SQUEEZE,
                          OpType.UNSQUEEZE, OpType.IDENTITY})


def _monotone_bounds(node, known):
    """(min, max) of `node`'s output from its operand's finite (min, max) `known`, when the op
    is element-wise monotone non-decreasing, so the extremes map to the extremes (exactly:
    the same float operations on the same values); None otherwise (scan the output)."""
    if known is None or not (np.isfinite(known[0]) and np.isfinite(known[1])):
        return None
    low, high = known
    if node.op in _SAME_VALUES:
        return low, high
    if node.op is OpType.RELU:
        return max(low, 0.0), max(high, 0.0)
    if node.op is OpType.CLIP:
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
        lo, hi = (None if lo is None else float(lo)), (None if hi is None else float(hi))
        if lo is not None and hi is not None and lo > hi:
            return None
        return _clamp(low, lo, hi), _clamp(high, lo, hi)
    return None


def _clamp(value: float, lo: float | None, hi: float | None) -> float:
    """What the reference's Clip makes of `value` (np.maximum with lo, then np.minimum with hi)."""
    if lo is not None:
        value = max(value, lo)
    if hi is not None:
        value = min(value, hi)
    return value


def _observe(node, value, hist=None, bounds=None):
    """Fold `value` into `node`'s running min / max / range (and `hist`); returns this
    batch's (min, max), taken from `bounds` when the caller knows them exactly."""
    if value.size == 0:
        return None
    low, high = bounds if bounds is not None else (float(value.min()), float(value.max()))
    meta = node.meta
    meta["min"] = min(meta.get("min", low), low)
    meta["max"] = max(meta.get("max", high), high)
    meta[META_RANGE] = max(abs(meta["min"]), abs(meta["max"]))
    if hist is not None:
        if not (np.isfinite(low) and np.isfinite(high)):
            raise QuantizationError(f"node '{node.name}': NaN or Inf values, no histogram to clip from")
        hist.add(value, low, high)
    return low, high


def one_walk_histograms(cfg: PTQConfig) -> bool:
    """Whether `calibrate` collects the clipping histograms: asked for
    (`cfg.one_walk_histograms`), MSE / mean-abs (ours). KL and compat "aidge" bin over the
    final range in a second walk: KL's divergence depends on the bin grid (on a finer one
    it clipped lenet's conv1 to 3 % of its range)."""
    return cfg.one_walk_histograms and cfg.clipping in ("mse", "aa") and cfg.compat != "aidge"


def calibrate(graph: Graph, cfg: PTQConfig) -> PassReport:
    if cfg.calibration is None:
        raise CalibrationError("calibrate needs calibration data")
    for node in graph.topo_order():
        for key in ("min", "max", META_RANGE):
            node.meta.pop(key, None)
        node.meta.pop(META_RUNNING_HIST, None)
    hists = {}
    if one_walk_histograms(cfg):
        # 2N bins over [0, R), R < 2 range: at least the N bins over the range a second walk had
        bins = 2 * histogram_bins(max([cfg.nb_bits, *cfg.node_bits.values()]))
        hists = running_histograms(graph, bins, signs=cfg.optimize_signs)
    observer = RangeObserver(hists)
    samples = 0
    for batch in cfg.calibration.batches(graph):
        observer.run(graph, batch)
        samples += batch.shape[0]
    graph.meta["calibration_samples"] = samples
    for name, hist in hists.items():
        # read (and removed) by optimize_clipping
        graph.node(name).meta[META_RUNNING_HIST] = {"range": hist.rng, "magnitude": hist.magnitude,
                                                    "positive": hist.positive}
    zero = [n.name for n in graph.topo_order() if n.meta.get(META_RANGE) == 0.0]
    return PassReport("calibrate", True, {"samples": samples, "constant_zero": zero})
