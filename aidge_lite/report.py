"""Quantization report: accuracies, bit-exactness, per-layer clipping and SQNR.

`quantization_report(float_graph, qgraph, calib_x, test_x, test_y)` returns a
JSON-able dict:

- ``model``, ``options`` (the `quantize_network` options), ``target``, ``nb_bits``;
- ``samples``: calibration / test sample counts;
- ``accuracy``: ``float``, ``fake_quant`` (reference engine) and ``integer``
  (integer engine; None unless ``qgraph.meta["integer"]``); all None when
  ``test_y`` is None (unlabelled data);
- ``bit_exact``: elements compared and mismatching between the two engines on
  the test set (None for a ``no_quant`` graph);
- ``layers``: one entry per QUANTIZER / SCALING node in graph order: role,
  scale (scalar, or min/max over channels; multiplier and shift, exact
  integers, for integer quantizers: mode "int" applies multiplier / 2^shift,
  mode "gemmlowp" TFLite's Q31 multiplier * 2^(shift - 31), shift positive =
  left, as TFLite stores them), calibrated range (``meta["range"]``) and clip
  (``meta["clip"]``) in the PTQ's normalised units, signed, clip bounds lo/hi,
  how many values the quantizer clipped on the calibration set (below lo and
  above hi), joins ("join"/"residual") included. For a ``no_quant`` graph
  (SCALING nodes, nothing is clipped) the count is of values that *would*
  leave the n-bit range. Plus the SQNR fields below;
- ``sqnr``: how the SQNR was measured (samples); ``histograms``: per layer,
  a histogram of the float tensor the quantizer reads (for `aidge_lite.plots`);
- ``zeroed_channels``: affine nodes with output channels whose weights
  quantized to all zeros although their float weights are not
  (`zeroed_weight_channels`); empty when none did.
- per layer also (`aidge_lite.report_details`): ``onnx_node`` / ``onnx_tensor``
  (the ONNX node the quantizer follows, bias Adds / BatchNorms folded into it
  listed with it, and the ONNX tensor its value stands for), ``real_scale`` and
  ``zero_point`` (ONNX / TFLite's real = (q - zero_point) * scale, 1 / F and 0),
  and ``zeroed_unsigned``: values below 0 an unsigned quantizer set to 0 (the
  ReLU it does; not counted in ``clipped``);
- ``weights``: per Conv/Gemm, the weight SQNR (float weights vs q / weight_scale)
  and its worst channel, the weights' real scale; ``accumulators``: per
  Conv/Gemm/Add of an integer graph, the accumulator's min / max on the
  calibration set and the signed bits it needs, the worst case over the input
  range and its bits, and the target's ``acc_bits``.

SQNR (`layer_sqnr`). A quantizer's output q stands for a float tensor t of the
float network with q ~ F_t * t (F_t from `ptq.quantize.output_scales`). The
float network is the float graph after `prepare` (and CLE when the graph was
equalised): both keep the network's function but fuse bias Adds / BatchNorms
into the affine node's name and rescale channels, so that is the graph whose
tensor names and values the quantized graph's nodes share. The quantizer reads
tensor `inputs[0]` (through other quantizers); the output quantizer, renamed
by `finalize`, carries the output's own name. An unsigned quantizer (lo = 0)
does a following ReLU's work, so it is compared with max(t, 0). Then
SQNR = 10 log10(sum t^2 / sum (t - q / F_t)^2) in dB, over at most
``sqnr_samples`` calibration samples spread evenly over the set; it includes
the error accumulated upstream. None with ``sqnr_note`` "exact" when the error is zero,
or the reason when the tensor has no float counterpart. ``float_range`` is
max |t| on those samples and ``float_clip`` = hi / F_t (``float_clip_low`` =
lo / F_t), the quantizer's real clipping threshold in float units (after any
alignment at joins).

`write_markdown(report, path)` writes a short human-readable summary, layers
worst SQNR first.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from aidge_lite import kernels

from .errors import InputError
from .evaluate import DEFAULT_BATCH, accuracy, as_float_input, batches, compare_engines, top1
from .interp import run
from .interp.quant_common import quantizer_args
from .interp.reference import ReferenceInterpreter
from .ir import AFFINE, Graph, OpType
from .ir.node import META_RANGE, META_SIGNED
from .report_details import _num  # one cell formatter for both tables
from .report_details import (AccumulatorObserver, accumulator_table, details_markdown, onnx_keys,
                             real_scales, weight_table)

__all__ = ["quantization_report", "write_markdown", "write_json", "markdown", "ClipCounter",
           "count_clipped", "layer_sqnr", "float_reference", "float_counterparts",
           "quantizer_factors", "rescale_summary", "rescale_text", "spread", "SQNR_SAMPLES",
           "zeroed_weight_channels", "zeroed_text"]

_INT64 = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max], dtype=np.int64)
RESCALERS = (OpType.QUANTIZER, OpType.SCALING)
SQNR_SAMPLES = 256  # default bound on the samples the SQNR and the histograms use
HIST_BINS = 64


def spread(n: int, limit: int | None) -> np.ndarray:
    """`limit` indices spread evenly over range(n) (all of them when limit is None).

    Evenly spread rather than the first ones: the MNIST splits are sorted by class.
    """
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


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


# -------------------------------------------------------------------- report
def _plain(value):
    """A JSON-able copy: NumPy scalars/arrays to Python, tuples to lists, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _spread_of(values, key: str) -> dict:
    """{key: v} for one value, else {key: None, key_min, key_max} over channels."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 1 or np.all(array == array[0]):
        return {key: float(array[0])}
    return {key: None, f"{key}_min": float(array.min()), f"{key}_max": float(array.max())}


def _int_spread_of(values, key: str) -> dict:
    """`_spread_of` for integer parameters: exact Python ints, never floats."""
    ints = [int(v) for v in np.ravel(np.asarray(values, dtype=np.int64))]
    if len(set(ints)) == 1:
        return {key: ints[0]}
    return {key: None, f"{key}_min": min(ints), f"{key}_max": max(ints)}


def rescale_summary(attrs: dict) -> dict:
    """Scale of a rescaling node, JSON-able; for an integer quantizer also its multiplier
    and shift as exact ints and `rescale` = its mode: "int" (multiplier / 2^shift) or
    "gemmlowp" (TFLite's Q31 multiplier * 2^(shift - 31), shift positive = left)."""
    scale = np.asarray(attrs.get("scale", 1.0), dtype=np.float64)
    summary = {**_spread_of(scale, "scale"), "channels": int(scale.size)}
    if attrs.get("mode") in ("int", "gemmlowp"):
        summary["channels"] = max(summary["channels"], int(np.size(attrs["multiplier"])))
        summary["rescale"] = attrs["mode"]
        summary.update(_int_spread_of(attrs["multiplier"], "multiplier"))
        summary.update(_int_spread_of(attrs["shift"], "shift"))
    return summary


def layer_table(qgraph: Graph, counts: dict[str, list[int]], sqnr: dict[str, dict] | None = None,
                extras: dict[str, dict] | None = None) -> list[dict]:
    """One entry per rescaling node; `extras` (name -> fields) are merged in (ONNX keys, real scales).

    An unsigned quantizer (lo = 0) does the ReLU that reads it (compute_signs): the values it
    sets from below 0 to 0 are counted as ``zeroed_unsigned``, not as clipped.
    """
    sqnr, extras = sqnr or {}, extras or {}
    layers = []
    for node in qgraph.topo_order():
        if node.op not in RESCALERS:
            continue
        attrs, meta = node.attrs, node.meta
        below, above, size = counts.get(node.name, [0, 0, 0])
        lo, hi, signed = _bounds(qgraph, node)
        zeroed = below if signed is False and lo == 0 else 0
        below -= zeroed
        measured = {k: v for k, v in sqnr.get(node.name, {}).items() if k != "histogram"}
        entry = {
            **extras.get(node.name, {}),
            "name": node.name,
            "op": node.op.value,
            "role": attrs.get("role"),
            "mode": attrs.get("mode"),
            **rescale_summary(attrs),
            "range": meta.get(META_RANGE),
            "clip": meta.get("clip"),
            "signed": signed,
            "dtype": attrs.get("dtype"),
            "lo": lo,
            "hi": hi,
            "clipped": below + above,
            "clipped_low": below,
            "clipped_high": above,
            "zeroed_unsigned": zeroed,
            "elements": size,
            "clipped_fraction": (below + above) / size if size else 0.0,
            **measured,
        }
        layers.append(_plain(entry))
    return layers


def _accuracies(float_graph, qgraph, test_x, test_y, float_accuracy, kw) -> tuple[dict, dict | None]:
    """({"float", "fake_quant", "integer"}, bit-exact summary) on the test set."""
    labelled = test_y is not None
    if float_accuracy is None and labelled:
        float_accuracy = accuracy(float_graph, test_x, test_y, **kw)
    if not qgraph.meta.get("integer"):
        fake_quant = accuracy(qgraph, test_x, test_y, **kw) if labelled else None
        return {"float": float_accuracy, "fake_quant": fake_quant, "integer": None}, None
    cmp = compare_engines(qgraph, test_x, **kw)
    bit_exact = {"elements": cmp["elements"], "mismatches": cmp["mismatches"],
                 "mismatching_samples": cmp["mismatching_samples"],
                 "max_abs_diff": cmp["max_abs_diff"], "exact": cmp["mismatches"] == 0}
    scores = {"fake_quant": cmp["reference"], "integer": cmp["integer"]}
    acc = {k: top1(v, test_y) if labelled else None for k, v in scores.items()}
    return {"float": float_accuracy, **acc}, bit_exact


def quantization_report(float_graph: Graph, qgraph: Graph, calib_x, test_x, test_y, *,
                        batch_size: int = DEFAULT_BATCH, progress: bool = False,
                        float_accuracy: float | None = None,
                        sqnr_samples: int | None = SQNR_SAMPLES) -> dict:
    """Everything worth knowing about one quantization run (see the module docstring).

    `float_accuracy` may be passed when already known, to skip the float run.
    `test_y` None (unlabelled data) leaves the accuracies None. The SQNR uses at
    most `sqnr_samples` calibration samples (0 skips it; None uses them all).
    """
    _require_quantized(qgraph)
    test_x, calib_x = np.asarray(test_x), np.asarray(calib_x)
    kw = dict(batch_size=batch_size, progress=progress)
    acc, bit_exact = _accuracies(float_graph, qgraph, test_x, test_y, float_accuracy, kw)
    observed: dict = {}
    counts = count_clipped(qgraph, calib_x, batch_size=batch_size, accumulators=observed)
    sqnr_x = calib_x[spread(len(calib_x), sqnr_samples)] if sqnr_samples != 0 else calib_x[:0]
    reference = float_reference(float_graph, qgraph)
    per_layer = layer_sqnr(float_graph, qgraph, sqnr_x, batch_size=batch_size,
                           reference=reference) if len(sqnr_x) else {}
    keys = onnx_keys(qgraph, reference, float_counterparts(qgraph, reference))
    scales = real_scales(quantizer_factors(qgraph))
    extras = {name: {**keys.get(name, {}), **scales.get(name, {})} for name in set(keys) | set(scales)}
    report = {
        "model": float_graph.name,
        "options": qgraph.meta.get("options", {}),
        "target": qgraph.meta.get("target"),
        "nb_bits": qgraph.meta.get("nb_bits"),
        "node_bits": qgraph.meta.get("node_bits", {}),
        "float_nodes": qgraph.meta.get("float_nodes", []),  # exclude / fallback: kept in float
        "integer": bool(qgraph.meta.get("integer")),
        "samples": {"calibration": int(len(calib_x)), "test": int(len(test_x))},
        "accuracy": acc,
        "bit_exact": bit_exact,
        "sqnr": {"samples": int(len(sqnr_x)), "source": "calibration"},
        "layers": layer_table(qgraph, counts, per_layer, extras),
        "histograms": {name: r["histogram"] for name, r in per_layer.items() if r["histogram"]},
        "zeroed_channels": zeroed_weight_channels(qgraph, reference),
        "weights": weight_table(qgraph, reference),
        "accumulators": accumulator_table(qgraph, observed),
    }
    return _plain(report)


def write_json(report: dict, path) -> Path:
    from .atomic import write_text

    return write_text(path, json.dumps(report, indent=2) + "\n")


# ------------------------------------------------------------------ markdown
def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"




def _spread_text(summary: dict, key: str) -> str:
    if summary.get(key) is not None:
        return _num(summary[key])
    return f"{_num(summary.get(f'{key}_min'))}..{_num(summary.get(f'{key}_max'))}"


def rescale_text(summary: dict) -> str:
    """'0.0482', '0.01..0.02 (8 ch)', plus ' = m / 2^s' for "int" quantizers or
    ' = Q31 M, shift s' for gemmlowp ones (TFLite's convention: M * 2^(s - 31)); the
    integers exactly."""
    text = _spread_text(summary, "scale")
    if summary.get("scale") is None:
        text += f" ({summary.get('channels')} ch)"
    if "shift" in summary or "shift_min" in summary:
        multiplier, shift = _spread_text(summary, "multiplier"), _spread_text(summary, "shift")
        if summary.get("rescale") == "gemmlowp":
            text += f" = Q31 {multiplier}, shift {shift}"
        else:
            text += f" = {multiplier} / 2^{shift}"
    return text


def sqnr_text(layer: dict) -> str:
    if layer.get("sqnr_db") is not None:
        return f"{layer['sqnr_db']:.1f}"
    return layer.get("sqnr_note") or "n/a"


def worst_first(layers: list[dict]) -> list[dict]:
    """Layers by increasing SQNR; those without a number (exact, no counterpart) last."""
    return sorted(layers, key=lambda l: (l.get("sqnr_db") is None, l.get("sqnr_db") or 0.0))


def _header(report: dict) -> list[str]:
    acc = report["accuracy"]
    lines = [f"# Quantization report: {report['model']}", ""]
    opts = report.get("options") or {}
    if opts:
        lines.append("Options: " + ", ".join(f"`{k}={v}`" for k, v in opts.items()))
    if report.get("target"):
        lines.append("Target: " + ", ".join(f"`{k}={v}`" for k, v in report["target"].items()))
    samples = report.get("samples", {})
    lines += [f"Samples: {samples.get('calibration')} calibration, {samples.get('test')} test.", "",
              "| float | fake-quant | integer | bit-exact (integer vs fake-quant) |",
              "|---|---|---|---|"]
    exact = report.get("bit_exact")
    exact_text = "n/a (no_quant)" if exact is None else (
        f"{'yes' if exact['exact'] else 'NO'}: {exact['mismatches']} / {exact['elements']} "
        "elements differ")
    lines += [f"| {_pct(acc['float'])} | {_pct(acc['fake_quant'])} | {_pct(acc['integer'])} "
              f"| {exact_text} |", ""]
    if report.get("float_nodes"):
        lines += ["Kept in float (float64 in both engines, between a Dequantize and a quantizer): "
                  + ", ".join(f"`{name}`" for name in report["float_nodes"]), ""]
    warnings = [f"**Warning**: {text}" for text in zeroed_text(report)]
    return lines + (warnings + [""] if warnings else [])


def zeroed_text(report: dict) -> list[str]:
    """One line per affine node whose quantization zeroed whole output channels."""
    opts = report.get("options") or {}
    untried = [f"{k}=True" for k in ("cle", "per_channel") if not opts.get(k)]
    why = ("one channel's range dominates the per-tensor scale; try " + " or ".join(untried)) if untried \
        else "their float weights are near zero next to the layer's largest: a dead channel"
    return [f"`{z['node']}`: {z['zeroed']} of {z['channels']} output channels have all-zero "
            f"quantized weights ({why})" for z in report.get("zeroed_channels") or ()]


def _layer_rows(layers: list[dict]) -> list[str]:
    rows = ["| ONNX node | quantizer | role | range | clip | real scale (zp 0) | scale / shift | signed "
            "| lo..hi | SQNR (dB) | clipped below lo / above hi | clipped % |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for l in layers:
        rows.append(
            f"| {_num(l.get('onnx_node'))} | `{l['name']}` | {l['role']} | {_num(l.get('float_range'))} "
            f"| {_num(l.get('float_clip'))} | {_num(l.get('real_scale'))} "
            f"| {rescale_text(l)} | {_num(l['signed'])} | {_num(l['lo'])}..{_num(l['hi'])} | {sqnr_text(l)} "
            f"| {l['clipped_low']} / {l['clipped_high']} | {100 * l['clipped_fraction']:.3f}% |")
    return rows


def markdown(report: dict, *, max_layers: int | None = None, images: dict[str, str] | None = None) -> str:
    """The report as markdown; `images` maps a caption to a PNG path (relative to the .md)."""
    lines = _header(report)
    layers = worst_first(report["layers"])[:max_layers]
    n = (report.get("sqnr") or {}).get("samples", 0)
    lines += ["## Layers (worst SQNR first)", "",
              f"SQNR: the float tensor a quantizer stands for vs its fake-quant value dequantized "
              f"(q / F), accumulated error included, on {n} calibration samples. range: max |x| of "
              "that float tensor; clip: the largest value the quantizer represents (hi / F); both in "
              "float units. real scale: ONNX / TFLite's scale, real = (q - 0) * scale, i.e. 1 / F. "
              "clipped: values clipped on the whole calibration set; an unsigned quantizer's zeros "
              "(values below 0, the ReLU it does) are not clipping and not counted "
              "(`zeroed_unsigned` in report.json).", ""]
    lines += _layer_rows(layers)
    lines += details_markdown(report)
    for caption, path in (images or {}).items():
        lines += ["", f"![{caption}]({path})"]
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path, **kw) -> Path:
    from .atomic import write_text

    return write_text(path, markdown(report, **kw))
