"""The quantization report as markdown (`markdown`, `write_markdown`) and its cell texts.

Split out of `aidge_lite.report`, which re-exports these names.
"""
from __future__ import annotations

from pathlib import Path

from .report_details import _num  # one cell formatter for both tables
from .report_details import details_markdown


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
