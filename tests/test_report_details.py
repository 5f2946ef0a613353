"""Report details in the users' conventions (aidge_lite.report_details), on constructed cases:
weight SQNR against a hand computation, an unsigned quantizer's zeros not counted as clipped,
accumulator ranges and bits, rows keyed by the ONNX node, real scales, plot titles that fit."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aidge_lite
from aidge_lite import Graph, Node, OpType, report
from aidge_lite.interp.reference import ReferenceInterpreter
from aidge_lite.interp.shapes import infer_shapes
from aidge_lite.report_details import signed_bits

W = np.array([[0.5, -0.25, 0.1], [1.0, 0.3, -0.7]], np.float32)
B = np.array([0.1, -0.2], np.float32)


def one_gemm(weight=W, bias=B) -> Graph:
    g = Graph("one_gemm")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, weight.shape[1]], "dtype": "float32"}))
    g.add_constant("fc_w", weight)
    g.add_constant("fc_b", bias)
    g.add(Node("fc", OpType.GEMM, ["x", "fc_w", "fc_b"], attrs={"transB": 1}))
    g.outputs = ["fc"]
    infer_shapes(g)
    return g


def gemm_relu_gemm(seed=0) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("gemm_relu_gemm")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 4], "dtype": "float32"}))
    g.add_constant("fc1_w", rng.normal(0, 1, (6, 4)).astype(np.float32))
    g.add_constant("fc1_b", np.zeros(6, np.float32))
    g.add(Node("fc1", OpType.GEMM, ["x", "fc1_w", "fc1_b"], attrs={"transB": 1}))
    g.add(Node("relu", OpType.RELU, ["fc1"]))
    g.add_constant("fc2_w", rng.normal(0, 1, (3, 6)).astype(np.float32))
    g.add_constant("fc2_b", np.zeros(3, np.float32))
    g.add(Node("fc2", OpType.GEMM, ["relu", "fc2_w", "fc2_b"], attrs={"transB": 1}))
    g.outputs = ["fc2"]
    infer_shapes(g)
    return g


def _gemms(q):
    return [n for n in q.topo_order() if n.op is OpType.GEMM]


def _sqnr(w, deq):
    return 10 * math.log10(float(np.sum(np.square(w.astype(np.float64))))
                           / float(np.sum(np.square(w.astype(np.float64) - deq))))


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(3).normal(0, 1, (64, 3)).astype(np.float32)


# ------------------------------------------------------------------- weights
def test_weight_sqnr_per_tensor_matches_a_hand_computation(calib):
    """4 bits, per tensor: max |W| = 1.0, so q = round_half_away(7 W) and W ~ q / 7."""
    g = one_gemm()
    q = aidge_lite.quantize_network(g, calib, nb_bits=4)
    by_hand = np.array([[4, -2, 1], [7, 2, -5]])  # 3.5 -> 4, -1.75 -> -2, 0.7 -> 1, 2.1 -> 2, -4.9 -> -5
    assert np.array_equal(q.constant(_gemms(q)[0].inputs[1]), by_hand)
    rep = report.quantization_report(g, q, calib, calib[:8], None, sqnr_samples=16)
    (row,) = rep["weights"]
    assert row["node"] == _gemms(q)[0].name and not row["per_channel"] and row["shape"] == [2, 3]
    assert row["sqnr_db"] == pytest.approx(_sqnr(W, by_hand / 7.0), abs=1e-9)
    assert row["real_scale"] == pytest.approx(1 / 7) and row["zero_point"] == 0
    assert (row["int_min"], row["int_max"]) == (-5, 7)
    # worst channel, by hand too
    per_row = [_sqnr(W[c], by_hand[c] / 7.0) for c in range(2)]
    assert row["worst_channel"] == int(np.argmin(per_row))
    assert row["worst_channel_sqnr_db"] == pytest.approx(min(per_row), abs=1e-9)
    text = report.markdown(rep)
    assert "## Weights" in text and f"{row['sqnr_db']:.1f}" in text


def test_weight_sqnr_per_channel_matches_a_hand_computation(calib):
    """Per channel: row 0's max |W| = 0.5 -> q = round(14 W); row 1's = 1.0 -> round(7 W)."""
    g = one_gemm()
    q = aidge_lite.quantize_network(g, calib, nb_bits=4, per_channel=True)
    by_hand = np.array([[7, -4, 1], [7, 2, -5]])  # 1.4 -> 1, -3.5 -> -4
    assert np.array_equal(q.constant(_gemms(q)[0].inputs[1]), by_hand)
    (row,) = report.quantization_report(g, q, calib, calib[:8], None, sqnr_samples=0)["weights"]
    deq = by_hand / np.array([[14.0], [7.0]])
    assert row["per_channel"] and row["real_scale"] is None
    assert (row["real_scale_min"], row["real_scale_max"]) == pytest.approx((1 / 14, 1 / 7))
    assert row["sqnr_db"] == pytest.approx(_sqnr(W, deq), abs=1e-9)


def test_weight_sqnr_of_exactly_representable_weights_is_exact(calib):
    exact = one_gemm(np.array([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]], np.float32))
    q = aidge_lite.quantize_network(exact, calib, nb_bits=4)
    row = report.quantization_report(exact, q, calib, calib[:8], None, sqnr_samples=0)["weights"][0]
    assert row["sqnr_db"] is None and row["sqnr_note"] == "exact"


# ------------------------------------------------------- unsigned zero clips
def test_unsigned_quantizer_zeros_are_not_counted_as_clipped():
    """fc1's quantizer is unsigned (read only by a ReLU): the negative half of its input goes
    to 0, the ReLU's work; only values above hi count as clipped."""
    g = gemm_relu_gemm()
    x = np.random.default_rng(5).normal(0, 1, (200, 4)).astype(np.float32)
    q = aidge_lite.quantize_network(g, x[:20], nb_bits=4, optimize_signs=True)
    fc1_q = next(n for n in q.topo_order() if n.op is OpType.QUANTIZER and n.inputs == ["fc1"])
    assert fc1_q.attrs["lo"] == 0 and not fc1_q.attrs["signed"]
    env = ReferenceInterpreter().run(q, x, intermediates=True)
    scaled = env["fc1"] * np.asarray(fc1_q.attrs["scale"])
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    below, above = int(np.count_nonzero(rounded < 0)), int(np.count_nonzero(rounded > fc1_q.attrs["hi"]))
    assert below > 100 and above > 0  # calibrated on 20 samples: the other 180 clip
    rep = report.quantization_report(g, q, x, x[:10], None, sqnr_samples=0)
    layer = next(l for l in rep["layers"] if l["name"] == fc1_q.name)
    assert layer["zeroed_unsigned"] == below
    assert layer["clipped"] == layer["clipped_high"] == above and layer["clipped_low"] == 0
    assert layer["clipped_fraction"] == pytest.approx(above / layer["elements"])
    signed = [l for l in rep["layers"] if l["signed"]]
    assert signed and all(l["zeroed_unsigned"] == 0 for l in signed)


def test_cli_headline_does_not_count_unsigned_zeros(tmp_path, capsys):
    import json

    from aidge_lite import cli

    g = gemm_relu_gemm()
    x = np.random.default_rng(5).normal(0, 1, (60, 4)).astype(np.float32)
    model = tmp_path / "m.onnx"
    _save_onnx_of(g, model)
    np.savez(tmp_path / "d.npz", x=x, calib_x=x[:20])
    assert cli.main(["quantize", str(model), "--data", str(tmp_path / "d.npz"), "--bits", "4", "--signs",
                     "--no-plots", "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    clipped = sum(l["clipped"] for l in rep["layers"])
    zeroed = sum(l["zeroed_unsigned"] for l in rep["layers"])
    assert zeroed > 0
    assert f"values clipped on the calibration set: {clipped:,} " in out
    assert f"not counted: {zeroed:,} values below 0" in out


def _save_onnx_of(g: Graph, path):
    """ONNX file of the Gemm/Relu chain `g` (names kept)."""
    nodes, inits = [], []
    for n in g.topo_order():
        if n.op is OpType.CONSTANT:
            inits.append(numpy_helper.from_array(np.asarray(n.attrs["value"]), n.name))
        elif n.op is OpType.GEMM:
            nodes.append(helper.make_node("Gemm", n.inputs, [n.name], name=f"{n.name}_node", transB=1))
        elif n.op is OpType.RELU:
            nodes.append(helper.make_node("Relu", n.inputs, [n.name], name=f"{n.name}_node"))
    width = g.node("x").attrs["shape"][1]
    out_width = g.constant(g.node(g.outputs[0]).inputs[1]).shape[0]
    graph = helper.make_graph(nodes, g.name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info(g.outputs[0], TensorProto.FLOAT, ["N", out_width])],
                              inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


# -------------------------------------------------------------- accumulators
@pytest.mark.parametrize("lo, hi, bits", [(0, 0, 1), (-1, 0, 1), (0, 1, 2), (-128, 127, 8), (-129, 0, 9),
                                          (0, 128, 9), (-(1 << 31), (1 << 31) - 1, 32), (5, 1000, 11)])
def test_signed_bits(lo, hi, bits):
    assert signed_bits(lo, hi) == bits


@pytest.mark.parametrize("lo, hi", [(3, 2), (0.5, 1), (True, 3), ("0", 1)])
def test_signed_bits_rejects_bad_bounds(lo, hi):
    from aidge_lite.errors import InputError

    with pytest.raises(InputError, match="signed_bits: lo and hi"):
        signed_bits(lo, hi)


def test_accumulator_range_and_bits(calib):
    g = one_gemm()
    q = aidge_lite.quantize_network(g, calib, nb_bits=8)
    rep = report.quantization_report(g, q, calib, calib[:8], None, sqnr_samples=0)
    (acc,) = rep["accumulators"]
    env = ReferenceInterpreter().run(q, calib, intermediates=True)
    gemm = _gemms(q)[0].name
    assert (acc["min"], acc["max"]) == (int(env[gemm].min()), int(env[gemm].max()))
    assert acc["bits"] == signed_bits(acc["min"], acc["max"]) and acc["acc_bits"] == 32
    # worst case by hand: int8 input in [-128, 127] (input quantizer), integer weights and bias
    wq = q.constant(_gemms(q)[0].inputs[1]).astype(np.int64)
    bq = q.constant(_gemms(q)[0].inputs[2]).astype(np.int64)
    hi = max(int(bq[c]) + sum(max(int(w) * -128, int(w) * 127) for w in wq[c]) for c in range(2))
    lo = min(int(bq[c]) + sum(min(int(w) * -128, int(w) * 127) for w in wq[c]) for c in range(2))
    assert (acc["bound_min"], acc["bound_max"]) == (lo, hi)
    assert acc["bound_bits"] == signed_bits(lo, hi) and acc["min"] >= lo and acc["max"] <= hi
    assert "## Accumulators" in report.markdown(rep)


def test_accumulator_wider_than_the_target_is_flagged():
    """A 16-bit accumulator with saturation: the observed range (before saturating) needs more."""
    big = np.full((2, 64), 1.0, np.float32)
    g = one_gemm(big, np.zeros(2, np.float32))
    x = np.abs(np.random.default_rng(1).normal(0, 1, (32, 64))).astype(np.float32)
    with pytest.warns(UserWarning, match="exceed int16"):
        q = aidge_lite.quantize_network(g, x, nb_bits=8, target=aidge_lite.Target(acc_bits=16, overflow="saturate"))
        rep = report.quantization_report(g, q, x, x[:4], None, sqnr_samples=0)
    (acc,) = rep["accumulators"]
    assert acc["acc_bits"] == 16 and acc["bits"] > 16 and acc["max"] > (1 << 15)
    assert f"**{acc['bits']}** (> 16)" in report.markdown(rep)


# ------------------------------------------------------ ONNX keys, real scale
def _onnx_mlp(path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 1, (4, 5)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 5).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 1, (5, 3)).astype(np.float32), "W2"),
             numpy_helper.from_array(rng.normal(0, 0.1, 3).astype(np.float32), "b2")]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["t_mm1"], name="mm1"),
             helper.make_node("Add", ["t_mm1", "b1"], ["t_bias1"], name="bias1"),
             helper.make_node("Relu", ["t_bias1"], ["t_relu1"], name="relu1"),
             helper.make_node("MatMul", ["t_relu1", "W2"], ["t_mm2"], name="mm2"),
             helper.make_node("Add", ["t_mm2", "b2"], ["logits"], name="bias2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_rows_are_keyed_by_the_onnx_node_and_real_scale_is_one_over_f(tmp_path):
    _onnx_mlp(tmp_path / "mlp.onnx")
    g = aidge_lite.load_onnx(tmp_path / "mlp.onnx")
    x = np.random.default_rng(1).normal(0, 1, (100, 4)).astype(np.float32)
    q = aidge_lite.quantize_network(g, x, nb_bits=8)
    rep = report.quantization_report(g, q, x, x[:20], None, sqnr_samples=32)
    keys = {l["role"]: (l["onnx_node"], l["onnx_tensor"]) for l in rep["layers"] if l["role"] != "affine"}
    assert keys == {"input": ("(graph input x)", "x")}
    affine = [(l["onnx_node"], l["onnx_tensor"]) for l in rep["layers"] if l["role"] == "affine"]
    assert affine == [("mm1 + bias1", "t_bias1"), ("mm2 + bias2", "logits")]
    assert [w["onnx_node"] for w in rep["weights"]] == ["mm1 + bias1", "mm2 + bias2"]
    assert [a["onnx_node"] for a in rep["accumulators"]] == ["mm1 + bias1", "mm2 + bias2"]
    # real = q * real_scale: the output's real scale dequantizes the integer engine's output
    out = next(l for l in rep["layers"] if l["onnx_tensor"] == "logits")
    ints = aidge_lite.run(q, x[:20], engine="integer")[q.outputs[0]]
    floats = aidge_lite.dequantize(q, {q.outputs[0]: ints})[q.outputs[0]]
    assert np.allclose(ints * out["real_scale"], floats, rtol=1e-12, atol=0)
    assert out["zero_point"] == 0
    text = report.markdown(rep)
    assert "| mm2 + bias2 | `" in text and "| (graph input x) | `" in text


# -------------------------------------------------------------- plot titles
def test_plot_titles_fit_their_figures(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from aidge_lite import plots

    g = gemm_relu_gemm()
    x = np.random.default_rng(5).normal(0, 1, (60, 4)).astype(np.float32)
    q = aidge_lite.quantize_network(g, x, nb_bits=4, preset="best", cle=True, single_shift=True)
    rep = report.quantization_report(g, q, x, x[:10], None, sqnr_samples=32)
    rep["model_spec"] = "/a/very/long/directory/" * 6 + "a_model_with_a_rather_long_file_name_v2_final.onnx"
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, plt: figures.append(fig) or path)
    plots.plot_sqnr(rep, tmp_path / "s.png")
    plots.plot_histograms(rep, tmp_path / "h.png")
    assert len(figures) == 2
    for fig in figures:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        titles = [ax.title for ax in fig.axes] + ([fig._suptitle] if fig._suptitle is not None else [])
        titles = [t for t in titles if t.get_text()]
        assert titles
        for title in titles:
            box = title.get_window_extent(renderer)
            assert box.x0 >= -1 and box.x1 <= fig.bbox.width + 1, title.get_text()
        assert all("/a/very" not in t.get_text() for t in titles)  # the file name, not the path
        plt.close(fig)
