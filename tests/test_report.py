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


@pytest.mark.parametrize("target, mode", [(aidge_lite.Target(rescale="fixed_point"), "int"),
                                          (PROFILES["tflite"], "gemmlowp")])
def test_clip_counts_int_mode(setup, target, mode):
    """Integer quantizers (mode "int": fixed_point; "gemmlowp": profile tflite) are counted
    through their own integer rescale."""
    g, calib, test, labels = setup
    q = aidge_lite.quantize_network(g, calib[:20], nb_bits=4, target=target)
    modes = {n.attrs["mode"] for n in q.topo_order() if n.op is OpType.QUANTIZER}
    assert mode in modes
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
    if mode == "gemmlowp":
        # TFLite's double rounding moves many values at 4 bits (right shifts of 1..3 bits:
        # round(x * M / 2^31) then / 2^r), so compare with the Python-int oracle instead
        from .ptq.test_gemmlowp_rescale import tflite_requant

        for node in q.topo_order():
            a = node.attrs
            if node.op is not OpType.QUANTIZER or a["mode"] != "gemmlowp":
                continue
            (m,), (s,) = a["multiplier"], a["shift"]
            raw = [tflite_requant(int(v), m, s, -(1 << 31), (1 << 31) - 1)
                   for v in np.ravel(env[node.inputs[0]])]
            assert counts[node.name][:2] == [sum(v < a["lo"] for v in raw), sum(v > a["hi"] for v in raw)]
        return
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
    rep = report.quantization_report(g, q, calib, test, labels, sqnr_samples=64)
    path = report.write_markdown(rep, tmp_path / "r.md", images={"SQNR per layer": "sqnr.png"})
    text = path.read_text()
    assert "| float | fake-quant | integer |" in text and "residual" in text
    assert "## Layers (worst SQNR first)" in text and "![SQNR per layer](sqnr.png)" in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| ONNX node | quantizer"))
    columns = [c.strip() for c in lines[start].split("|")[1:-1]]
    assert columns[3:5] == ["range", "clip"] and "SQNR (dB)" in columns and "scale / shift" in columns
    assert "real scale (zp 0)" in columns
    rows = [line.split("|")[1:-1] for line in lines[start + 2:start + 2 + len(rep["layers"])]]
    assert all(r[1].strip().startswith("`") for r in rows)  # quantizer names, after their ONNX node
    sqnr = [float(r[columns.index("SQNR (dB)")]) for r in rows]
    assert sqnr == sorted(sqnr) and len(rows) == len(rep["layers"])  # worst first
    report.write_json(rep, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["layers"] == rep["layers"]


@pytest.mark.parametrize("target", [aidge_lite.Target(rescale="fixed_point"), PROFILES["tflite"]])
def test_integer_multipliers_and_shifts_are_exact_integers(setup, tmp_path, target):
    """Q31 multipliers print as integers, never '%g' (1.62155e+09); gemmlowp ones in TFLite's
    convention (signed shift, real = M * 2^(shift - 31)), "int" ones as m / 2^shift."""
    g, calib, test, labels = setup
    q = aidge_lite.quantize_network(g, calib[:50], per_channel=True, target=target)
    rep = report.quantization_report(g, q, calib[:50], test[:20], labels[:20], sqnr_samples=16)
    text = report.markdown(rep)
    layers = {l["name"]: l for l in rep["layers"]}
    checked = 0
    for node in q.topo_order():
        if node.op is not OpType.QUANTIZER or node.attrs["mode"] == "float":
            continue
        a, layer = node.attrs, layers[node.name]
        ms, ss = [int(v) for v in np.ravel(a["multiplier"])], [int(v) for v in np.ravel(a["shift"])]
        assert layer["rescale"] == a["mode"]
        if len(set(ms)) == 1:
            assert type(layer["multiplier"]) is int and layer["multiplier"] == ms[0]
            assert type(layer["shift"]) is int and layer["shift"] == ss[0]
            m_text, s_text = str(ms[0]), str(ss[0])
        else:
            assert (layer["multiplier_min"], layer["multiplier_max"]) == (min(ms), max(ms))
            assert type(layer["multiplier_min"]) is int
            m_text, s_text = f"{min(ms)}..{max(ms)}", (f"{min(ss)}..{max(ss)}" if len(set(ss)) > 1
                                                       else str(ss[0]))
        want = (f"Q31 {m_text}, shift {s_text}" if a["mode"] == "gemmlowp"
                else f"{m_text} / 2^{s_text}")
        assert want in report.rescale_text(layer) and want in text
        checked += 1
    assert checked >= 3 and "e+0" not in text
    json.dumps(rep, allow_nan=False)


def _outlier_row(graph, node, row, gain):
    """Scale output channel `row` of affine `node`'s weights by `gain` (a copy of the graph)."""
    g = graph.copy()
    w = g.constant(g.node(node).inputs[1]).copy()
    w[row] *= gain
    g.set_constant(g.node(node).inputs[1], w)
    return g


def test_zeroed_channels_are_reported(setup, tmp_path):
    """One fc1 row 1e4x the others: per-tensor 8 bits rounds the other 7 rows to zero."""
    g, calib, test, labels = setup
    g = _outlier_row(g, "fc1", 0, 1e4)
    q = aidge_lite.quantize_network(g, calib[:100], nb_bits=8)
    rep = report.quantization_report(g, q, calib[:100], test[:50], labels[:50], sqnr_samples=16)
    assert rep["zeroed_channels"] == [{"node": "fc1", "channels": 8, "zeroed": 7}]
    text = report.markdown(rep)
    assert "**Warning**: `fc1`: 7 of 8 output channels have all-zero quantized weights" in text
    per_channel = aidge_lite.quantize_network(g, calib[:100], nb_bits=8, per_channel=True)
    assert report.zeroed_weight_channels(per_channel, report.float_reference(g, per_channel)) == []


def test_zeroed_channels_of_a_float_graph_are_refused(setup):
    g = setup[0]
    with pytest.raises(InputError, match=f"graph '{g.name}' is not quantized"):
        report.zeroed_weight_channels(g, g)


def test_pruned_channels_are_not_reported(setup):
    """A row that is zero in float too was not wiped out by quantization."""
    g, calib, _, _ = setup
    g = _outlier_row(g, "fc2", 3, 0.0)
    q = aidge_lite.quantize_network(g, calib[:100], nb_bits=8)
    assert not q.constant(q.node("fc2").inputs[1])[3].any()
    assert report.zeroed_weight_channels(q, report.float_reference(g, q)) == []


def test_unlabelled_report(setup):
    """Without labels: no accuracies, but the bit-exact check and the SQNR are there."""
    g, calib, test, _ = setup
    q = aidge_lite.quantize_network(g, calib[:50], nb_bits=8)
    rep = report.quantization_report(g, q, calib[:50], test[:30], None, sqnr_samples=16)
    assert rep["accuracy"] == {"float": None, "fake_quant": None, "integer": None}
    assert rep["bit_exact"]["elements"] == 30 * 4 and rep["sqnr"]["samples"] == 16
    assert all(l["sqnr_db"] > 20 for l in rep["layers"])


def test_float_graph_rejected(setup):
    g, calib, test, labels = setup
    with pytest.raises(InputError, match="not quantized"):
        report.quantization_report(g, g, calib, test, labels)


# ------------------------------------------------------------------------ SQNR
@pytest.fixture(scope="module")
def digits_mlp():
    try:
        from aidge_lite.models import datasets, zoo

        return zoo.load("digits_mlp"), datasets.digits().calib_x[:200]
    except (FileNotFoundError, ImportError) as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("signs", [False, True], ids=["signed", "optimize_signs"])
def test_sqnr_falls_with_bits(digits_mlp, signs):
    """Every layer loses SQNR from 8 to 4 bits (~6 dB a bit), and 8 bits is > 30 dB almost everywhere.

    With optimize_signs the unsigned quantizers before a ReLU are compared with the ReLU'd tensor.
    """
    g, calib = digits_mlp
    quantized = {bits: aidge_lite.quantize_network(g, calib, nb_bits=bits, optimize_signs=signs)
                 for bits in (8, 4)}
    sqnr = {bits: report.layer_sqnr(g, q, calib) for bits, q in quantized.items()}
    if signs:
        assert any(not n.attrs["signed"] for n in quantized[8].topo_order() if n.op is OpType.QUANTIZER)
    assert list(sqnr[8]) == list(sqnr[4]) and len(sqnr[8]) == 4
    for name in sqnr[8]:
        high, low = sqnr[8][name]["sqnr_db"], sqnr[4][name]["sqnr_db"]
        assert high > low + 12, (name, high, low)
    eight = [r["sqnr_db"] for r in sqnr[8].values()]
    assert sum(v > 30 for v in eight) >= 0.75 * len(eight), eight


def test_sqnr_thresholds_in_float_units(digits_mlp):
    """hi / F is the chosen clip converted to float units: range * clip / range(calibration).

    Measured on the calibration samples themselves, so max |x| is the calibrated range.
    """
    g, calib = digits_mlp
    q = aidge_lite.quantize_network(g, calib, nb_bits=4, clipping="mse", optimize_signs=True)
    result = report.layer_sqnr(g, q, calib)
    assert any(n.meta["clip"] < 0.9 * n.meta["range"] for n in q.topo_order() if n.op is OpType.QUANTIZER)
    for name, r in result.items():
        node = q.node(name)
        chosen = node.meta.get("clip", node.meta["range"])
        assert r["float_clip"] == pytest.approx(r["float_range"] * chosen / node.meta["range"], rel=1e-6)
        assert r["float_clip_low"] == pytest.approx(r["float_clip"] * node.attrs["lo"] / node.attrs["hi"])
        hist = r["histogram"]
        assert hist["edges"][0] <= min(r["float_clip_low"], hist["min"])
        assert hist["edges"][-1] >= max(r["float_clip"], hist["max"])
        per_sample = int(np.prod(q.node(node.inputs[0]).meta["shape"]))  # shape for a batch of one
        assert np.sum(hist["counts"]) == len(calib) * per_sample


def _mnist8_or_skip():
    try:
        from aidge_lite.models import datasets, zoo

        return zoo.load("mnist8"), datasets.mnist().calib_x[::25]
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("model", ["residual_mlp", "mnist8"])
@pytest.mark.parametrize("options", [{}, {"cle": True, "per_channel": True, "optimize_signs": True}],
                         ids=["plain", "cle+per_channel+signs"])
def test_sqnr_mapping_is_exact_without_rounding(setup, model, options):
    """no_quant keeps every scale and skips rounding: each layer must match its float tensor
    to float64 precision. Checks the name mapping (bias Adds fused by prepare, the renamed
    output, residual operands, joins), the factors F and the CLE'd reference graph."""
    if model == "mnist8":
        g, calib = _mnist8_or_skip()
    else:
        g, calib = setup[0], setup[1][:100]
    q = aidge_lite.quantize_network(g, calib, nb_bits=8, no_quant=True, **options)
    result = report.layer_sqnr(g, q, calib[:16])
    assert result and all(r["histogram"] is not None for r in result.values())
    for name, r in result.items():
        assert r["sqnr_note"] == "exact" or r["sqnr_db"] > 150, (name, r["sqnr_db"], r["sqnr_note"])


def test_sqnr_none_without_float_counterpart(setup):
    g, calib, _, _ = setup
    q = aidge_lite.quantize_network(g, calib[:50], nb_bits=8)
    renamed = g.copy()
    renamed.rename("fc1", "fc1_elsewhere")
    result = report.layer_sqnr(renamed, q, calib[:8])
    assert result["fc1_scaling"]["sqnr_db"] is None and result["fc1_scaling"]["histogram"] is None
    assert "no float tensor" in result["fc1_scaling"]["sqnr_note"]
    assert all(r["sqnr_db"] > 30 for name, r in result.items() if name != "fc1_scaling")
