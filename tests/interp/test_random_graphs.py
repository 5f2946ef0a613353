"""Random quantized graphs: the integer engine equals the fake-quant reference.

`aidge_lite.testing.quantizable_graphs` draws a small float graph (conv with
any kernel/stride/pads/dilation/groups, gemm, relu, pools, residual add,
concat), random weights and calibration data, a bit width (2..8, sometimes 12
or 16) and a target (any rounding, float or fixed-point rescale, 32- or 64-bit
accumulators, saturate or wrap), and quantizes it. Both engines then run a
random test batch and must agree on every tensor (integer engine with
intermediates, i.e. unfused) and on the outputs of the integer engine's
production path (no intermediates: Conv -> Quantizer fused), on every overflow
count, and the integer engine must compute in integer dtypes only.

Example counts: the main test runs max(200, profile) examples, so at least 200
in CI and 10,000 with HYPOTHESIS_PROFILE=slow; its `slow`-marked twin runs at
least 10,000 under `-m slow` (make test-slow).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aidge_lite
from aidge_lite import Graph, Node, OpType, Target
from aidge_lite.errors import GraphError
from aidge_lite.target import RESCALES
from aidge_lite.testing import (QuantizedGraphCase, assert_bit_exact, float_graphs,
                                quantizable_graphs, run_engines)

#: Main test: >= 200 examples in CI, the profile's count when larger (slow profile: 10,000).
MAX_EXAMPLES = max(200, settings.default.max_examples)
#: `-m slow` twin: >= 10,000 examples whatever the profile.
SLOW_EXAMPLES = max(10_000, settings.default.max_examples)
#: gemmlowp has its own test: it takes int32 accumulators and <= 16-bit signed / 8-bit unsigned
#: activations only (the PTQ refuses the rest by name, tests/ptq/test_gemmlowp_rescale.py).
NOT_GEMMLOWP = tuple(r for r in RESCALES if r != "gemmlowp")
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
          HealthCheck.filter_too_much]


def check_bit_exact(case: QuantizedGraphCase) -> None:
    graph = case.graph
    run = run_engines(graph, case.test_x, intermediates=True)
    assert_bit_exact(graph, run)  # every tensor, the fused production path, overflow counts
    overflows = run.integer_interp.policy.overflows
    assert len(run.warnings) == 2 * len(overflows)  # one warning per node per engine
    for node in graph.topo_order():
        if node.op in (OpType.CONSTANT, OpType.INPUT):
            continue
        value = run.integer[node.name]
        assert value.dtype.kind in "iu", (node.name, value.dtype)
        if node.op is OpType.QUANTIZER:
            assert value.dtype == np.dtype(node.attrs["dtype"]), node.name
            if value.size:
                assert node.attrs["lo"] <= value.min() and value.max() <= node.attrs["hi"]


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=HEALTH)
@given(case=quantizable_graphs())
def test_random_quantized_graphs_are_bit_exact(case):
    check_bit_exact(case)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, deadline=None, suppress_health_check=HEALTH)
@given(case=quantizable_graphs())
def test_random_quantized_graphs_are_bit_exact_slow(case):
    check_bit_exact(case)


@settings(deadline=None, suppress_health_check=HEALTH)
@given(case=quantizable_graphs(
    extended=True, rescales=NOT_GEMMLOWP, acc_bits=(16, 24, 32, 64)))
def test_random_graphs_with_every_ptq_option_are_bit_exact(case):
    """per_channel, optimize_signs (unsigned dtypes), single_shift, cle, every rescale
    mode (shift, double_shift too) and narrow accumulators (frequent overflows)."""
    check_bit_exact(case)


@settings(deadline=None, suppress_health_check=HEALTH)
@given(case=quantizable_graphs(extended=True, rescales=("gemmlowp",), acc_bits=(16, 24, 32),
                               nb_bits=st.integers(2, 8)))
def test_random_graphs_with_the_gemmlowp_rescale_are_bit_exact(case):
    """TFLite's rescale (profile "tflite") with every PTQ option, on what it takes: int32 or
    narrower accumulators, activations of 8 bits or fewer."""
    check_bit_exact(case)


@settings(max_examples=50, deadline=None, suppress_health_check=HEALTH)
@given(case=float_graphs())
def test_float_graph_strategy_draws_valid_graphs(case):
    aidge_lite.verify(case.graph)
    x = np.random.default_rng(0).normal(size=(2, *case.input_shape)).astype(np.float32)
    out = aidge_lite.run(case.graph, x)
    assert set(out) == set(case.graph.outputs)
    assert all(np.all(np.isfinite(v)) and v.shape[0] == 2 for v in out.values())


# ---------------------------------------------------------------------------
# PTQ bugs found by the random strategies (minimal reproductions). The first two
# were fixed in ptq/ (they were strict xfails), as was the last one.
# ---------------------------------------------------------------------------

def conv_flatten_gemm() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("conv_flatten_gemm")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 1, 4, 4], "dtype": "float32"}))
    g.add_constant("w", np.array([0.5, -0.3, 0.2], np.float32).reshape(3, 1, 1, 1))
    g.add_constant("b", np.zeros(3, np.float32))
    g.add(Node("conv", OpType.CONV, ["x", "w", "b"]))
    g.add(Node("flat", OpType.FLATTEN, ["conv"], {"axis": 1}))
    g.add_constant("wf", rng.normal(size=(2, 48)).astype(np.float32))
    g.add_constant("bf", np.zeros(2, np.float32))
    g.add(Node("fc", OpType.GEMM, ["flat", "wf", "bf"], {"transB": 1}))
    g.outputs = ["fc"]
    return g


@pytest.mark.parametrize("rescale", ["fixed_point", "shift", "double_shift"])
def test_per_channel_int_rescale_before_gemm_quantizes(rescale):
    rng = np.random.default_rng(1)
    calib = rng.normal(size=(4, 1, 4, 4)).astype(np.float32)
    q = aidge_lite.quantize_network(conv_flatten_gemm(), calib, per_channel=True,
                                    target=Target(rescale=rescale))
    x = rng.normal(size=(3, 1, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(aidge_lite.run(q, x, engine="integer")["fc"].astype(np.float64),
                                  aidge_lite.run(q, x)["fc"])


def wide_gemm_16bit(rounding="half_away"):
    """A 64-input Gemm with same-sign weights, quantized at 16 bits, fixed-point rescale."""
    rng = np.random.default_rng(3)
    g = Graph("wide_gemm")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 64], "dtype": "float32"}))
    g.add_constant("w", rng.uniform(0.5, 1.0, size=(3, 64)).astype(np.float32))  # same signs:
    g.add_constant("b", np.zeros(3, np.float32))                                  # sums add up
    g.add(Node("fc", OpType.GEMM, ["x", "w", "b"], {"transB": 1}))
    g.outputs = ["fc"]
    calib = rng.uniform(-1.0, 1.0, size=(8, 64)).astype(np.float32)
    return aidge_lite.quantize_network(
        g, calib, nb_bits=16, target=Target(rescale="fixed_point", acc_bits=64, rounding=rounding))


@pytest.mark.parametrize("rounding", ["half_away", "half_even", "floor"])
def test_16_bit_fixed_point_products_beyond_int64_are_exact(rounding):
    # Found by the slow profile: 16-bit operands, an int64 accumulator, inputs far past the
    # calibrated range. |acc| >= 2^32 times a Q31 multiplier leaves int64; both engines
    # must still agree (the kernel forms the product in two words, the twin in Python ints).
    q = wide_gemm_16bit(rounding)
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.uniform(-1.0, 1.0, size=(3, 64)), np.full((2, 64), 50.0)]).astype(np.float32)
    run = run_engines(q, x, intermediates=True)
    assert_bit_exact(q, run)
    assert float(np.abs(run.reference["fc_pre"]).max()) >= 2.0 ** 32  # the two-word product ran


def test_fixed_point_multiplier_of_2_to_31_is_refused_by_name():
    q = wide_gemm_16bit()
    q.node("fc").attrs["multiplier"] = 1 << 31  # outside the Q31 range the kernels take
    x = np.ones((1, 64), np.float32)
    for engine in ("reference", "integer"):  # refused up front by ir.validate, in both engines
        with pytest.raises(GraphError, match="node 'fc'.*2\\^31"):
            aidge_lite.run(q, x, engine=engine)


def test_per_channel_nearly_dead_channel_fits_int32():
    rng = np.random.default_rng(0)
    g = Graph("nearly_dead")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 8], "dtype": "float32"}))
    w = rng.normal(size=(4, 8)).astype(np.float32)
    w[1] *= 1e-9
    g.add_constant("w", w)
    g.add_constant("b", rng.normal(size=4).astype(np.float32))
    g.add(Node("fc", OpType.GEMM, ["x", "w", "b"], {"transB": 1}))
    g.outputs = ["fc"]
    calib = rng.normal(size=(16, 8)).astype(np.float32)
    x = rng.normal(size=(4, 8)).astype(np.float32)
    per_tensor = aidge_lite.quantize_network(g, calib)
    aidge_lite.run(per_tensor, x, engine="integer")  # fine
    q = aidge_lite.quantize_network(g, calib, per_channel=True)
    ref, got = aidge_lite.run(q, x)["fc"], aidge_lite.run(q, x, engine="integer")["fc"]
    np.testing.assert_array_equal(got.astype(np.float64), ref)


def nearly_dead_layers() -> Graph:
    """x -> fc1 (weights ~1e-5, no bias) -> fc2 (weights ~1e-6, bias 0.05): fc2's output is
    its bias; the rescale after it is ~2^-36 (found by the slow-profile random run)."""
    rng = np.random.default_rng(0)
    g = Graph("nearly_dead_layers")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 8], "dtype": "float32"}))
    g.add_constant("w1", (rng.normal(size=(4, 8)) * 1e-5).astype(np.float32))
    g.add_constant("b1", np.zeros(4, np.float32))
    g.add(Node("fc1", OpType.GEMM, ["x", "w1", "b1"], {"transB": 1}))
    g.add_constant("w2", (rng.normal(size=(4, 4)) * 1e-6).astype(np.float32))
    g.add_constant("b2", np.full(4, 0.05, np.float32))
    g.add(Node("fc2", OpType.GEMM, ["fc1", "w2", "b2"], {"transB": 1}))
    g.outputs = ["fc2"]
    return g


@pytest.mark.parametrize("rescale", RESCALES)
def test_tiny_rescale_multiplier_is_encodable(rescale):
    """fc2's rescale is ~2^-36: its Q31 shift (67) used to be refused; it now folds into the
    multiplier (shift 62). fc2's bias dwarfs its ~1e-6 weights, so its int32 accumulator
    overflows whatever the rescale: both engines report it, and saturate identically."""
    rng = np.random.default_rng(1)
    calib = rng.normal(size=(8, 8)).astype(np.float32)
    x = rng.normal(size=(3, 8)).astype(np.float32)
    q = aidge_lite.quantize_network(nearly_dead_layers(), calib, target=Target(rescale=rescale))
    # (gemmlowp: TFLite's QuantizeMultiplier flushes it to multiplier 0, shift 0)
    assert all(np.max(n.attrs.get("shift", 0)) <= 62 for n in q.topo_order())
    for engine in ("reference", "integer"):
        with pytest.raises(aidge_lite.errors.AccumulatorOverflowError, match="fc2"):
            aidge_lite.run(q, x, engine=engine)
    saturate = Target(rescale=rescale, overflow="saturate")
    with pytest.warns(Warning):
        got = aidge_lite.run(q, x, engine="integer", target=saturate)["fc2"]
    with pytest.warns(Warning):
        ref = aidge_lite.run(q, x, target=saturate)["fc2"]
    np.testing.assert_array_equal(got.astype(np.float64), ref)
