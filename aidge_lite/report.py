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

The measurements live in `aidge_lite.report_measure`, the markdown in
`aidge_lite.report_markdown`; every public name is importable from here.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .evaluate import DEFAULT_BATCH, accuracy, compare_engines, top1
from .ir import Graph
from .ir.node import META_RANGE
from .report_details import accumulator_table, onnx_keys, real_scales, weight_table
# Re-exported (imported from here before the split): report_zp takes _header / _pct.
from .report_markdown import (_header, _pct, markdown, rescale_text, sqnr_text,  # noqa: F401
                              worst_first, write_markdown, zeroed_text)
from .report_measure import (HIST_BINS, RESCALERS, ClipCounter, _bounds, _require_quantized,  # noqa: F401
                             count_clipped, float_counterparts, float_reference, layer_sqnr,
                             quantizer_factors, zeroed_weight_channels)

__all__ = ["quantization_report", "write_markdown", "write_json", "markdown", "ClipCounter",
           "count_clipped", "layer_sqnr", "float_reference", "float_counterparts",
           "quantizer_factors", "rescale_summary", "rescale_text", "spread", "SQNR_SAMPLES",
           "zeroed_weight_channels", "zeroed_text"]

SQNR_SAMPLES = 256  # default bound on the samples the SQNR and the histograms use


def spread(n: int, limit: int | None) -> np.ndarray:
    """`limit` indices spread evenly over range(n) (all of them when limit is None).

    Evenly spread rather than the first ones: the MNIST splits are sorted by class.
    """
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


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
