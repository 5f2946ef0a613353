"""cross_layer_equalization: float invariance, equalised ranges, pair discovery and
must-not-fire cases (torch.ao `test_equalize` style: equalise a copy, compare)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import aidge_lite
from aidge_lite import evaluate, report
from aidge_lite.ir import OpType
from aidge_lite.ptq import PTQConfig, run_pipeline
from aidge_lite.ptq.cross_layer_equalization import (
    TARGET_DELTA, cross_layer_equalization, equalization_pairs, input_channel_index)
from aidge_lite.ptq.prepare import prepare

from . import opt_builders as O

CHAINS = {
    "fc_relu_chain": (O.fc_chain, (6,), [("fc1", "fc2"), ("fc2", "fc3")]),
    "conv_pool_depthwise": (O.conv_dw_chain, (2, 8, 8), [("conv1", "dw"), ("dw", "conv3")]),
    "conv_flatten_gemm": (O.conv_flatten_gemm, (1, 6, 6), [("conv1", "fc")]),
}


def _inputs(shape, n=32, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal((n, *shape)) * scale).astype(np.float32)


def prepared(graph):
    g = graph.copy()
    run_pipeline(g, PTQConfig(), passes=(prepare,))
    return g


def equalized(graph, per_channel, compat=None):
    """CLE alone after prepare. Per-tensor CLE exists only as compat='aidge' (the pass always
    equalises per channel otherwise: per-tensor CLE is undone by per-tensor normalisation)."""
    compat = compat if per_channel else "aidge"
    g = graph.copy()
    reports = run_pipeline(g, PTQConfig(cle=True, per_channel=per_channel, compat=compat),
                           passes=(prepare, cross_layer_equalization))
    return g, reports[-1]


def pair_ranges(graph, a, b, per_channel):
    """(ranges of A's output channels, ranges of B's matching input channels) — independent of
    the pass's helpers except for the channel -> weight-slice map."""
    wa = np.abs(graph.constant(graph.node(a).inputs[1]).astype(np.float64))
    wb = np.abs(graph.constant(graph.node(b).inputs[1]).astype(np.float64))
    if not per_channel:
        return np.array([wa.max()]), np.array([wb.max()])
    r1 = wa.reshape(wa.shape[0], -1).max(axis=1)
    index = input_channel_index(wb, graph.node(b).attrs.get("group", 1), wa.shape[0])
    return r1, np.array([wb[rows, cols].max() for rows, cols in index])


def assert_same_outputs(g1, g2, x):
    """Float outputs unchanged to rtol 1e-5 (atol relative to the output's peak)."""
    for name in g1.outputs:
        a = aidge_lite.run(g1, x, dtype=np.float64)[name]
        b = aidge_lite.run(g2, x, dtype=np.float64)[name]
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())


# ---------------------------------------------------------------- invariance
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("chain", list(CHAINS))
def test_chain_invariance_and_equal_ranges(chain, per_channel):
    builder, shape, pairs = CHAINS[chain]
    g = builder()
    base = prepared(g)
    eq, report = equalized(g, per_channel)
    assert equalization_pairs(base) == pairs
    assert report.modified and report.notes["pairs"] == pairs
    assert report.notes["final_delta"] < TARGET_DELTA
    assert_same_outputs(base, eq, _inputs(shape))
    for a, b in pairs:
        before = pair_ranges(base, a, b, per_channel)
        r1, r2 = pair_ranges(eq, a, b, per_channel)
        live = (before[0] > 0) & (before[1] > 0)
        # every pair equalised (to the sweep's delta, plus the drift of the last sweep's later pairs)
        assert np.max(np.abs(r1 - r2)[live]) < 2 * TARGET_DELTA, (a, b, r1, r2)
        assert np.max(np.abs(before[0] - before[1])[live]) > 0.1  # there was work to do
        np.testing.assert_array_equal(r1[~live], before[0][~live])  # zero channels: s = 1
    for name, value in O.weights_of(eq).items():
        assert np.all(np.isfinite(value)), name


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_zero_channel_stays_zero_and_invariant(per_channel):
    g = O.fc_with_zero_channel()
    base = prepared(g)
    eq, report = equalized(g, per_channel)
    assert report.notes["pairs"] == [("fc1", "fc2")]
    assert np.all(eq.constant("fc1_w")[2] == 0)
    if per_channel:  # the dead channel keeps s = 1
        np.testing.assert_array_equal(eq.constant("fc2_w")[:, 2], base.constant("fc2_w")[:, 2])
    for name, value in O.weights_of(eq).items():
        assert np.all(np.isfinite(value)), name
    assert_same_outputs(base, eq, _inputs((4,)))
    r1, r2 = pair_ranges(eq, "fc1", "fc2", per_channel)
    live = r1 > 0
    assert np.max(np.abs(r1 - r2)[live]) < 2 * TARGET_DELTA


def test_zero_channel_does_not_block_convergence():
    _, report = equalized(O.fc_with_zero_channel(), per_channel=True)
    assert report.notes["final_delta"] < TARGET_DELTA
    assert report.notes["sweeps"] < 50


def test_per_tensor_geometric_mean_three_layer_chain():
    """Per tensor, each pair update keeps r1 * r2 * r3; at convergence every layer's range is
    the geometric mean of the original ranges (aidge-ptq.md §4.3)."""
    g = O.fc_chain()
    base = prepared(g)
    original = [float(np.abs(base.constant(f"fc{i}_w")).max()) for i in (1, 2, 3)]
    eq, report = equalized(g, per_channel=False)
    final = [float(np.abs(eq.constant(f"fc{i}_w")).max()) for i in (1, 2, 3)]
    geo = float(np.prod(original) ** (1 / 3))
    print(f"per-tensor CLE: ranges {np.round(original, 4)} -> {np.round(final, 4)} "
          f"(geometric mean {geo:.4f}), {report.notes['sweeps']} sweeps, "
          f"final delta {report.notes['final_delta']:.5f}")
    assert max(original) / min(original) > 20  # far apart to start with
    assert np.prod(final) == pytest.approx(np.prod(original), rel=1e-5)
    np.testing.assert_allclose(final, geo, atol=TARGET_DELTA)
    assert 1 < report.notes["sweeps"] < 50 and report.notes["final_delta"] < TARGET_DELTA


def test_final_layer_bias_untouched_first_bias_scaled():
    g = O.fc_chain()
    base = prepared(g)
    eq, _ = equalized(g, per_channel=True)
    np.testing.assert_array_equal(eq.constant("fc3_b"), base.constant("fc3_b"))
    s1 = np.abs(eq.constant("fc1_w")).max(axis=1) / np.abs(base.constant("fc1_w")).max(axis=1)
    np.testing.assert_allclose(eq.constant("fc1_b"), base.constant("fc1_b") * s1, rtol=1e-5)


# ------------------------------------------------------------ must not fire
@pytest.mark.parametrize("kind", [OpType.SIGMOID, OpType.TANH])
def test_not_through_sigmoid_or_tanh(kind):
    g = O.fc_pair_through(kind)
    assert equalization_pairs(g) == []
    before = O.weights_of(g)
    # prepare refuses Sigmoid/Tanh: run CLE alone on the (already canonical) graph
    report = cross_layer_equalization(g, PTQConfig(cle=True, per_channel=True))
    assert report.modified is False and report.notes["pairs"] == []
    for name, value in O.weights_of(g).items():
        np.testing.assert_array_equal(value, before[name])


def test_relu_control_pair_found():
    g = O.fc_pair_through(OpType.RELU)
    assert equalization_pairs(g) == [("fc1", "fc2")]
    base = prepared(g)
    eq, report = equalized(g, per_channel=True)
    assert report.modified
    assert not np.array_equal(eq.constant("fc1_w"), base.constant("fc1_w"))
    assert_same_outputs(base, eq, _inputs((4,)))


@pytest.mark.parametrize("builder", [O.fc_pair_through_add, O.fc_pair_second_reader],
                         ids=["through_add", "second_reader"])
def test_not_through_add_or_shared_middle_tensor(builder):
    g = builder()
    base = prepared(g)
    assert equalization_pairs(base) == []
    eq, report = equalized(g, per_channel=True)
    assert report.modified is False
    for name, value in O.weights_of(eq).items():
        np.testing.assert_array_equal(value, O.weights_of(base)[name])


def test_branching_graph_pairs_found_unless_compat_aidge():
    g = O.branching_with_chain()
    base = prepared(g)
    assert equalization_pairs(base) == [("fc_a", "fc_b")]
    eq, report = equalized(g, per_channel=True)
    assert report.notes["pairs"] == [("fc_a", "fc_b")]
    assert_same_outputs(base, eq, _inputs((4,)))
    r1, r2 = pair_ranges(eq, "fc_a", "fc_b", True)
    assert np.max(np.abs(r1 - r2)) < 2 * TARGET_DELTA
    # fc_c / fc_out (inside the branch) never touched
    for name in ("fc_c_w", "fc_c_b", "fc_out_w", "fc_out_b"):
        np.testing.assert_array_equal(eq.constant(name), base.constant(name))

    skipped, report = equalized(g, per_channel=True, compat="aidge")
    assert report.modified is False and "skipped" in report.notes
    for name, value in O.weights_of(skipped).items():
        np.testing.assert_array_equal(value, O.weights_of(base)[name])


def test_compat_aidge_still_equalizes_a_chain():
    eq, report = equalized(O.fc_chain(), per_channel=False, compat="aidge")
    assert report.modified and report.notes["pairs"] == [("fc1", "fc2"), ("fc2", "fc3")]


def test_off_by_default():
    g = O.fc_chain()
    base = prepared(g)
    run_pipeline(g, PTQConfig(), passes=(prepare, cross_layer_equalization))
    for name, value in O.weights_of(g).items():
        np.testing.assert_array_equal(value, O.weights_of(base)[name])


# ----------------------------------------------------------------------- zoo
@pytest.mark.parametrize("name", ["mobilenet_tiny", "resnet_tiny"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_zoo_invariance(name, per_channel):
    if not per_channel and name == "resnet_tiny":
        pytest.skip("per-tensor CLE is compat='aidge' only, which skips branching graphs")
    g = O.zoo_model(name)
    base = prepared(g)
    pairs = equalization_pairs(base)
    assert pairs, f"{name}: no equalisation pair found"
    eq, report = equalized(g, per_channel)
    assert report.notes["pairs"] == pairs and report.notes["final_delta"] < TARGET_DELTA
    x, _ = O.spread_subset(O.zoo_data(name), 16)
    assert_same_outputs(base, eq, O.f32(x))
    changed = [a for a, _ in pairs if not np.array_equal(eq.constant(eq.node(a).inputs[1]),
                                                         base.constant(base.node(a).inputs[1]))]
    print(f"{name} {'per-channel' if per_channel else 'per-tensor'} CLE: {len(pairs)} pairs, "
          f"{report.notes['sweeps']} sweeps, final delta {report.notes['final_delta']:.5f}, "
          f"{len(changed)} first layers changed")
    assert changed
    if name == "resnet_tiny":  # branching graph: compat='aidge' would skip it entirely
        _, skipped = equalized(g, per_channel, compat="aidge")
        assert skipped.modified is False and "skipped" in skipped.notes


# ------------------------------------------------- CLE inside quantize_network
def _min_row_peak(qgraph, name):
    """Smallest per-output-channel max |W_int| of affine node `name` (weight-grid utilisation)."""
    w = np.abs(qgraph.constant(qgraph.node(name).inputs[1]).astype(np.int64))
    return int(w.reshape(w.shape[0], -1).max(axis=1).min())


def test_cle_improves_per_tensor_quantization():
    g = O.conv_dw_chain()
    x = _inputs((2, 8, 8), n=64)
    plain = aidge_lite.quantize_network(g, x)
    with_cle = aidge_lite.quantize_network(g, x, cle=True)
    assert _min_row_peak(plain, "dw") <= 10
    assert _min_row_peak(with_cle, "dw") >= 4 * _min_row_peak(plain, "dw")


# ------------------------------------------- the MobileNet pathology, for real
#: A mobilenet_tiny from models/train/mobilenet_seed_study.py (seed 6), kept *because* it has the
#: problem CLE exists for: a dead channel whose depthwise BN variance is ~0, so folding the BN
#: multiplies that channel's weights ~1000x over the others'. 1 seed of 8 trains into it, so
#: it is a test fixture, not the zoo's mobilenet_tiny (bench/results/mobilenet_seed_study.md).
DEAD_CHANNEL = Path(__file__).resolve().parents[1] / "data" / "mobilenet_dead_channel.onnx"


def _depthwise_peak_spread(graph):
    """Largest max/min over the output channels of a depthwise conv of their max |w|."""
    spreads = []
    for node in graph.nodes():
        if node.op is OpType.CONV and node.attrs.get("group", 1) > 1:
            weight = np.abs(graph.constant(node.inputs[1]))
            peak = weight.reshape(len(weight), -1).max(axis=1)
            spreads.append(peak.max() / max(peak.min(), 1e-30))
    return max(spreads)


def test_cle_repairs_a_dead_depthwise_channel():
    g = aidge_lite.load_onnx(DEAD_CHANNEL)
    data = O.zoo_data("mobilenet_tiny")
    calib, (tx, ty) = O.f32(data.calib_x), O.spread_subset(data, 500)
    assert _depthwise_peak_spread(prepared(g)) > 500  # BN folded in: the outlier channel
    float_acc = evaluate.accuracy(g, tx, ty)
    acc, zeroed = {}, {}
    for cle in (False, True):
        q = aidge_lite.quantize_network(g, calib, cle=cle)
        cmp = evaluate.compare_engines(q, tx)
        np.testing.assert_array_equal(cmp["integer"], cmp["reference"])
        acc[cle] = evaluate.top1(cmp["integer"], ty)
        zeroed[cle] = report.zeroed_weight_channels(q, report.float_reference(g, q))
    print(f"dead-channel mobilenet, 8 bits per-tensor on {len(ty)} images: float {float_acc:.4f}, "
          f"no CLE {acc[False]:.4f}, CLE {acc[True]:.4f}")
    assert acc[False] < float_acc - 0.5  # the other channels of that layer round to zero
    assert acc[True] >= float_acc - 0.01
    # the report names the layer: the other 31 channels of that depthwise conv are all zeros
    assert zeroed[False] == [{"node": "/blocks/blocks.1/dw/dw.0/Conv_output_0", "channels": 32, "zeroed": 31}]
    assert zeroed[True] == []
