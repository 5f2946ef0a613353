"""Quantization report: accuracies, bit-exactness and per-layer clipping.

`quantization_report(float_graph, qgraph, calib_x, test_x, test_y)` returns a
JSON-able dict:

- ``model``, ``options`` (the `quantize_network` options), ``target``, ``nb_bits``;
- ``samples``: calibration / test sample counts;
- ``accuracy``: ``float``, ``fake_quant`` (reference engine) and ``integer``
  (integer engine; None unless ``qgraph.meta["integer"]``);
- ``bit_exact``: elements compared and mismatching between the two engines on
  the test set (None for a ``no_quant`` graph);
- ``layers``: one entry per QUANTIZER / SCALING node in graph order: role,
  scale (scalar, or min/max over channels), calibrated range
  (``meta["range"]``), clip (``meta["clip"]``), signed, clip bounds lo/hi, and
  how many values the quantizer clipped on the calibration set (below lo and
  above hi), joins ("join"/"residual") included. For a ``no_quant`` graph
  (SCALING nodes, nothing is clipped) the count is of values that *would*
  leave the n-bit range.

`write_markdown(report, path)` writes a short human-readable summary.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

import kernels

from .errors import InputError
from .evaluate import DEFAULT_BATCH, accuracy, as_float_input, batches, compare_engines, top1
from .interp.quant_common import quantizer_args
from .interp.reference import ReferenceInterpreter
from .ir import Graph, OpType
from .ir.node import META_RANGE, META_SIGNED

__all__ = ["quantization_report", "write_markdown", "write_json", "ClipCounter", "count_clipped"]

_INT64 = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max], dtype=np.int64)


class ClipCounter(ReferenceInterpreter):
    """Reference (fake-quant) interpreter counting the values each quantizer clips.

    `counts[name] = [below lo, above hi, elements seen]`, summed over runs.
    """

    def __init__(self, target=None):
        super().__init__(None, target)
        self.counts: dict[str, list[int]] = {}

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

    def run_node(self, node, operands):
        value = super().run_node(node, operands)
        if node.op is OpType.SCALING and self.graph.meta.get("quantized"):
            lo, hi = _nominal_bounds(self.graph, node)
            self._add(node.name, np.count_nonzero(value < lo), np.count_nonzero(value > hi), value.size)
        return value


def _nominal_bounds(graph, node) -> tuple[int, int]:
    """The n-bit range a SCALING node of a no_quant graph stands for."""
    from .ptq.quantize import clip_bounds

    return clip_bounds(int(graph.meta.get("nb_bits", 8)), bool(node.meta.get(META_SIGNED, True)))


def count_clipped(qgraph: Graph, x, *, batch_size: int = DEFAULT_BATCH) -> dict[str, list[int]]:
    """Per QUANTIZER/SCALING node: [below lo, above hi, elements] on the samples `x`."""
    counter = ClipCounter()
    x = np.asarray(x)
    for start, stop in batches(len(x), batch_size):
        counter.run(qgraph, as_float_input(x[start:stop]))
    return counter.counts


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


def _scale_summary(scale) -> dict:
    array = np.asarray(scale, dtype=np.float64)
    if array.size == 1:
        return {"scale": float(array.ravel()[0]), "channels": 1}
    return {"scale": None, "scale_min": float(array.min()), "scale_max": float(array.max()),
            "channels": int(array.size)}


def layer_table(qgraph: Graph, counts: dict[str, list[int]]) -> list[dict]:
    layers = []
    for node in qgraph.topo_order():
        if node.op not in (OpType.QUANTIZER, OpType.SCALING):
            continue
        attrs, meta = node.attrs, node.meta
        below, above, size = counts.get(node.name, [0, 0, 0])
        if node.op is OpType.QUANTIZER:
            lo, hi, signed = attrs.get("lo"), attrs.get("hi"), attrs.get("signed")
        else:
            lo, hi = _nominal_bounds(qgraph, node) if qgraph.meta.get("quantized") else (None, None)
            signed = meta.get(META_SIGNED)
        entry = {
            "name": node.name,
            "op": node.op.value,
            "role": attrs.get("role"),
            "mode": attrs.get("mode"),
            **_scale_summary(attrs.get("scale", 1.0)),
            "range": meta.get(META_RANGE),
            "clip": meta.get("clip"),
            "signed": signed,
            "dtype": attrs.get("dtype"),
            "lo": lo,
            "hi": hi,
            "clipped": below + above,
            "clipped_low": below,
            "clipped_high": above,
            "elements": size,
            "clipped_fraction": (below + above) / size if size else 0.0,
        }
        layers.append(_plain(entry))
    return layers


def quantization_report(float_graph: Graph, qgraph: Graph, calib_x, test_x, test_y, *,
                        batch_size: int = DEFAULT_BATCH, progress: bool = False,
                        float_accuracy: float | None = None) -> dict:
    """Everything worth knowing about one quantization run (see the module docstring).

    `float_accuracy` may be passed when already known, to skip the float run.
    """
    if not qgraph.meta.get("quantized"):
        raise InputError(f"graph '{qgraph.name}' is not quantized: pass the output of quantize_network")
    integer = bool(qgraph.meta.get("integer"))
    test_x = np.asarray(test_x)
    kw = dict(batch_size=batch_size, progress=progress)
    if float_accuracy is None:
        float_accuracy = accuracy(float_graph, test_x, test_y, **kw)
    if integer:
        cmp = compare_engines(qgraph, test_x, **kw)
        fake_quant, integer_acc = top1(cmp["reference"], test_y), top1(cmp["integer"], test_y)
        bit_exact = {"elements": cmp["elements"], "mismatches": cmp["mismatches"],
                     "mismatching_samples": cmp["mismatching_samples"],
                     "max_abs_diff": cmp["max_abs_diff"], "exact": cmp["mismatches"] == 0}
    else:
        fake_quant, integer_acc, bit_exact = accuracy(qgraph, test_x, test_y, **kw), None, None
    counts = count_clipped(qgraph, calib_x, batch_size=batch_size)
    report = {
        "model": float_graph.name,
        "options": qgraph.meta.get("options", {}),
        "target": qgraph.meta.get("target"),
        "nb_bits": qgraph.meta.get("nb_bits"),
        "integer": integer,
        "samples": {"calibration": int(len(calib_x)), "test": int(len(test_x))},
        "accuracy": {"float": float_accuracy, "fake_quant": fake_quant, "integer": integer_acc},
        "bit_exact": bit_exact,
        "layers": layer_table(qgraph, counts),
    }
    return _plain(report)


def write_json(report: dict, path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _num(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _scale_text(layer) -> str:
    if layer.get("scale") is not None:
        return _num(layer["scale"])
    return f"{_num(layer.get('scale_min'))}..{_num(layer.get('scale_max'))} ({layer.get('channels')} ch)"


def markdown(report: dict, *, max_layers: int | None = None) -> str:
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
    lines += [f"| {_pct(acc['float'])} | {_pct(acc['fake_quant'])} | {_pct(acc['integer'])} | {exact_text} |", ""]
    layers = sorted(report["layers"], key=lambda l: -l["clipped"])  # stable: graph order among ties
    if max_layers is not None:
        layers = layers[:max_layers]
    lines += ["## Layers (most clipped on the calibration set first)", "",
              "| layer | role | scale | range | clip | signed | lo..hi | clipped | clipped % |",
              "|---|---|---|---|---|---|---|---|---|"]
    for l in layers:
        lines.append(
            f"| `{l['name']}` | {l['role']} | {_scale_text(l)} | {_num(l['range'])} | {_num(l['clip'])} "
            f"| {_num(l['signed'])} | {_num(l['lo'])}..{_num(l['hi'])} | {l['clipped']} "
            f"| {100 * l['clipped_fraction']:.3f}% |")
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path, **kw) -> Path:
    path = Path(path)
    path.write_text(markdown(report, **kw))
    return path
