"""aidge_lite.plots: the report's PNGs exist, show something, and never crash the run."""
from __future__ import annotations

import copy
import sys
import warnings

import numpy as np
import pytest

import aidge_lite
from aidge_lite import plots, report

from .test_report import residual_mlp

pytest.importorskip("matplotlib")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rep():
    """A 4-bit mse report of the residual MLP (every role: input, affine, residual, join)."""
    g = residual_mlp()
    x = np.random.default_rng(2).normal(0, 1, (120, 8)).astype(np.float32)
    q = aidge_lite.quantize_network(g, x, nb_bits=4, clipping="mse", optimize_signs=True)
    return report.quantization_report(g, q, x, x[:40], None, sqnr_samples=64)


def _pixels(path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)[..., :3]


def _count_color(pixels, hex_color: str, tol: float = 0.06) -> int:
    target = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int(np.count_nonzero(np.all(np.abs(pixels - target) < tol, axis=-1)))


def test_write_plots(rep, tmp_path):
    images = plots.write_plots(rep, tmp_path)
    assert set(images.values()) == {plots.SQNR_PNG, plots.HISTOGRAMS_PNG}
    for name in images.values():
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    # the bars and the clip lines are drawn (not an empty canvas)
    assert _count_color(_pixels(tmp_path / plots.SQNR_PNG), plots._BAR_COLOR) > 2_000
    hist = _pixels(tmp_path / plots.HISTOGRAMS_PNG)
    assert _count_color(hist, plots._CLIP_COLOR) > 50 * len(rep["histograms"])  # two dashed lines a panel
    assert _count_color(hist, plots._BAR_COLOR, tol=0.25) > 5_000


def test_every_quantizer_gets_a_panel(rep):
    with_histogram = [l["name"] for l in rep["layers"] if rep["histograms"].get(l["name"])]
    assert with_histogram == [l["name"] for l in rep["layers"]]
    for layer in rep["layers"]:  # the clip lines are inside the plotted span
        edges = rep["histograms"][layer["name"]]["edges"]
        assert edges[0] <= layer["float_clip_low"] and layer["float_clip"] <= edges[-1]


def test_layers_without_sqnr(rep, tmp_path):
    """Exact / unmeasured layers: the bar chart labels them; no numbers at all: no bar chart."""
    partial = copy.deepcopy(rep)
    partial["layers"][0].update(sqnr_db=None, sqnr_note="exact")
    assert plots.plot_sqnr(partial, tmp_path / "partial.png").is_file()
    nothing = copy.deepcopy(rep)
    for layer in nothing["layers"]:
        layer.update(sqnr_db=None, sqnr_note="no float tensor")
    nothing["histograms"] = {}
    assert plots.write_plots(nothing, tmp_path) == {} and not list(tmp_path.glob("*s.png"))


def test_without_matplotlib_warns_and_writes_nothing(rep, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert plots.write_plots(rep, tmp_path) == {}
    assert len(caught) == 1 and "matplotlib is not installed" in str(caught[0].message)
    assert not list(tmp_path.iterdir())


def test_short_names():
    name = "/block2/proj/proj.0/Conv_output_0_scaling_and_then_some"
    short = plots._short(name, 30)
    assert len(short) == 30 and short.startswith("/block2/") and short.endswith("then_some")
    assert plots._short("fc1_scaling") == "fc1_scaling"
