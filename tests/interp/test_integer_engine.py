"""The integer engine on small hand-built quantized graphs.

Bit-exactness against the fake-quant reference at every tensor for every
rounding rule and rescale mode, the integer dtypes it computes in, and its
input validation: a quantized graph whose shapes or dtypes were corrupted
must stop with an `aidge_lite.errors` exception naming the node, before any
Numba kernel sees the operands (kernels do no bounds checking).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import aidge_lite
from aidge_lite import Graph, Node, OpType, Target
from aidge_lite.errors import (AidgeLiteError, InputError,
                               UnsupportedOperatorError)
from aidge_lite.interp.integer import IntegerInterpreter
from aidge_lite.target import RESCALES, ROUNDINGS
from aidge_lite.testing import assert_bit_exact, run_engines

RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------------------
# Small float graphs
# ---------------------------------------------------------------------------

def _conv(g, name, x, cin, cout, k=3, pads=(1, 1, 1, 1), group=1, **attrs):
    g.add_constant(f"{name}_w", RNG.normal(0, 0.5, (cout, cin // group, k, k)).astype(np.float32))
    g.add_constant(f"{name}_b", RNG.normal(0, 0.2, cout).astype(np.float32))
    node_attrs = dict(pads=list(pads), **attrs)
    if group > 1:
        node_attrs["group"] = group
    g.add(Node(name, OpType.CONV, [x, f"{name}_w", f"{name}_b"], node_attrs))
    return name


def residual_net(c=3, hw=8, second_branch_channels=None) -> Graph:
    """conv -> relu -> [conv, depthwise conv] -> add -> relu -> avgpool -> concat(conv, conv)
    -> maxpool -> gap -> flatten -> gemm: every op the integer engine implements."""
    g = Graph("residual_net")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, c, hw, hw], "dtype": "float32"}))
    _conv(g, "stem", "x", c, 4, pads=(1, 0, 1, 2))
    g.add(Node("stem_relu", OpType.RELU, ["stem"]))
    _conv(g, "branch_a", "stem_relu", 4, 4)
    _conv(g, "branch_b", "stem_relu", 4, second_branch_channels or 4, k=3, group=1)
    g.add(Node("add", OpType.ADD, ["branch_a", "branch_b"]))
    g.add(Node("add_relu", OpType.RELU, ["add"]))
    g.add(Node("avg", OpType.AVGPOOL, ["add_relu"],
               {"kernel_shape": [2, 2], "strides": [1, 1], "pads": [0, 0, 1, 1]}))
    _conv(g, "cat_a", "avg", 4, 2, k=1, pads=(0, 0, 0, 0))
    _conv(g, "cat_b", "avg", 4, 4, k=3, group=4, dilations=[2, 2], pads=(2, 2, 2, 2))
    g.add(Node("cat", OpType.CONCAT, ["cat_a", "cat_b"], {"axis": 1}))
    g.add(Node("pool", OpType.MAXPOOL, ["cat"], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                  "pads": [1, 1, 1, 1]}))
    g.add(Node("gap", OpType.GLOBAL_AVGPOOL, ["pool"]))
    g.add(Node("flat", OpType.FLATTEN, ["gap"], {"axis": 1}))
    g.add_constant("fc_w", RNG.normal(0, 0.5, (5, 6)).astype(np.float32))
    g.add_constant("fc_b", RNG.normal(0, 0.2, 5).astype(np.float32))
    g.add(Node("fc", OpType.GEMM, ["flat", "fc_w", "fc_b"], {"transB": 1}))
    g.outputs = ["fc"]
    return g


def mlp(features=12) -> Graph:
    g = Graph("mlp")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, features], "dtype": "float32"}))
    g.add_constant("w1", RNG.normal(0, 0.5, (8, features)).astype(np.float32))
    g.add_constant("b1", RNG.normal(0, 0.2, 8).astype(np.float32))
    g.add(Node("fc1", OpType.GEMM, ["x", "w1", "b1"], {"transB": 1}))
    g.add(Node("relu", OpType.RELU, ["fc1"]))
    g.add_constant("w2", RNG.normal(0, 0.5, (8, 3)).astype(np.float32))  # transB = 0
    g.add(Node("fc2", OpType.GEMM, ["relu", "w2"]))
    g.outputs = ["fc2"]
    return g


CALIB = RNG.normal(0, 1, (16, 3, 8, 8)).astype(np.float32)
TEST_X = (RNG.normal(0, 1.5, (5, 3, 8, 8))).astype(np.float32)  # beyond the calibration range
MLP_CALIB = RNG.uniform(0, 4, (16, 12)).astype(np.float32)
MLP_X = RNG.uniform(0, 6, (7, 12)).astype(np.float32)


@pytest.fixture(scope="module")
def float_net():
    return residual_net()


@pytest.fixture(scope="module")
def qnet(float_net):
    return aidge_lite.quantize_network(float_net, CALIB, nb_bits=8)


def _node_of(graph, op):
    return next(n for n in graph.topo_order() if n.op is op)


def _assert_bit_exact(graph, x, target=None):
    """Every tensor (unfused integer engine), the fused production path, overflow counts."""
    run = run_engines(graph, x, target=target, intermediates=True)
    assert_bit_exact(graph, run)
    return run


# ---------------------------------------------------------------------------
# Bit-exactness and integer arithmetic
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rescale", [r for r in RESCALES])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_every_tensor_bit_exact_per_rounding_and_rescale(float_net, rounding, rescale):
    """Every intermediate tensor, not only the output, for the 4 x 4 target grid."""
    for bits in (8, 4):
        q = aidge_lite.quantize_network(float_net, CALIB, nb_bits=bits,
                                        target=Target(rounding=rounding, rescale=rescale))
        run = _assert_bit_exact(q, TEST_X)
        if bits == 8:  # (4-bit floor rounding legitimately collapses this net to zeros)
            assert np.unique(run.reference["fc"]).size > 1  # not a degenerate constant output


@pytest.mark.parametrize("options", [
    dict(per_channel=True),
    dict(optimize_signs=True),
    dict(single_shift=True),
    dict(nb_bits=16),
    dict(nb_bits=12, optimize_signs=True),
    dict(nb_bits=2),
    dict(cle=True),
    dict(compat="aidge"),  # float32 quantizers (never fused), half-even rounding
    dict(compat="aidge", nb_bits=5, clipping="kl", optimize_signs=True),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_bit_exact_with_ptq_options(float_net, options):
    q = aidge_lite.quantize_network(float_net, CALIB, **options)
    _assert_bit_exact(q, TEST_X)


def test_mlp_bit_exact_with_unsigned_input():
    q = aidge_lite.quantize_network(mlp(), MLP_CALIB, nb_bits=6, optimize_signs=True)
    assert q.node(q.inputs[0]).op is OpType.INPUT
    input_quantizer = q.consumers(q.inputs[0])[0]
    assert input_quantizer.attrs["dtype"] == "uint8"  # calibration >= 0: unsigned levels
    _assert_bit_exact(q, MLP_X)


def _tie_net(float32: bool):
    """x -> input quantizer (scale 1) -> Gemm (w 100, b 3219) -> quantizer (scale
    0.0026126066): x = 119 gives the accumulator 15119, whose float32 product is the tie
    39.5 (float64: 39.4999992)."""
    g = Graph("tie")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 1], "dtype": "float32"}))
    g.add_constant("w", np.ones((1, 1), np.float32))
    g.add_constant("b", np.zeros(1, np.float32))
    g.add(Node("fc", OpType.GEMM, ["x", "w", "b"], {"transB": 1}))
    g.outputs = ["fc"]
    q = aidge_lite.quantize_network(g, np.ones((2, 1), np.float32), compat="aidge")
    q.set_constant(_node_of(q, OpType.GEMM).inputs[1], np.array([[100]], np.int8))
    q.set_constant(_node_of(q, OpType.GEMM).inputs[2], np.array([3219], np.int32))
    quantizers = [n for n in q.topo_order() if n.op is OpType.QUANTIZER]
    assert [n.attrs.get("float32", False) for n in quantizers] == [False, True]
    quantizers[0].attrs["scale"] = 1.0
    quantizers[1].attrs["scale"] = 0.0026126066
    if not float32:
        del quantizers[1].attrs["float32"]
    return q, _node_of(q, OpType.GEMM).name, quantizers[1].name


@pytest.mark.parametrize("float32, expected", [(True, 40), (False, 39)])
def test_float32_quantizer_rounds_the_float32_product(float32, expected):
    """compat="aidge" quantizers multiply in float32 as Aidge 0.3.1 does: 15119 x
    float32(0.0026126066) = 39.5 -> 40 (half to even); the float64 product gives 39."""
    q, acc, out = _tie_net(float32)
    run = _assert_bit_exact(q, np.array([[119.0]], np.float32))
    assert run.reference[acc].ravel().tolist() == [15119]
    assert run.reference[out].ravel().tolist() == [expected]


def test_integer_engine_computes_in_integer_dtypes(qnet):
    """Quantizers emit their declared dtype within [lo, hi]; accumulators are int64;
    no float tensor exists after the input quantizer."""
    out = aidge_lite.run(qnet, TEST_X, engine="integer", intermediates=True)
    for node in qnet.topo_order():
        value = out[node.name]
        if node.op is OpType.INPUT:
            continue
        assert value.dtype.kind in "iu", (node.name, value.dtype)
        if node.op is OpType.QUANTIZER:
            assert value.dtype == np.dtype(node.attrs["dtype"]), node.name
            assert node.attrs["lo"] <= value.min() and value.max() <= node.attrs["hi"]
        if node.op in (OpType.CONV, OpType.GEMM, OpType.ADD):
            assert value.dtype == np.int64, node.name
    weights = [qnet.constant(n.inputs[1]) for n in qnet.topo_order() if n.op in (OpType.CONV, OpType.GEMM)]
    assert all(w.dtype == np.int8 for w in weights)


def test_batch_items_are_independent(qnet):
    whole = aidge_lite.run(qnet, TEST_X, engine="integer")["fc"]
    one_by_one = np.concatenate([aidge_lite.run(qnet, TEST_X[i:i + 1], engine="integer")["fc"]
                                 for i in range(len(TEST_X))])
    np.testing.assert_array_equal(whole, one_by_one)


def test_repeated_runs_are_identical(qnet):
    first = aidge_lite.run(qnet, TEST_X, engine="integer")["fc"]
    second = aidge_lite.run(qnet, TEST_X, engine="integer")["fc"]
    np.testing.assert_array_equal(first, second)


def test_integer_feed_dtypes_give_same_result():
    """uint8 pixels, float32 and float64 feeds of the same values: same integers."""
    g = residual_net(c=1, hw=8)
    calib = RNG.integers(0, 256, (8, 1, 8, 8)).astype(np.float32)
    q = aidge_lite.quantize_network(g, calib, nb_bits=8)
    pixels = RNG.integers(0, 256, (3, 1, 8, 8)).astype(np.uint8)
    results = [aidge_lite.run(q, pixels.astype(dt), engine=e)["fc"].astype(np.float64)
               for dt in (np.uint8, np.float32, np.float64) for e in ("reference", "integer")]
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_dequantized_outputs_agree(qnet):
    ref = aidge_lite.run(qnet, TEST_X)
    got = aidge_lite.run(qnet, TEST_X, engine="integer")
    np.testing.assert_array_equal(aidge_lite.dequantize(qnet, got)["fc"],
                                  aidge_lite.dequantize(qnet, ref)["fc"])


def test_stored_target_is_used_and_overridden(float_net):
    """The engine takes the graph's target unless `target=` overrides it."""
    q = aidge_lite.quantize_network(float_net, CALIB, target=Target(acc_bits=12, overflow="wrap"))
    interp = IntegerInterpreter()
    with pytest.warns(Warning):
        interp.run(q, TEST_X)
    assert interp.policy.bits == 12 and interp.policy.mode == "wrap" and interp.policy.overflows
    interp = IntegerInterpreter(target=Target(acc_bits=64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interp.run(q, TEST_X)
    assert interp.policy.overflows == {}


# ---------------------------------------------------------------------------
# Graphs the integer engine must refuse
# ---------------------------------------------------------------------------

def test_integer_engine_refuses_float_graph(float_net):
    with pytest.raises(InputError, match="not an integer graph"):
        aidge_lite.run(float_net, TEST_X, engine="integer")


def test_integer_engine_refuses_no_quant_graph(float_net):
    q = aidge_lite.quantize_network(float_net, CALIB, no_quant=True)
    assert q.meta["quantized"] and not q.meta["integer"]
    aidge_lite.run(q, TEST_X)  # the reference runs it (scale bookkeeping check)
    with pytest.raises(InputError, match="no_quant"):
        aidge_lite.run(q, TEST_X, engine="integer")


def test_unknown_engine_is_refused(qnet):
    with pytest.raises(InputError, match="unknown engine"):
        aidge_lite.run(qnet, TEST_X, engine="numba")


@pytest.mark.parametrize("feed, match", [
    (TEST_X[:, :2], "axis 1"),                      # wrong channel count
    (TEST_X[:, :, :7], "axis 2"),                   # wrong height
    (TEST_X[0], "rank 3"),                          # missing batch axis
    (TEST_X[..., None], "rank 5"),
    (TEST_X.astype(str), "not numeric"),
    ({"y": TEST_X}, "unknown input"),
    ({}, "missing graph input"),
], ids=["channels", "height", "rank3", "rank5", "str", "unknown", "missing"])
@pytest.mark.parametrize("engine", ["reference", "integer"])
def test_bad_input_is_refused_before_any_kernel(qnet, engine, feed, match):
    with pytest.raises(InputError, match=match) as info:
        aidge_lite.run(qnet, feed, engine=engine)
    if "input" not in match:
        assert "'x'" in str(info.value)  # names the graph input


def _corrupt_conv_weight_channels(q):
    w = q.node("branch_a").inputs[1]
    q.set_constant(w, q.constant(w)[:, :1])
    return "branch_a"


def _corrupt_conv_weight_rank(q):
    w = q.node("branch_a").inputs[1]
    q.set_constant(w, q.constant(w).reshape(q.constant(w).shape[0], -1))
    return "branch_a"


def _corrupt_conv_bias_length(q):
    b = q.node("stem").inputs[2]
    q.set_constant(b, q.constant(b)[:-1])
    return "stem"


def _corrupt_gemm_weight_columns(q):
    node = _node_of(q, OpType.GEMM)
    q.set_constant(node.inputs[1], q.constant(node.inputs[1])[:, :-1])
    return node.name


def _corrupt_gemm_bias_length(q):
    node = _node_of(q, OpType.GEMM)
    q.set_constant(node.inputs[2], np.concatenate([q.constant(node.inputs[2])] * 2))
    return node.name


def _corrupt_float_weight(q):
    w = q.node("branch_b").inputs[1]
    q.set_constant(w, q.constant(w).astype(np.float32))
    return "branch_b"


def _corrupt_float_bias(q):
    node = _node_of(q, OpType.GEMM)
    q.set_constant(node.inputs[2], q.constant(node.inputs[2]).astype(np.float64) + 0.5)
    return node.name


def _corrupt_missing_input_quantizer(q):
    """The input quantizer is bypassed: the first conv receives the float input."""
    q.bypass(q.consumers("x")[0].name)
    return "stem"


def _corrupt_gemm_input_rank(q):
    """The Flatten is bypassed: the Gemm receives (N, C, 1, 1)."""
    q.bypass("flat")
    return _node_of(q, OpType.GEMM).name


def _corrupt_add_operand_shape(q):
    """branch_b now has 1 output channel: Add sees (N, 4, H, W) + (N, 1, H, W)."""
    node = q.node("branch_b")
    q.set_constant(node.inputs[1], q.constant(node.inputs[1])[:1])
    q.set_constant(node.inputs[2], q.constant(node.inputs[2])[:1])
    return "add"


def _corrupt_concat_operand(q):
    """cat_b now emits 6x6 while cat_a emits 8x8: the Concat operands disagree."""
    q.node("cat_b").attrs["pads"] = [1, 1, 1, 1]
    return "cat"


def _corrupt_quantizer_scale_length(q):
    """A per-channel scale of 2 values on a 4-channel tensor."""
    node = q.consumers("stem")[0]
    node.attrs["scale"] = np.full(2, float(np.ravel(node.attrs["scale"])[0]))
    return node.name


def _corrupt_pool_window_in_padding(q):
    """A 1x1 MaxPool with 2 pixels of padding: its border windows hold no input pixel
    (ONNX requires pads < kernel; the pool kernels assume every window hits the input)."""
    node = q.node("pool")
    node.attrs.update(kernel_shape=[1, 1], strides=[1, 1], pads=[2, 2, 2, 2])
    return "pool"


CORRUPTIONS = {
    "conv_weight_channels": _corrupt_conv_weight_channels,
    "conv_weight_rank": _corrupt_conv_weight_rank,
    "conv_bias_length": _corrupt_conv_bias_length,
    "gemm_weight_columns": _corrupt_gemm_weight_columns,
    "gemm_bias_length": _corrupt_gemm_bias_length,
    "float_weight": _corrupt_float_weight,
    "float_bias": _corrupt_float_bias,
    "float_activation": _corrupt_missing_input_quantizer,
    "gemm_input_rank": _corrupt_gemm_input_rank,
    "add_operand_shape": _corrupt_add_operand_shape,
    "concat_operand_shape": _corrupt_concat_operand,
    "quantizer_scale_length": _corrupt_quantizer_scale_length,
    "pool_window_in_padding": _corrupt_pool_window_in_padding,
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS.values()), ids=list(CORRUPTIONS))
def test_corrupted_graph_is_refused_naming_the_node(qnet, corrupt):
    q = qnet.copy()
    culprit = corrupt(q)
    with pytest.raises(AidgeLiteError) as info:
        aidge_lite.run(q, TEST_X, engine="integer")
    assert f"'{culprit}'" in str(info.value)
    # the engine's own check, not a kernel failure wrapped after the fact
    cause = info.value.__cause__
    assert cause is None or "numba" not in type(cause).__module__, repr(cause)


@pytest.mark.parametrize("name", ["conv_weight_channels", "conv_weight_rank", "conv_bias_length",
                                  "gemm_weight_columns", "concat_operand_shape"])
def test_corrupted_shapes_also_stop_the_reference(qnet, name):
    q = qnet.copy()
    culprit = CORRUPTIONS[name](q)
    with pytest.raises(AidgeLiteError, match=f"'{culprit}'"):
        aidge_lite.run(q, TEST_X)


def test_corrupted_int_multiplier_length_is_refused(float_net):
    q = aidge_lite.quantize_network(float_net, CALIB, target=Target(rescale="fixed_point"))
    node = q.consumers("stem")[0]
    assert node.attrs["mode"] == "int"
    node.attrs["multiplier"] = np.repeat(node.attrs["multiplier"][:1], 6)
    node.attrs["shift"] = np.repeat(node.attrs["shift"][:1], 6)
    with pytest.raises(AidgeLiteError, match=f"'{node.name}'"):
        aidge_lite.run(q, TEST_X, engine="integer")



def test_avgpool_ceil_mode_with_count_include_pad_is_refused_clearly():
    """A documented integer-engine limitation: a clear error naming the node."""
    g = Graph("ceil_avg")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 2, 5, 5], "dtype": "float32"}))
    g.add(Node("avg", OpType.AVGPOOL, ["x"], {"kernel_shape": [2, 2], "strides": [2, 2],
                                               "ceil_mode": 1, "count_include_pad": 1}))
    g.outputs = ["avg"]
    q = aidge_lite.quantize_network(g, RNG.normal(size=(4, 2, 5, 5)).astype(np.float32))
    with pytest.raises(UnsupportedOperatorError, match="'avg'"):
        aidge_lite.run(q, RNG.normal(size=(2, 2, 5, 5)), engine="integer")


# ---------------------------------------------------------------------------
# Bugs found while testing (were strict xfails; fixed)
# ---------------------------------------------------------------------------

def test_empty_batch(qnet):
    x = TEST_X[:0]
    ref = aidge_lite.run(qnet, x)["fc"]
    got = aidge_lite.run(qnet, x, engine="integer")["fc"]
    assert ref.shape == got.shape == (0, 5)


def test_broadcasting_add_is_refused_by_ptq_naming_the_node():
    """(N,4,H,W) + (N,1,H,W) is legal ONNX, but a quantized join needs equal shapes (the
    integer kernels do not broadcast): the PTQ refuses it instead of letting the engines differ."""
    g = residual_net(second_branch_channels=1)
    with pytest.raises(aidge_lite.errors.QuantizationError, match="'add'.*broadcast"):
        aidge_lite.quantize_network(g, CALIB)
