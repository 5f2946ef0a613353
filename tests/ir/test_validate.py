"""`ir.validate`: the one validation layer both engines go through (issue 20).

Every hostile graph here is refused by both engines with the same error class naming the
same node, or runs in both to the same integers; the public kernels refuse mismatched
operands with a ValueError instead of reading past their buffers.
"""
from __future__ import annotations

import numpy as np
import pytest

from aidge_lite import kernels
from aidge_lite.errors import ExecutionError, GraphError, InputError, UnsupportedOperatorError
from aidge_lite.interp.integer import IntegerInterpreter
from aidge_lite.interp.reference import ReferenceInterpreter
from aidge_lite.ir import Graph, Node, OpType, verify
from aidge_lite.ir.validate import check_node, max_abs, validate
from tests.fuzz._saved_graph_cases import integer_graph, run_engine

RNG = np.random.default_rng(20)
X4 = RNG.normal(0, 2, (2, 3, 6, 6)).astype(np.float32)


def both(graph, x):
    """(fake-quant, integer) results: outputs dicts or (error class, node)."""
    return run_engine("reference", graph, x), run_engine("integer", graph, x)


def assert_both_refuse(graph, x, cls, node="op"):
    ref, ints = both(graph, x)
    assert isinstance(ref, tuple) and ref == ints == (cls.__name__, node), (_brief(ref), _brief(ints))


def _brief(result):
    return result if isinstance(result, tuple) else "runs"


def assert_both_run_equal(graph, x):
    ref, ints = both(graph, x)
    assert isinstance(ref, dict) and isinstance(ints, dict), (ref, ints)
    for name in ref:
        np.testing.assert_array_equal(ints[name].astype(np.float64), ref[name])
    return ref


def conv_graph(**attrs):
    base = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    return integer_graph("conv", X4.shape, {**base, **attrs}, np.random.default_rng(0),
                         w_shape=(4, 3, 3, 3))


def pool_graph(kind="maxpool", shape=X4.shape, **attrs):
    base = {"kernel_shape": [2, 2], "strides": [2, 2]}
    return integer_graph(kind, shape, {**base, **attrs}, np.random.default_rng(0))


def test_sound_graphs_run_bit_exact_in_both_engines():
    for graph in (conv_graph(), pool_graph(), pool_graph("avgpool", pads=[1, 1, 1, 1])):
        assert_both_run_equal(graph, X4)


# ------------------------------------------------------------------ geometry
@pytest.mark.parametrize("attrs", [
    {"strides": [-1, 1]}, {"strides": [0, 1]}, {"strides": [1.5, 1]}, {"strides": [1]},
    {"dilations": [0, 1]}, {"dilations": [-2, 1]}, {"pads": [-1, 0, 0, 0]}, {"pads": [1, 1]},
    {"pads": [0.5, 0, 0, 0]}, {"group": 0}, {"group": 1.0}, {"auto_pad": "SAME"},
    {"strides": [True, 1]},
], ids=str)
def test_bad_conv_geometry_refused_by_both_engines(attrs):
    assert_both_refuse(conv_graph(**attrs), X4, GraphError)


@pytest.mark.parametrize("attrs", [
    {"strides": [-3, 1], "kernel_shape": [2, 50]},  # issue 20: segfaulted / hung the int MaxPool
    {"kernel_shape": [0, 2]}, {"kernel_shape": [2.5, 2]}, {"pads": [2, 0, 0, 0]},  # pads >= kernel
    {"ceil_mode": 2}, {"dilations": [0, 1]},
], ids=str)
def test_bad_pool_geometry_refused_by_both_engines(attrs):
    assert_both_refuse(pool_graph(**attrs), X4, GraphError)
    assert_both_refuse(pool_graph("avgpool", **attrs), X4, GraphError)


def test_window_larger_than_the_padded_input_refused_by_both():
    assert_both_refuse(pool_graph(kernel_shape=[7, 2], strides=[1, 1]), X4, ExecutionError)
    assert_both_refuse(conv_graph(pads=[0, 0, 0, 0], dilations=[4, 1]), X4, ExecutionError)


def test_pool_window_entirely_in_the_padding_refused_by_both():
    # kernel 2 dilated by 3 with a pad of 1 on a 2-pixel-wide axis: one window, taps at -1 and 2
    x = np.ascontiguousarray(X4[:, :, :, :2])
    for kind in ("maxpool", "avgpool"):
        graph = pool_graph(kind, x.shape, kernel_shape=[1, 2], strides=[1, 1], dilations=[1, 3],
                           pads=[0, 1, 0, 1])
        assert_both_refuse(graph, x, ExecutionError)


def test_integer_avgpool_ceil_mode_with_count_include_pad_refused_by_both():
    """Found by the geometry fuzz: the fake-quant engine ran it, the integer engine refused."""
    graph = pool_graph("avgpool", (1, 1, 1, 1), kernel_shape=[2, 1], strides=[2, 1], ceil_mode=1,
                       count_include_pad=1, rounding="half_away")
    assert_both_refuse(graph, np.ones((1, 1, 1, 1), np.float32), UnsupportedOperatorError)


def test_kernel_shape_contradicting_the_weights_refused_by_both():
    assert_both_refuse(conv_graph(kernel_shape=[2, 2]), X4, ExecutionError)


def test_non_4d_pool_input_same_error_in_both():
    graph = integer_graph("maxpool", (2, 5), {"kernel_shape": [2, 2]}, RNG)
    ref, ints = both(graph, np.ones((2, 5), np.float32))
    assert ref == ints == ("UnsupportedOperatorError", "op")


# ------------------------------------------------------------------ quantizer parameters
def requant_graph(**attrs):
    return integer_graph("requant", X4.shape, attrs, np.random.default_rng(0))


@pytest.mark.parametrize("attrs", [
    {"multiplier": np.array([-(2**63)])},  # np.abs(-2**63) < 2**31 passed the old check
    {"multiplier": np.array([1 << 31])}, {"multiplier": np.array([2.0])},
    {"shift": np.array([63])}, {"shift": np.array([-32])},
    {"lo": 5, "hi": -5}, {"hi": 300}, {"lo": -129}, {"lo": -128.5}, {"dtype": "float32"},
    {"dtype": "int4"}, {"rounding": "up"}, {"mode": "magic"}, {"float32": 2},
], ids=lambda a: str({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in a.items()}))
def test_bad_fixed_point_quantizer_refused_by_both(attrs):
    assert_both_refuse(requant_graph(**attrs), X4, GraphError, node="y")


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -float("inf"), "0.5", []])
def test_non_finite_scale_refused_by_both(scale):
    graph = integer_graph("maxpool", X4.shape, {"kernel_shape": [2, 2]}, RNG)
    graph.node("y").attrs["scale"] = scale
    assert_both_refuse(graph, X4, GraphError, node="y")


def test_unsigned_quantizer_with_negative_lo_refused():
    node = Node("q", OpType.QUANTIZER, ["x"], {"scale": 1.0, "rounding": "floor", "lo": -1, "hi": 5,
                                               "dtype": "uint8", "signed": False})
    with pytest.raises(GraphError, match="'q'"):
        check_node(node)


def test_valid_quantizer_parameters_run_bit_exact():
    for shift in (-3, 0, 31, 62):
        assert_both_run_equal(requant_graph(multiplier=np.array([(1 << 31) - 1]),
                                            shift=np.array([shift])), X4)


# ------------------------------------------------------------------ gemm
def gemm_graph(attrs, w_shape=(3, 5), bias_shape=(3,)):
    return integer_graph("gemm", (4, 5), attrs, np.random.default_rng(1), w_shape=w_shape,
                         bias_shape=bias_shape)


X2 = RNG.normal(0, 2, (4, 5)).astype(np.float32)


@pytest.mark.parametrize("bias_shape", [(3,), (1, 3), (1,), None])
def test_gemm_bias_shapes_run_in_both_engines(bias_shape):
    """Issue 20: a (1, 10) bias ran in fake-quant and was refused by the integer engine."""
    out = assert_both_run_equal(gemm_graph({"transB": 1}, bias_shape=bias_shape), X2)
    assert out["y"].shape == (4, 3)


def test_quantized_gemm_with_a_1_by_n_bias_runs_bit_exact():
    """The issue's case end to end: quantize_network keeps the (1, N) bias; both engines run it."""
    import aidge_lite

    rng = np.random.default_rng(0)
    g = Graph("g")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 6], "dtype": "float32"}))
    g.add_constant("w", rng.normal(size=(3, 6)).astype(np.float32))
    g.add_constant("b", rng.normal(size=(1, 3)).astype(np.float32))
    g.add(Node("fc", OpType.GEMM, ["x", "w", "b"], {"transB": 1}))
    g.outputs = ["fc"]
    q = aidge_lite.quantize_network(g, rng.normal(size=(16, 6)).astype(np.float32))
    assert q.constant("b").shape == (1, 3)
    assert_both_run_equal(q, rng.normal(size=(5, 6)).astype(np.float32))


def test_gemm_bias_per_row_refused_by_both():
    assert_both_refuse(gemm_graph({"transB": 1}, bias_shape=(4, 3)), X2, ExecutionError)


def test_gemm_trans_flags_honoured_by_both_engines():
    """transB=0 with (K, N) weights and transA: the integer path used to assume transB=1."""
    assert_both_run_equal(gemm_graph({"transB": 0}, w_shape=(5, 3)), X2)
    square = gemm_graph({"transB": 0}, w_shape=(5, 5), bias_shape=(5,))
    flipped = gemm_graph({"transB": 1}, w_shape=(5, 5), bias_shape=(5,))
    a, b = assert_both_run_equal(square, X2), assert_both_run_equal(flipped, X2)
    assert not np.array_equal(a["y"], b["y"])  # the flag changes the result, in both engines
    x_t = np.ascontiguousarray(X2[:, :5].T)  # (5, 4): transA makes it (4, 5)
    graph = integer_graph("gemm", (5, 4), {"transA": 1, "transB": 1}, np.random.default_rng(1),
                          w_shape=(3, 5), bias_shape=(3,))
    assert_both_run_equal(graph, x_t)


@pytest.mark.parametrize("attrs", [{"alpha": 2.0}, {"beta": 0.5}, {"transA": 2},
                                   {"alpha": float("nan")}, {"transB": 0.5}], ids=str)
def test_gemm_float_factors_and_bad_flags_refused_by_both(attrs):
    assert_both_refuse(gemm_graph({"transB": 1, **attrs}), X2, GraphError)


# ------------------------------------------------------------------ integer graphs, inputs
def test_op_reading_the_float_input_directly_refused_by_both():
    graph = conv_graph()
    graph.set_inputs("op", ["x", "w", "b"])
    graph.remove("xq")
    assert_both_refuse(graph, X4, GraphError)


def test_float_weights_in_an_integer_graph_refused():
    graph = conv_graph()
    graph.set_constant("w", graph.constant("w").astype(np.float32) + 0.5)
    with pytest.raises(GraphError, match="'op'"):
        validate(graph)


def test_float_softmax_and_rounding_free_pool_in_an_integer_graph_refused():
    graph = pool_graph("avgpool")
    del graph.node("op").attrs["rounding"]
    assert_both_refuse(graph, X4, UnsupportedOperatorError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_an_input_error_in_both_engines(bad):
    x = X4.copy()
    x[1, 2, 3, 4] = bad
    for engine in (ReferenceInterpreter(), IntegerInterpreter()):
        with pytest.raises(InputError, match="input 'x': 1 NaN or infinite"):
            engine.run(conv_graph(), x)


def test_accumulator_beyond_exact_range_refused_by_both():
    """Tampered int64 weights whose products would wrap int64 (and leave float64's exact
    integers): both engines refuse instead of disagreeing silently."""
    graph = conv_graph()
    graph.set_constant("w", np.full((4, 3, 3, 3), 2**44, np.int64))  # 2^44 * 128 * 27 > 2^53
    assert_both_refuse(graph, X4, ExecutionError)
    graph.set_constant("w", np.full((4, 3, 3, 3), 2**20, np.int64))  # 2^20 * 128 * 27: exact
    assert_both_run_equal(graph, X4)


def test_max_abs_has_no_dtype_minimum_wrap():
    assert max_abs(np.array([-128, 5], np.int8)) == 128
    assert max_abs(np.array([-(2**63)], np.int64)) == 2**63


def test_bad_stored_target_refused():
    graph = conv_graph()
    graph.meta["target"] = {"acc_bits": 100}
    assert_both_refuse(graph, X4, GraphError, node="")


def test_verify_checks_node_attributes():
    g = Graph("g")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 1, 4, 4], "dtype": "float32"}))
    g.add(Node("p", OpType.MAXPOOL, ["x"], {"kernel_shape": [2, 2], "strides": [0, 1]}))
    g.outputs = ["p"]
    with pytest.raises(GraphError, match=r"node 'p' \(MaxPool\): strides \[0, 1\] must be >= 1"):
        verify(g)


# ------------------------------------------------------------------ kernel entry points
def test_gemm_kernel_refuses_mismatched_shapes():
    """Issue 20: gemm returned heap values for a too-short operand."""
    a, b = np.ones((2, 5), np.int8), np.ones((3, 4), np.int8)
    with pytest.raises(ValueError, match="gemm"):
        kernels.gemm(a, b, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="bias"):
        kernels.gemm(a, np.ones((5, 4), np.int8), np.zeros(3, np.int64))


def test_conv_kernel_refuses_bad_geometry_and_shapes():
    x, w, b = np.ones((1, 2, 5, 5), np.int8), np.ones((3, 2, 3, 3), np.int8), np.zeros(3, np.int64)
    good = np.array([1, 1, 0, 0, 0, 0, 1, 1, 1], np.int64)
    assert kernels.conv2d(x, w, b, good).shape == (1, 3, 3, 3)
    for bad in ([-1, 1, 0, 0, 0, 0, 1, 1, 1], [1, 1, -1, 0, 0, 0, 1, 1, 1],
                [1, 1, 0, 0, 0, 0, 0, 1, 1], [1, 1, 0, 0, 0, 0, 1, 1, 2], [1, 1, 0, 0, 0, 0, 3, 1, 1]):
        with pytest.raises(ValueError, match="conv2d"):
            kernels.conv2d(x, w, b, np.array(bad, np.int64))
    with pytest.raises(ValueError, match="bias"):
        kernels.conv2d(x, w, np.zeros(2, np.int64), good)


def test_pool_kernels_refuse_bad_geometry():
    x = np.ones((1, 1, 4, 4), np.int8)
    for bad in ([2, 50, -3, 1, 0, 0, 0, 0, 1, 1], [2, 2, 1, 1, -1, 0, 0, 0, 1, 1],
                [0, 2, 1, 1, 0, 0, 0, 0, 1, 1], [2, 2, 1, 1, 0, 0, 0, 0, 1]):
        with pytest.raises(ValueError, match="pool"):
            kernels.maxpool2d(x, np.array(bad, np.int64))
        with pytest.raises(ValueError, match="pool"):
            kernels.avgpool2d(x, np.array(bad, np.int64), False, kernels.HALF_AWAY)


def test_requant_lookup_and_add_kernels_refuse_mismatches():
    acc, out = np.ones((1, 3, 2), np.int64), np.empty((1, 3, 2), np.int8)
    bounds = np.array([-128, 127], np.int64)
    with pytest.raises(ValueError, match="requant_int"):  # 1 multiplier for 3 channels
        kernels.requant_int(acc, np.ones(1, np.int64), np.ones(3, np.int64), 0, bounds, out)
    with pytest.raises(ValueError, match="requant_int"):
        kernels.requant_int(acc, np.full(3, -(2**63), np.int64), np.ones(3, np.int64), 0, bounds, out)
    with pytest.raises(ValueError, match="requant_float"):
        kernels.requant_float(acc, np.ones(3), 0, bounds, np.empty((1, 3, 1), np.int8))
    with pytest.raises(ValueError, match="lookup"):
        kernels.lookup(np.array([0, 256], np.int64), np.zeros(256, np.int8), np.empty(2, np.int8))
    with pytest.raises(ValueError, match="add"):
        kernels.add(np.ones(3, np.int8), np.ones(4, np.int8))
    with pytest.raises(ValueError, match="histogram: the range is NaN"):
        kernels.histogram(np.ones(4), float("nan"), 8)
