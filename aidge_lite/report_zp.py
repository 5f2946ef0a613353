"""Quantization report of a zero-point graph (`quantize_network(spec="tflite")`).

Same headline as `report.quantization_report` (float / fake-quant / integer
accuracy, bit-exact check); the layer table is in TFLite's conventions: each
quantizer's scale and zero point (real = (q - zero_point) * scale), its Q31
multipliers and signed shifts as exact integers, its clamp, the values of its
float tensor that fall outside what it represents on the calibration set, and
the SQNR of its dequantized fake-quant value against that float tensor.
"""
from __future__ import annotations

import math

import numpy as np

from .evaluate import as_float_input, batches
from .interp import run
from .ir import Graph, OpType
from .report import _accuracies, _header, _pct, _plain, float_reference, spread, write_json

SQNR_SAMPLES = 256


def _quantizers(qgraph: Graph):
    return [n for n in qgraph.topo_order() if n.op is OpType.QUANTIZER
            and n.attrs.get("dtype") == "int8" and "zero_point" in n.attrs]


def quantization_report(float_graph: Graph, qgraph: Graph, calib_x, test_x, test_y, *,
                        batch_size: int = 500, progress: bool = False,
                        sqnr_samples: int | None = SQNR_SAMPLES) -> dict:
    """The report dict (see the module docstring); JSON-ready."""
    test_x, calib_x = np.asarray(test_x), np.asarray(calib_x)
    acc, bit_exact = _accuracies(float_graph, qgraph, test_x, test_y, None,
                                 dict(batch_size=batch_size, progress=progress))
    reference = float_reference(float_graph, qgraph)
    nodes = [n for n in _quantizers(qgraph) if n.name in reference]
    stats = {n.name: {"signal": 0.0, "noise": 0.0, "outside": 0, "elements": 0} for n in nodes}
    x = calib_x[spread(len(calib_x), sqnr_samples)] if sqnr_samples != 0 else calib_x[:0]
    for start, stop in batches(len(x), batch_size):
        xb = as_float_input(x[start:stop])
        floats = run(reference, xb, intermediates=True, dtype=np.float64)
        fakes = run(qgraph, xb, intermediates=True)
        for node in nodes:
            a, s = node.attrs, stats[node.name]
            real, zp, scale = floats[node.name], a["zero_point"], a["scale"]
            if np.shape(real) != np.shape(fakes[node.name]):
                continue
            fake = (np.asarray(fakes[node.name], np.float64) - zp) * scale
            s["signal"] += float(np.sum(np.square(real)))
            s["noise"] += float(np.sum(np.square(real - fake)))
            low, high = (a["lo"] - zp - 0.5) * scale, (a["hi"] - zp + 0.5) * scale
            s["outside"] += int(np.count_nonzero((real < low) | (real > high)))
            s["elements"] += int(real.size)
    layers = []
    for node in _quantizers(qgraph):
        a, s = node.attrs, stats.get(node.name)
        sqnr = None
        if s and s["noise"] > 0 and s["signal"] > 0:
            sqnr = 10 * math.log10(s["signal"] / s["noise"])
        layers.append({"name": node.name, "op": node.op.value, "role": "tflite", "mode": a.get("mode"),
                       "scale": a["scale"], "zero_point": a["zero_point"],
                       "multiplier": a.get("multiplier"), "shift": a.get("shift"),
                       "lo": a["lo"], "hi": a["hi"], "sqnr_db": sqnr,
                       "clipped": s["outside"] if s else 0, "elements": s["elements"] if s else 0})
    return _plain({"model": float_graph.name, "options": qgraph.meta.get("options", {}),
                   "target": qgraph.meta.get("target"), "nb_bits": 8, "integer": True,
                   "samples": {"calibration": int(len(calib_x)), "test": int(len(test_x))},
                   "accuracy": acc, "bit_exact": bit_exact, "sqnr": {"samples": int(len(x))},
                   "layers": layers, "histograms": {}, "zeroed_channels": []})


def _ints(values) -> str:
    if values is None:
        return "-"
    values = list(values)
    text = ", ".join(str(int(v)) for v in values[:4])
    return text + (f", ... ({len(values)})" if len(values) > 4 else "")


def markdown(report: dict) -> str:
    lines = _header(report)
    lines += ["## Quantizers (TFLite conventions)", "",
              "real = (q - zero_point) * scale. Multipliers are Q31 integers and shifts signed "
              "(positive = left), as TFLite stores them: y = RDBPOT(SRDHM(x * 2^max(shift, 0), M), "
              "max(-shift, 0)) + zero_point. outside: calibration values beyond [lo, hi] (clipped).", "",
              "| quantizer | scale | zero point | multiplier (Q31) | shift | clamp | outside | SQNR dB |",
              "|---|---|---|---|---|---|---|---|"]
    for layer in report["layers"]:
        sqnr = "-" if layer["sqnr_db"] is None else f"{layer['sqnr_db']:.1f}"
        lines.append(f"| `{layer['name']}` | {layer['scale']!r} | {layer['zero_point']} | "
                     f"{_ints(layer['multiplier'])} | {_ints(layer['shift'])} | [{layer['lo']}, {layer['hi']}] | "
                     f"{layer['clipped']:,} / {layer['elements']:,} | {sqnr} |")
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path, **_):
    from .atomic import write_text

    return write_text(path, markdown(report))


__all__ = ["quantization_report", "markdown", "write_markdown", "write_json"]
