"""normalize_parameters and normalize_activations: exact arithmetic (aidge-ptq.md §3).

Expectations are computed with plain NumPy from the original float32 weights,
never from the implementation; the calibrated ranges are checked against an
independent NumPy forward and then used (as stored in meta["range"]) to check
the activation scales exactly (<= 2 ulp).
"""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite.ir import OpType
from aidge_lite.ir.node import META_RANGE
from aidge_lite.ptq import PTQConfig, run_pipeline
from aidge_lite.ptq.calibrate import calibrate
from aidge_lite.ptq.calibration_data import CalibrationSet
from aidge_lite.ptq.insert_scaling import insert_scaling
from aidge_lite.ptq.normalize_activations import normalize_activations
from aidge_lite.ptq.normalize_parameters import normalize_parameters
from aidge_lite.ptq.prepare import prepare

from . import builders as B

ULP = 2
W = {k: (w.astype(np.float64), b.astype(np.float64)) for k, (w, b) in B.MLP_WEIGHTS.items()}
ALPHA = {k: float(np.abs(w).max()) for k, (w, _) in W.items()}
FCS = ("fc1", "fc2", "fc3")
X = B.mlp_calibration()


def cfg(x=X, **kw):
    return PTQConfig(calibration=CalibrationSet(x), nb_bits=8, **kw)


def mlp_after(passes, x=X):
    graph = B.mlp3()
    run_pipeline(graph, cfg(x), passes=passes)
    return graph


def assert_ulp(actual, expected, maxulp=ULP):
    np.testing.assert_array_max_ulp(np.asarray(actual, np.float64), np.asarray(expected, np.float64), maxulp)


def scale(graph, name):
    return graph.node(name).attrs["scale"]


def ranges(graph):
    return {n.name: n.meta[META_RANGE] for n in graph.topo_order() if META_RANGE in n.meta}


def test_hand_picked_alphas():
    assert ALPHA == {"fc1": 1.5, "fc2": pytest.approx(0.8), "fc3": pytest.approx(2.6)}


# ------------------------------------------------------------ normalize_parameters
def test_normalize_parameters_mlp():
    g = mlp_after((prepare, insert_scaling, normalize_parameters))
    cumulative = 1.0
    for fc in FCS:
        w, b = W[fc]
        cumulative *= ALPHA[fc]
        np.testing.assert_array_equal(g.constant(f"{fc}_w"), w / ALPHA[fc])       # W_k / alpha_k
        assert_ulp(g.constant(f"{fc}_b"), b / cumulative)                           # b / (a1 ... ak)
        assert np.abs(g.constant(f"{fc}_w")).max() == 1.0
        assert_ulp(g.node(fc).attrs["weight_scale"], 1.0 / ALPHA[fc])
    for name in ("x_scaling", "fc1_scaling", "fc2_scaling", "fc3_scaling"):
        assert scale(g, name) == 1.0  # scaling nodes stay at 1 on a chain
    # the network output is now ref / (a1 a2 a3)
    out = aidge_lite.run(g, X, dtype=np.float64)["fc3_scaling"]
    ref = B.mlp_forward(X)["fc3"]
    np.testing.assert_allclose(out, ref / (ALPHA["fc1"] * ALPHA["fc2"] * ALPHA["fc3"]), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("gain", [1.0, 100.0], ids=["fc2_small", "fc2_large"])
def test_normalize_parameters_max_arbitration(gain):
    """At a join the smaller accumulated factor is multiplied up on its private rescaler."""
    graph = B.residual_mlp(fc2_gain=gain)
    a1 = float(np.abs(graph.constant("fc1_w").astype(np.float64)).max())
    a2 = float(np.abs(graph.constant("fc2_w").astype(np.float64)).max())
    run_pipeline(graph, cfg(np.random.default_rng(1).standard_normal((32, 4))),
                 passes=(prepare, insert_scaling, normalize_parameters))
    skip, main = 1.0 / a1, 1.0 / (a1 * a2)
    common = max(skip, main)
    if gain == 1.0:  # a2 = 0.07 < 1: the fc2 branch arrives larger, the residual one is raised
        assert main > skip
        assert_ulp(scale(graph, "add_res1"), common / skip)   # = 1 / a2
        assert scale(graph, "fc2_scaling") == 1.0
    else:            # a2 = 7 > 1: the fc2 branch is raised by a2 (the reference's fc2_Scaling = a2)
        assert skip > main
        assert_ulp(scale(graph, "fc2_scaling"), common / main)  # = a2
        assert scale(graph, "add_res1") == 1.0
    assert scale(graph, "add_scaling") == 1.0
    # fc3's bias carries the join's common factor times 1/a3
    a3 = float(np.abs(B.RES_WEIGHTS["fc3"][0].astype(np.float64)).max())
    assert_ulp(graph.constant("fc3_b"), B.RES_WEIGHTS["fc3"][1].astype(np.float64) * common / a3, 4)


def test_all_zero_weights_keep_alpha_one():
    weights = dict(B.MLP_WEIGHTS)
    weights["fc2"] = (np.zeros((3, 4), np.float32), B.MLP_WEIGHTS["fc2"][1])
    graph = B.mlp3(weights)
    run_pipeline(graph, cfg(), passes=(prepare, insert_scaling, normalize_parameters))
    np.testing.assert_array_equal(graph.constant("fc2_w"), 0.0)
    assert graph.node("fc2").attrs["weight_scale"] == 1.0
    assert_ulp(graph.constant("fc2_b"), W["fc2"][1] / ALPHA["fc1"])


def test_per_channel_zero_channel():
    weights = dict(B.MLP_WEIGHTS)
    w2 = B.MLP_WEIGHTS["fc2"][0].copy()
    w2[1] = 0.0
    weights["fc2"] = (w2, B.MLP_WEIGHTS["fc2"][1])
    graph = B.mlp3(weights)
    run_pipeline(graph, cfg(per_channel=True), passes=(prepare, insert_scaling, normalize_parameters))
    alphas = np.abs(w2.astype(np.float64)).max(axis=1)
    alphas[1] = 1.0
    np.testing.assert_array_equal(graph.constant("fc2_w"), w2.astype(np.float64) / alphas[:, None])
    assert np.all(np.isfinite(graph.node("fc2").attrs["weight_scale"]))
    for node in graph.topo_order():
        if node.op is OpType.SCALING:
            assert np.all(np.isfinite(node.attrs["scale"])) and np.all(np.asarray(node.attrs["scale"]) > 0)


# ----------------------------------------------------------------------- calibrate
def test_calibrated_ranges_match_numpy():
    g = mlp_after((prepare, insert_scaling, normalize_parameters, calibrate))
    ref = B.mlp_forward(X)
    a1, a2, a3 = ALPHA["fc1"], ALPHA["fc2"], ALPHA["fc3"]
    r = ranges(g)
    expected = {
        "x": np.abs(X).max(), "x_scaling": np.abs(X).max(),
        "fc1_scaling": np.abs(ref["fc1"]).max() / a1,
        "relu1": np.abs(ref["relu1"]).max() / a1,
        "fc2_scaling": np.abs(ref["fc2"]).max() / (a1 * a2),
        "fc3_scaling": np.abs(ref["fc3"]).max() / (a1 * a2 * a3),
    }
    for name, value in expected.items():
        assert r[name] == pytest.approx(value, rel=1e-12), name
    assert g.meta["calibration_samples"] == len(X)
    assert g.node("fc1").meta["min"] == pytest.approx(ref["fc1"].min() / a1, rel=1e-12)


# ------------------------------------------------------------ normalize_activations
def test_normalize_activations_mlp():
    g = mlp_after((prepare, insert_scaling, normalize_parameters, calibrate, normalize_activations))
    r = ranges(g)
    # ranges are max|x| at each scaling node's output, checked against NumPy
    ref = B.mlp_forward(X)
    a1, a2, a3 = ALPHA["fc1"], ALPHA["fc2"], ALPHA["fc3"]
    r_in, r1, r2, r3 = r["x_scaling"], r["fc1_scaling"], r["fc2_scaling"], r["fc3_scaling"]
    assert r_in == np.abs(X.astype(np.float64)).max()
    assert r1 == pytest.approx(np.abs(ref["fc1"]).max() / a1, rel=1e-12)
    assert r3 == pytest.approx(np.abs(ref["fc3"]).max() / (a1 * a2 * a3), rel=1e-12)
    # s_k <- s_k * r_prev / r_k (the input scaling node: 1 / max|input|)
    assert_ulp(scale(g, "x_scaling"), 1.0 / r_in)
    assert_ulp(scale(g, "fc1_scaling"), r_in / r1)
    assert_ulp(scale(g, "fc2_scaling"), r1 / r2)
    assert_ulp(scale(g, "fc3_scaling"), r2 / r3)
    # bias / r_prev, on top of / (a1 ... ak)
    assert_ulp(g.constant("fc1_b"), W["fc1"][1] / a1 / r_in)
    assert_ulp(g.constant("fc2_b"), W["fc2"][1] / (a1 * a2) / r1, 4)
    assert_ulp(g.constant("fc3_b"), W["fc3"][1] / (a1 * a2 * a3) / r2, 4)
    # weights untouched by this pass
    for fc in FCS:
        np.testing.assert_array_equal(g.constant(f"{fc}_w"), W[fc][0] / ALPHA[fc])
    # every scaling node's output is in [-1, 1] on the calibration set, with max exactly reached
    env = aidge_lite.run(g, X, dtype=np.float64, intermediates=True)
    for name in ("x_scaling", "fc1_scaling", "fc2_scaling", "fc3_scaling"):
        assert np.abs(env[name]).max() == pytest.approx(1.0, rel=1e-12), name
    # the output is ref / max_calib |ref|
    np.testing.assert_allclose(env["fc3_scaling"], ref["fc3"] / np.abs(ref["fc3"]).max(), rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("gain", [1.0, 100.0], ids=["fc2_small", "fc2_large"])
def test_normalize_activations_join_alignment(gain):
    """At a join every operand is aligned to the max of the operand ranges (aidge-ptq.md §3)."""
    graph = B.residual_mlp(fc2_gain=gain)
    x = np.random.default_rng(1).standard_normal((32, 4))
    run_pipeline(graph, cfg(x), passes=(prepare, insert_scaling, normalize_parameters, calibrate))
    before = {n.name: n.attrs["scale"] for n in graph.topo_order() if n.op is OpType.SCALING}
    r = ranges(graph)
    normalize_activations(graph, cfg(x))
    common = max(r["fc2_scaling"], r["add_res1"])
    # each operand: s * r_prev / r_own, then * r_own / common when its range is below the max
    assert_ulp(scale(graph, "fc2_scaling"),
               before["fc2_scaling"] * r["fc1_scaling"] / r["fc2_scaling"] * (r["fc2_scaling"] / common))
    assert_ulp(scale(graph, "add_res1"),
               before["add_res1"] * r["fc1_scaling"] / r["add_res1"] * (r["add_res1"] / common))
    assert_ulp(scale(graph, "add_scaling"), before["add_scaling"] * common / r["add_scaling"])
    assert_ulp(scale(graph, "fc3_scaling"), r["add_scaling"] / r["fc3_scaling"])
    # the reference's "relu1_Res got r(fc1)/r(fc2)": with scaling nodes at 1 on the residual branch
    if before["add_res1"] == 1.0 and r["add_res1"] < r["fc2_scaling"]:
        assert_ulp(scale(graph, "add_res1"), r["fc1_scaling"] / r["fc2_scaling"])
    # both operands now arrive with the same factor relative to the float graph
    float_env = aidge_lite.run(B.residual_mlp(fc2_gain=gain), x, dtype=np.float64, intermediates=True)
    env = aidge_lite.run(graph, x, dtype=np.float64, intermediates=True)
    ratio_main = B.ratios(env["fc2_scaling"], float_env["fc2"])
    ratio_skip = B.ratios(env["add_res1"], float_env["relu1"])
    assert ratio_main.size and ratio_skip.size
    np.testing.assert_allclose(ratio_main, ratio_main[0], rtol=1e-9)
    np.testing.assert_allclose(ratio_skip, ratio_main[0], rtol=1e-9)
    for name in ("fc2_scaling", "add_res1", "add_scaling", "fc3_scaling"):
        assert np.abs(env[name]).max() <= 1.0 + 1e-12
    assert np.abs(env["add_scaling"]).max() == pytest.approx(1.0, rel=1e-12)


def test_constant_zero_activation_keeps_range_one():
    """fc2 sees an all-zero input (relu1 never fires) and has no bias: its range is 0."""
    weights = dict(B.MLP_WEIGHTS)
    weights["fc1"] = (B.MLP_WEIGHTS["fc1"][0], np.full(4, -100.0, np.float32))
    weights["fc2"] = (B.MLP_WEIGHTS["fc2"][0], np.zeros(3, np.float32))
    graph = B.mlp3(weights)
    run_pipeline(graph, cfg(), passes=(prepare, insert_scaling, normalize_parameters, calibrate,
                                       normalize_activations))
    assert graph.node("fc2_scaling").meta[META_RANGE] == 0.0
    for node in graph.topo_order():
        if node.op is OpType.SCALING:
            assert np.isfinite(node.attrs["scale"]) and node.attrs["scale"] > 0, node.name
        if node.op is OpType.CONSTANT:
            assert np.all(np.isfinite(node.attrs["value"])), node.name
    r = ranges(graph)
    assert_ulp(scale(graph, "fc2_scaling"), r["fc1_scaling"] / 1.0)  # r_k = 0 counts as 1
    assert_ulp(scale(graph, "fc3_scaling"), 1.0 / r["fc3_scaling"])  # r_prev = 0 counts as 1
