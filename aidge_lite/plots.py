"""PNG plots of a quantization report (`aidge_lite.report.quantization_report`).

- `plot_sqnr(report, path)`: one horizontal bar per layer, worst SQNR on top;
  layers without a number (exact, no float counterpart) get a labelled stub.
- `plot_histograms(report, path)`: one small panel per quantizer, a log-y
  histogram of the float tensor it reads on the SQNR samples, with its
  clipping thresholds (lo / F and hi / F, float units) and the max |x| marked.
- `write_plots(report, out_dir)`: both files (`sqnr.png`, `histograms.png`);
  returns {caption: file name} for `report.markdown(images=...)`.

matplotlib is imported lazily with the non-interactive 'Agg' backend (no
display needed). Without matplotlib, `write_plots` warns once and writes nothing.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from .report import sqnr_text, worst_first

__all__ = ["write_plots", "plot_sqnr", "plot_histograms", "SQNR_PNG", "HISTOGRAMS_PNG"]

SQNR_PNG = "sqnr.png"
HISTOGRAMS_PNG = "histograms.png"
_NAME_CHARS = 44   # longer layer names are shortened in the middle
_PANEL_COLUMNS = 3
_CLIP_COLOR, _RANGE_COLOR, _BAR_COLOR = "#d62728", "#555555", "#1f77b4"


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _short(name: str, limit: int = _NAME_CHARS) -> str:
    """`name` cut in the middle to `limit` characters (the ends tell layers apart)."""
    if len(name) <= limit:
        return name
    keep = (limit - 1) // 2
    return f"{name[:keep]}…{name[-(limit - 1 - keep):]}"


def _title(report: dict) -> str:
    opts = report.get("options") or {}
    flags = [k for k in ("optimize_signs", "per_channel", "cle", "single_shift", "bias_correction")
             if opts.get(k)]
    extra = f", {', '.join(flags)}" if flags else ""
    model = Path(str(report.get("model_spec") or report["model"])).name  # a file name, not its directories
    return f"{_short(model, 60)}: {report.get('nb_bits')} bits, clipping {opts.get('clipping', 'max')}{extra}"


def _fit(text: str, width_inches: float, fontsize: float) -> str:
    """`text` wrapped so that each line fits `width_inches` at `fontsize` (DejaVu Sans averages
    well under 0.6 em per character; 0.62 leaves a margin)."""
    import textwrap

    chars = max(12, int(width_inches * 72 / (0.62 * fontsize)))
    return "\n".join(textwrap.fill(line, chars, break_long_words=True) if len(line) > chars else line
                     for line in text.split("\n"))


def plot_sqnr(report: dict, path, plt=None) -> Path:
    """Horizontal SQNR bars, worst layer on top, value printed at the end of each bar."""
    plt = plt or _pyplot()
    layers = worst_first(report["layers"])
    values = [l.get("sqnr_db") for l in layers]
    finite = [v for v in values if v is not None]
    top = max(finite, default=1.0)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.38 * len(layers)), layout="constrained")
    positions = np.arange(len(layers))
    ax.barh(positions, [v if v is not None else 0.0 for v in values], color=_BAR_COLOR, height=0.6)
    for y, (layer, value) in enumerate(zip(layers, values)):
        x = value if value is not None else 0.0
        ax.text(x + 0.01 * top, y, f" {sqnr_text(layer)}", va="center", fontsize=8)
    ax.set_yticks(positions, [f"{_short(l['name'])} ({l.get('role')})" for l in layers], fontsize=8)
    ax.invert_yaxis()  # worst first, at the top
    ax.set_xlim(min(0.0, min(finite, default=0.0)), top * 1.15)
    ax.set_xlabel("SQNR (dB), float vs fake-quant: higher is better")
    samples = (report.get("sqnr") or {}).get("samples", 0)
    ax.set_title(_fit(f"{_title(report)}\nper-layer SQNR on {samples} calibration samples",
                      fig.get_figwidth() * 0.95, 10), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path, plt)


def _panel(ax, layer: dict, histogram: dict) -> None:
    """One quantizer: log-y histogram, both clip thresholds, max |x| where the data reaches it."""
    edges, counts = np.asarray(histogram["edges"]), np.asarray(histogram["counts"])
    ax.stairs(counts, edges, fill=True, color=_BAR_COLOR, alpha=0.75)
    ax.set_yscale("log")
    ax.set_ylim(0.5, max(2.0, counts.max() * 3.0))
    clip_lines = [layer.get("float_clip_low"), layer.get("float_clip")]
    for i, x in enumerate(v for v in clip_lines if v is not None):
        ax.axvline(x, color=_CLIP_COLOR, linestyle="--", linewidth=1.2, label=None if i else "clip (lo / F, hi / F)")
    peak = layer.get("float_range")
    ends = [e for e in (histogram.get("min"), histogram.get("max")) if e is not None and peak and abs(e) == peak]
    for i, x in enumerate(ends):
        ax.axvline(x, color=_RANGE_COLOR, linestyle=":", linewidth=1.4, label=None if i else "max |x|")
    kind = "signed" if layer.get("signed") else "unsigned"
    sqnr = sqnr_text(layer) + (" dB" if layer.get("sqnr_db") is not None else "")
    width = ax.figure.get_figwidth() / max(1, ax.get_gridspec().ncols) * 0.95
    ax.set_title(_fit(f"{_short(layer['name'], 40)}\n{layer.get('role')}, {kind}, SQNR {sqnr}", width, 8),
                 fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.get_offset_text().set_fontsize(7)


def plot_histograms(report: dict, path, plt=None) -> Path | None:
    """A grid of per-quantizer histograms (graph order); None when there is nothing to plot."""
    plt = plt or _pyplot()
    histograms = report.get("histograms") or {}
    layers = [l for l in report["layers"] if histograms.get(l["name"])]
    if not layers:
        return None
    cols = min(_PANEL_COLUMNS, len(layers))
    rows = math.ceil(len(layers) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows + 0.6), layout="constrained",
                             squeeze=False)
    for ax, layer in zip(axes.flat, layers):
        _panel(ax, layer, histograms[layer["name"]])
    spare = list(axes.flat)[len(layers):]
    for ax in spare:
        ax.set_axis_off()
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if spare:  # the legend fills an empty panel
        spare[0].legend(handles, labels, loc="center", fontsize=9, frameon=False)
    else:
        fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    samples = (report.get("sqnr") or {}).get("samples", 0)
    fig.suptitle(_fit(f"{_title(report)}\nfloat tensors read by each quantizer ({samples} calibration "
                      "samples, float units, log count)", fig.get_figwidth() * 0.95, 10), fontsize=10)
    return _save(fig, path, plt)


def _save(fig, path, plt) -> Path:
    from .atomic import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format=path.suffix[1:] or "png")
    finally:
        plt.close(fig)
    return path


def write_plots(report: dict, out_dir) -> dict[str, str]:
    """Write sqnr.png and histograms.png into `out_dir`; {caption: file name} of those written.

    Without matplotlib: one warning, nothing written, an empty dict.
    """
    plt = _pyplot()
    if plt is None:
        warnings.warn("matplotlib is not installed: skipping the PNG plots "
                      "(pip install matplotlib, or the 'dev' extra)", RuntimeWarning, stacklevel=2)
        return {}
    out_dir = Path(out_dir)
    written = {}
    if any(l.get("sqnr_db") is not None for l in report["layers"]):
        plot_sqnr(report, out_dir / SQNR_PNG, plt)
        written["SQNR per layer"] = SQNR_PNG
    if plot_histograms(report, out_dir / HISTOGRAMS_PNG, plt) is not None:
        written["Activation histograms with clipping thresholds"] = HISTOGRAMS_PNG
    return written
