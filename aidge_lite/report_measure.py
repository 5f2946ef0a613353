"""Measurements behind the quantization report: clip counts and per-layer SQNR.

Split out of `aidge_lite.report` (which re-exports every public name here): the
calibration-set passes (`count_clipped`, `layer_sqnr`) and the float network
they compare with (`float_reference`, `float_counterparts`, `quantizer_factors`).
The module docstring of `aidge_lite.report` defines the SQNR.
"""
from __future__ import annotations

import math

import numpy as np

from aidge_lite import kernels

from .errors import InputError
from .evaluate import DEFAULT_BATCH, as_float_input, batches
from .interp import run
from .interp.quant_common import quantizer_args
from .interp.reference import ReferenceInterpreter
from .ir import AFFINE, Graph, OpType
from .ir.node import META_SIGNED
from .report_details import AccumulatorObserver

_INT64 = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max], dtype=np.int64)
RESCALERS = (OpType.QUANTIZER, OpType.SCALING)
HIST_BINS = 64


# ------------------------------------------------------------------ clipping
class ClipCounter(ReferenceInterpreter):
    """Reference (fake-quant) interpreter counting the values each quantizer clips.

    `counts[name] = [below lo, above hi, elements seen]`, summed over runs.
    """

    def __init__(self, target=None):
        super().__init__(None, target)
        self.counts: dict[str, list[int]] = {}
        self.accumulators = AccumulatorObserver()  # min / max per Conv/Gemm/Add accumulator

    def begin(self, graph):
        super().begin(graph)
        if self.integer:  # observe each accumulator before the target's width applies
            self.accumulators.wrap(self.policy)

    def _add(self, name, below, above, size):
        entry = self.counts.setdefault(name, [0, 0, 0])
        entry[0] += int(below)
        entry[1] += int(above)
        entry[2] += int(size)

    def count_clipped(self, node, view, out):
        lo, hi = int(node.attrs["lo"]), int(node.attrs["hi"])
        _, params, mode, _ = quantizer_args(node, view)
        if node.attrs.get("mode", "float") == "float":
            scaled = np.asarray(view, np.float64) * params[0].reshape(1, -1, 1)
            unclipped = kernels.round_float_ref(scaled, mode)
        else:  # the same integer rescale with bounds that never bind
            unclipped = np.empty(view.shape, np.int64)
            kernels.requant_int_ref(np.asarray(view, np.int64), params[0], params[1], mode, _INT64, unclipped)
        self._add(node.name, np.count_nonzero(unclipped < lo), np.count_nonzero(unclipped > hi), view.size)

    def count_gemmlowp(self, node, x):
        """The clip count of a gemmlowp quantizer (its impl bypasses `count_clipped`): the
        same rescale (`requant_gemmlowp_ref`) with int32 bounds, which never bind."""
        attrs = node.attrs
        multiplier = np.atleast_1d(np.asarray(attrs["multiplier"], np.int64))
        shift = np.atleast_1d(np.asarray(attrs["shift"], np.int64))
        acc = np.asarray(x).astype(np.int64)
        if multiplier.size > 1:
            acc = np.moveaxis(acc, attrs.get("axis", -1), -1)
        acc = np.ascontiguousarray(acc).reshape(-1, multiplier.size)
        params = np.array([attrs.get("input_zero_point", 0), attrs.get("pre_shift", 0),
                           attrs.get("zero_point", 0), -(1 << 31), (1 << 31) - 1], np.int64)
        unclipped = kernels.requant_gemmlowp_ref(acc, multiplier, shift, params,
                                                 np.empty(acc.shape, np.int64))
        lo, hi = int(attrs["lo"]), int(attrs["hi"])
        self._add(node.name, np.count_nonzero(unclipped < lo), np.count_nonzero(unclipped > hi), acc.size)

    def run_node(self, node, operands):
        value = super().run_node(node, operands)
        if node.op is OpType.QUANTIZER and node.attrs.get("mode") == "gemmlowp":
            self.count_gemmlowp(node, operands[0])
        if node.op is OpType.SCALING and self.graph.meta.get("quantized"):
            lo, hi = _nominal_bounds(self.graph, node)
            self._add(node.name, np.count_nonzero(value < lo), np.count_nonzero(value > hi), value.size)
        return value


def _nominal_bounds(graph, node) -> tuple[int, int]:
    """The n-bit range a SCALING node of a no_quant graph stands for."""
    from .ptq.quantize import clip_bounds

    return clip_bounds(int(graph.meta.get("nb_bits", 8)), bool(node.meta.get(META_SIGNED, True)))


def _bounds(qgraph, node) -> tuple[int | None, int | None, bool | None]:
    """(lo, hi, signed) of a rescaling node: its clip, or the n-bit range it stands for."""
    if node.op is OpType.QUANTIZER:
        return node.attrs.get("lo"), node.attrs.get("hi"), node.attrs.get("signed")
    lo, hi = _nominal_bounds(qgraph, node) if qgraph.meta.get("quantized") else (None, None)
    return lo, hi, node.meta.get(META_SIGNED)


def count_clipped(qgraph: Graph, x, *, batch_size: int = DEFAULT_BATCH,
                  accumulators: dict | None = None) -> dict[str, list[int]]:
    """Per QUANTIZER/SCALING node: [below lo, above hi, elements] on the samples `x`.

    `accumulators`: a dict filled with [min, max] of each accumulating node (integer graphs).
    """
    counter = ClipCounter()
    x = np.asarray(x)
    for start, stop in batches(len(x), batch_size):
        counter.run(qgraph, as_float_input(x[start:stop]))
    if accumulators is not None:
        accumulators.update(counter.accumulators.ranges)
    return counter.counts


# ---------------------------------------------------------------------- SQNR
def float_reference(float_graph: Graph, qgraph: Graph) -> Graph:
    """The float network whose tensors the quantized graph's nodes stand for.

    A copy of `float_graph` through `prepare` and, when `qgraph` was equalised,
    `cross_layer_equalization`, with the options `qgraph` was quantized with.
    """
    from .ptq import run_pipeline
    from .ptq.config import PTQConfig
    from .ptq.cross_layer_equalization import cross_layer_equalization
    from .ptq.prepare import prepare

    opts = qgraph.meta.get("options", {})
    cfg = PTQConfig(nb_bits=int(qgraph.meta.get("nb_bits", opts.get("nb_bits", 8))),
                    cle=bool(opts.get("cle")), per_channel=bool(opts.get("per_channel")),
                    compat=opts.get("compat"), exclude=tuple(opts.get("exclude") or ()),
                    node_bits=dict(opts.get("node_bits") or {}),
                    fallback=bool(opts.get("fallback")))
    reference = float_graph.copy()
    run_pipeline(reference, cfg, passes=(prepare, cross_layer_equalization))
    return reference


def zeroed_weight_channels(qgraph: Graph, reference: Graph) -> list[dict]:
    """Affine nodes of `qgraph` whose quantization wiped whole output channels out.

    A channel counts when its integer weights are all zero and its float
    weights in `reference` (see `float_reference`) are not: per-tensor weights
    whose range one outlier channel dominates, e.g. a dead channel whose
    BatchNorm variance ~0 blew its folded weights up. `cle=True` or
    `per_channel=True` is the cure. One ``{"node", "channels", "zeroed"}`` per
    such node, in graph order.
    """
    _require_quantized(qgraph)
    found = []
    for node in qgraph.topo_order():
        if node.op not in AFFINE or node.name not in reference:
            continue
        quantized = qgraph.constant(node.inputs[1])
        original = reference.constant(reference.node(node.name).inputs[1])
        if quantized.shape != original.shape:
            continue
        wiped = ~quantized.reshape(len(quantized), -1).any(axis=1)
        wiped &= original.reshape(len(original), -1).any(axis=1)
        if wiped.any():
            found.append({"node": node.name, "channels": len(quantized), "zeroed": int(wiped.sum())})
    return found


def float_counterparts(qgraph: Graph, reference: Graph) -> dict[str, str | None]:
    """For each rescaling node of `qgraph`, the tensor of `reference` it stands for (or None).

    A node whose own name exists in the float network is the renamed output
    quantizer; otherwise the tensor is the node's input, looked up through any
    chain of rescaling nodes (a quantizer of a quantizer represents the same tensor).
    """
    found = {}
    for node in qgraph.topo_order():
        if node.op not in RESCALERS:
            continue
        current = node
        while current.name not in reference and current.op in RESCALERS and current.inputs:
            current = qgraph.node(current.inputs[0])
        found[node.name] = current.name if current.name in reference else None
    return found


def quantizer_factors(qgraph: Graph) -> dict[str, float]:
    """F per rescaling node (its output = F * the float tensor), as for the graph outputs."""
    from .ptq.quantize import output_scales

    probe = qgraph.copy()
    probe.outputs = [n.name for n in probe.topo_order() if n.op in RESCALERS]
    return output_scales(probe)


class _LayerError:
    """Running SQNR sums of one quantizer and the float values it read (for its histogram)."""

    def __init__(self, clamps_at_zero: bool):
        self.clamps_at_zero = clamps_at_zero  # an unsigned quantizer doing a ReLU's work
        self.signal = self.noise = 0.0
        self.values: list[np.ndarray] = []

    def add(self, tensor: np.ndarray, dequantized: np.ndarray) -> None:
        represented = np.maximum(tensor, 0.0) if self.clamps_at_zero else tensor
        self.signal += float(np.sum(np.square(represented)))
        self.noise += float(np.sum(np.square(represented - dequantized)))
        self.values.append(np.asarray(tensor, np.float32).ravel())

    def sqnr(self) -> tuple[float | None, str | None]:
        if self.noise == 0.0:
            return None, "exact"
        if self.signal == 0.0:
            return None, "float tensor is all zeros"
        return 10.0 * math.log10(self.signal / self.noise), None

    def histogram(self, clip_low: float, clip_high: float) -> tuple[float, dict]:
        """(max |x|, histogram spanning the values and both clip thresholds, with min and max)."""
        values = np.concatenate(self.values)
        smallest, largest = float(values.min()), float(values.max())
        low, high = min(smallest, clip_low), max(largest, clip_high)
        pad = 0.03 * (high - low) or 1.0  # keeps lines at the span's ends visible
        counts, edges = np.histogram(values, bins=HIST_BINS, range=(low - pad, high + pad))
        return max(-smallest, largest), {"edges": edges, "counts": counts, "min": smallest, "max": largest}


def layer_sqnr(float_graph: Graph, qgraph: Graph, x, *, batch_size: int = DEFAULT_BATCH,
               reference: Graph | None = None) -> dict[str, dict]:
    """Per rescaling node of `qgraph`: SQNR of the fake-quant value vs the float tensor on `x`.

    Returns {name: {"sqnr_db", "sqnr_note", "float_range", "float_clip",
    "float_clip_low", "histogram"}} (see the module docstring). Keeps the float
    tensors of the quantizers in memory (float32): keep `x` small (a few hundred samples).
    `reference`: `float_reference(float_graph, qgraph)` when the caller has it already.
    """
    _require_quantized(qgraph)
    x = np.asarray(x)
    if len(x) == 0:
        raise InputError("no samples to measure the SQNR on")
    if reference is None:
        reference = float_reference(float_graph, qgraph)
    sources = float_counterparts(qgraph, reference)
    factors = quantizer_factors(qgraph)
    bounds = {name: _bounds(qgraph, qgraph.node(name)) for name in sources}
    errors = {name: _LayerError(qgraph.node(name).op is OpType.QUANTIZER and bounds[name][0] == 0)
              for name, source in sources.items() if source is not None}
    notes = {name: f"no float tensor for it in '{float_graph.name}'"
             for name, source in sources.items() if source is None}
    for start, stop in batches(len(x), batch_size):
        xb = as_float_input(x[start:stop])
        floats = run(reference, xb, intermediates=True, dtype=np.float64)
        fakes = run(qgraph, xb, intermediates=True)
        for name, error in list(errors.items()):
            tensor, fake = floats[sources[name]], fakes[name]
            if np.shape(tensor) != np.shape(fake):
                notes[name] = f"float tensor '{sources[name]}' has shape {np.shape(tensor)}, not {np.shape(fake)}"
                del errors[name]
                continue
            error.add(np.asarray(tensor, np.float64), np.asarray(fake, np.float64) / factors[name])
    return {name: _layer_result(bounds[name], factors[name], errors.get(name), notes.get(name))
            for name in sources}


def _require_quantized(qgraph: Graph) -> None:
    if not qgraph.meta.get("quantized"):
        raise InputError(f"graph '{qgraph.name}' is not quantized: pass the output of quantize_network")


def _layer_result(bounds, factor, error: _LayerError | None, note: str | None) -> dict:
    lo, hi, _ = bounds
    result = {"sqnr_db": None, "sqnr_note": note, "float_range": None, "float_clip": hi / factor,
              "float_clip_low": lo / factor, "histogram": None}
    if error is not None:
        result["sqnr_db"], result["sqnr_note"] = error.sqnr()
        result["float_range"], result["histogram"] = error.histogram(lo / factor, hi / factor)
    return result

