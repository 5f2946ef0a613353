"""aidge_lite.report: accuracies, bit-exact check and per-layer clip counts."""
from __future__ import annotations

import json

import numpy as np
import pytest

import aidge_lite
from aidge_lite import Graph, Node, OpType, report
from aidge_lite.errors import InputError
from aidge_lite.interp.reference import ReferenceInterpreter
from aidge_lite.interp.shapes import infer_shapes
from aidge_lite.target import PROFILES


def residual_mlp(seed=0, width=8, classes=4) -> Graph:
    """x -> fc0 -> relu0 -> fc1 -> relu1 -> fc2 -> (+ relu0) -> relu2 -> fc3: one residual join."""
    rng = np.random.default_rng(seed)
    g = Graph("residual_mlp")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, width], "dtype": "float32"}))

    def gemm(name, src, n_out, n_in):
        g.add_constant(f"{name}_w", rng.normal(0, 0.5, (n_out, n_in)).astype(np.float32))
        g.add_constant(f"{name}_b", rng.normal(0, 0.1, n_out).astype(np.float32))
        g.add(Node(name, OpType.GEMM, [src, f"{name}_w", f"{name}_b"], attrs={"transB": 1}))

    gemm("fc0", "x", width, width)
    g.add(Node("relu0", OpType.RELU, ["fc0"]))
    gemm("fc1", "relu0", width, width)
    g.add(Node("relu1", OpType.RELU, ["fc1"]))
    gemm("fc2", "relu1", width, width)
    g.add(Node("add", OpType.ADD, ["fc2", "relu0"]))
    g.add(Node("relu2", OpType.RELU, ["add"]))
    gemm("fc3", "relu2", classes, width)
    g.outputs = ["fc3"]
    infer_shapes(g)
    return g


@pytest.fixture(scope="module")
def setup():
    g = residual_mlp()
    rng = np.random.default_rng(1)
    calib = rng.normal(0, 1, (400, 8)).astype(np.float32)
    test = rng.normal(0, 1, (200, 8)).astype(np.float32)
    labels = aidge_lite.run(g, test)["fc3"].argmax(1)
    return g, calib, test, labels


def _half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def independent_counts(qgraph, x):
    """Clip counts recomputed from the quantizers' inputs (float mode only)."""
    env = ReferenceInterpreter().run(qgraph, x, intermediates=True)
    counts = {}
    for node in qgraph.topo_order():
        if node.op is OpType.QUANTIZER:
            a = node.attrs
            v = env[node.inputs[0]].reshape(len(x), -1) if env[node.inputs[0]].ndim > 1 else env[node.inputs[0]]
            r = _half_away(v * np.asarray(a["scale"]))
            counts[node.name] = int(np.count_nonzero(r < a["lo"]) + np.count_nonzero(r > a["hi"]))
    return counts


def test_report_contents_and_clip_counts(setup):
    g, calib, test, labels = setup
    # calibrate on a few samples so that the rest of the calibration set clips
    q = aidge_lite.quantize_network(g, calib[:20], nb_bits=4)
    rep = report.quantization_report(g, q, calib, test, labels, batch_size=64)
    json.dumps(rep, allow_nan=False)  # JSON-able
    assert rep["samples"] == {"calibration": 400, "test": 200}
    assert rep["accuracy"]["float"] == 1.0
    assert 0 < rep["accuracy"]["fake_quant"] == rep["accuracy"]["integer"] <= 1
    assert rep["bit_exact"]["mismatches"] == 0 and rep["bit_exact"]["elements"] == 200 * 4
    assert rep["options"]["nb_bits"] == 4 and rep["nb_bits"] == 4
    layers = {l["name"]: l for l in rep["layers"]}
    quantizers = [n.name for n in q.topo_order() if n.op is OpType.QUANTIZER]
    assert list(layers) == quantizers
    assert {l["role"] for l in layers.values()} == {"input", "affine", "residual", "join"}
    for l in layers.values():
        assert (l["lo"], l["hi"]) in ((-8, 7), (0, 15)) and l["elements"] > 0
        assert l["range"] > 0 and l["scale"] > 0
        assert l["clipped"] == l["clipped_low"] + l["clipped_high"]
    want = independent_counts(q, calib)
    assert {k: l["clipped"] for k, l in layers.items()} == want
    assert sum(want.values()) > 0


def test_clip_counts_int_mode(setup):
    """Fixed-point quantizers (mode "int") are counted through the integer rescale."""
    g, calib, test, labels = setup
    q = aidge_lite.quantize_network(g, calib[:20], nb_bits=4, target=PROFILES["tflite"])
    modes = {n.attrs["mode"] for n in q.topo_order() if n.op is OpType.QUANTIZER}
    assert "int" in modes
    counts = report.count_clipped(q, calib)
    env = ReferenceInterpreter().run(q, calib, intermediates=True)
    for node in q.topo_order():
        if node.op is not OpType.QUANTIZER:
            continue
        out = env[node.name]
        below, above, size = counts[node.name]
        assert size == out.size
        # a value counted as clipped sits at the bound after clipping
        assert np.count_nonzero(out == node.attrs["lo"]) >= below
        assert np.count_nonzero(out == node.attrs["hi"]) >= above
    assert sum(c[0] + c[1] for c in counts.values()) > 0
    # same quantizers in float mode clip (almost exactly) the same values
    qf = aidge_lite.quantize_network(g, calib[:20], nb_bits=4)
    float_counts = report.count_clipped(qf, calib)
    total = lambda c: sum(v[0] + v[1] for v in c.values())  # noqa: E731
    assert abs(total(counts) - total(float_counts)) <= 0.05 * total(float_counts) + 2


def test_no_quant_report(setup):
    g, calib, test, labels = setup
    q = aidge_lite.quantize_network(g, calib[:20], nb_bits=8, no_quant=True)
    rep = report.quantization_report(g, q, calib, test, labels, float_accuracy=1.0)
    assert rep["accuracy"]["integer"] is None and rep["bit_exact"] is None
    assert rep["accuracy"]["fake_quant"] == 1.0  # no rounding: the scales are exact
    assert all(l["op"] == "Scaling" for l in rep["layers"]) and rep["layers"]
    assert sum(l["clipped"] for l in rep["layers"]) > 0  # values that would leave the 8-bit range


def test_markdown(setup, tmp_path):
    g, calib, test, labels = setup
    q = aidge_lite.quantize_network(g, calib[:20], nb_bits=3)
    rep = report.quantization_report(g, q, calib, test, labels)
    path = report.write_markdown(rep, tmp_path / "r.md")
    text = path.read_text()
    assert "| float | fake-quant | integer |" in text and "residual" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    clipped = [int(r.split("|")[8]) for r in rows]
    assert clipped == sorted(clipped, reverse=True) and len(rows) == len(rep["layers"])
    report.write_json(rep, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["layers"] == rep["layers"]


def test_float_graph_rejected(setup):
    g, calib, test, labels = setup
    with pytest.raises(InputError, match="not quantized"):
        report.quantization_report(g, g, calib, test, labels)
