"""quantize_network end to end: no_quant exactness, join scales, accuracy, options, edge cases."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import aidge_lite
from aidge_lite.errors import QuantizationError
from aidge_lite.ir import AFFINE, JOINING, OpType
from aidge_lite.ptq import PTQConfig, run_pipeline
from aidge_lite.ptq.prepare import prepare
from aidge_lite.ptq.rescale import effective_multiplier
from aidge_lite.ptq.walk import propagate

from . import builders as B

N_NOQUANT = 256        # test images for the no_quant check
N_CALIB_FAST = 128     # calibration images for the structural (non-accuracy) zoo checks
ACC_BATCH = 500

_CACHE: dict = {}


def run1(graph, x, **kw):
    out = aidge_lite.run(graph, x, **kw)
    assert len(out) == 1
    return next(iter(out.values()))


def quantized(name, no_quant, n_calib=N_CALIB_FAST, **kw):
    """quantize_network on zoo model `name`, cached for the module."""
    key = (name, no_quant, n_calib, tuple(sorted(kw.items())))
    if key not in _CACHE:
        graph = B.load_zoo_or_skip(name)
        calib = B.zoo_split(name).calib_x[:n_calib]
        _CACHE[key] = aidge_lite.quantize_network(graph, calib, no_quant=no_quant, **kw)
    return _CACHE[key]


def tensor_factors(q):
    """Per tensor F with q_value = F * float_value (my own walk), and the factors seen at each join."""
    at_joins = {}

    def rule(node, operands):
        if node.op is OpType.INPUT:
            return 1.0
        if node.op in AFFINE:
            return operands[0] * np.asarray(node.attrs["weight_scale"], np.float64)
        if node.op in (OpType.SCALING, OpType.QUANTIZER):
            return operands[0] * effective_multiplier(node.attrs)
        if node.op in JOINING:
            at_joins[node.name] = operands
        return operands[0]

    return propagate(q, rule), at_joins


def accuracy(graph, x, y, **kw):
    preds = [run1(graph, np.asarray(x[i:i + ACC_BATCH], np.float32), **kw).argmax(axis=1)
             for i in range(0, len(x), ACC_BATCH)]
    return float(np.mean(np.concatenate(preds) == y))


# ----------------------------------------------------------------------- no_quant
@pytest.mark.parametrize("name", B.zoo_params())
def test_no_quant_matches_float(name):
    q = quantized(name, no_quant=True)
    assert q.meta["quantized"] is True and q.meta["integer"] is False
    assert not [n.name for n in q.topo_order() if n.op is OpType.QUANTIZER]
    graph = B.load_zoo_or_skip(name)
    x = np.asarray(B.zoo_split(name).test_x[:N_NOQUANT], np.float32)
    ref = run1(graph, x, dtype=np.float64)
    out = aidge_lite.dequantize(q, aidge_lite.run(q, x))
    assert list(out) == graph.outputs  # finalize restored the float output names
    deq = out[graph.outputs[0]]
    rel = np.abs(deq - ref).max() / np.abs(ref).max()
    print(f"{name}: no_quant max rel error {rel:.3e}")
    assert rel <= 1e-6


@pytest.mark.parametrize("per_channel", [False, True])
def test_no_quant_mlp_and_blocks(per_channel):
    for graph, x in ((B.mlp3(), B.mlp_calibration()),
                     (B.residual_mlp(), np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)),
                     (B.residual_conv(), np.random.default_rng(0).standard_normal((16, 2, 6, 6)).astype(np.float32)),
                     (B.concat_block(), np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)),
                     (B.no_affine(), np.random.default_rng(0).standard_normal((8, 1, 4, 4)).astype(np.float32))):
        q = aidge_lite.quantize_network(graph, x, no_quant=True, per_channel=per_channel)
        ref = run1(graph, x, dtype=np.float64)
        deq = aidge_lite.dequantize(q, aidge_lite.run(q, x))[graph.outputs[0]]
        assert np.abs(deq - ref).max() / np.abs(ref).max() <= 1e-12, graph.name


# -------------------------------------------------------------------------- joins
def join_ratios(float_graph, q, x):
    """For every join of the prepared float graph: per operand, q_operand / float_operand."""
    prepared = float_graph.copy()
    run_pipeline(prepared, PTQConfig(), passes=(prepare,))
    f_env = aidge_lite.run(prepared, x, dtype=np.float64, intermediates=True)
    q_env = aidge_lite.run(q, x, intermediates=True)
    result = {}
    for node in prepared.topo_order():
        if node.op not in JOINING:
            continue
        q_node = q.node(node.name)
        assert q_node.op is node.op and len(q_node.inputs) == len(node.inputs)
        result[node.name] = [B.ratios(q_env[qi], f_env[fi]) for qi, fi in zip(q_node.inputs, node.inputs)]
        result[node.name].append(B.ratios(q_env[node.name], f_env[node.name]))  # the join's output
    return result


def check_joins(float_graph, x, calib, expected_joins):
    """expected_joins: the join names, or how many joins the prepared graph has."""
    q = aidge_lite.quantize_network(float_graph, calib, no_quant=True)
    ratios = join_ratios(float_graph, q, x)
    if isinstance(expected_joins, int):
        assert len(ratios) == expected_joins
        expected_joins = list(ratios)
    assert sorted(ratios) == sorted(expected_joins)
    for join, per_operand in ratios.items():
        common = per_operand[0][0]
        for k, r in enumerate(per_operand):
            assert r.size > 0, (join, k)
            np.testing.assert_allclose(r, common, rtol=1e-9, err_msg=f"{join} operand {k}")
    # and in the integer graph: every operand of every join carries one factor
    q_int = aidge_lite.quantize_network(float_graph, calib)
    _, at_joins = tensor_factors(q_int)
    assert sorted(at_joins) == sorted(expected_joins)
    for join, factors in at_joins.items():
        for f in factors:
            np.testing.assert_allclose(f, factors[0], rtol=1e-12, err_msg=join)
    # the no_quant graph's factors agree with the measured ratios
    _, at_joins_nq = tensor_factors(q)
    for join, factors in at_joins_nq.items():
        np.testing.assert_allclose(factors, ratios[join][0][0], rtol=1e-9)


@pytest.mark.parametrize("gain", [1.0, 100.0])
def test_joins_residual_block(gain):
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    check_joins(B.residual_mlp(gain), x, x, ["add"])


@pytest.mark.parametrize("builder", [B.skip_from_affine, B.skip_from_input])
def test_joins_skip_from_shared_rescaler(builder):
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    graph = builder()
    q = aidge_lite.quantize_network(graph, x, no_quant=True)
    ref = run1(graph, x, dtype=np.float64)
    deq = aidge_lite.dequantize(q, aidge_lite.run(q, x))[graph.outputs[0]]
    assert np.abs(deq - ref).max() / np.abs(ref).max() <= 1e-12
    check_joins(graph, x, x, ["add"])


def test_joins_residual_conv_and_concat():
    x = np.random.default_rng(1).standard_normal((16, 2, 6, 6)).astype(np.float32)
    check_joins(B.residual_conv(), x, x, ["add"])
    x = np.random.default_rng(2).standard_normal((64, 4)).astype(np.float32)
    check_joins(B.concat_block(), x, x, ["cat"])


@pytest.mark.parametrize("name, joins", [
    ("resnet_tiny", 2),
    ("inception_tiny", 1),
])
def test_joins_zoo(name, joins):
    graph = B.load_zoo_or_skip(name)
    split = B.zoo_split(name)
    check_joins(graph, np.asarray(split.test_x[:32], np.float32), split.calib_x[:128], joins)


# ----------------------------------------------------------------------- accuracy
def test_accuracy_mnist8_8bit():
    """Default set: mnist-8 at 8 bits, 1,000 calibration images, 4,000 test images, >= 99.3 %."""
    split = B.zoo_split("mnist8")
    q = quantized("mnist8", no_quant=False, n_calib=len(split.calib_x))
    assert q.meta["calibration_samples"] == 1000
    acc = accuracy(q, split.test_x, split.test_y)
    print(f"mnist8 8-bit accuracy {acc:.4%}")
    assert acc >= 0.993


@pytest.mark.slow
@pytest.mark.parametrize("name", B.zoo_params())
def test_accuracy_zoo_8bit_within_half_point(name):
    graph = B.load_zoo_or_skip(name)
    split = B.zoo_split(name)
    q = quantized(name, no_quant=False, n_calib=len(split.calib_x))
    float_acc = accuracy(graph, split.test_x, split.test_y)
    q_acc = accuracy(q, split.test_x, split.test_y)
    print(f"{name}: float {float_acc:.4%} 8-bit {q_acc:.4%} ({len(split.test_x)} test images)")
    assert q_acc >= float_acc - 0.005


# ------------------------------------------------------------------------ options
@pytest.mark.parametrize("nb_bits", [1, 17, 0, -8, 8.0, True, False, "8", None])
def test_bad_nb_bits(nb_bits):
    with pytest.raises(QuantizationError, match="nb_bits"):
        aidge_lite.quantize_network(B.mlp3(), B.mlp_calibration(), nb_bits=nb_bits)


@pytest.mark.parametrize("nb_bits", [2, 3, 8, 16])
def test_nb_bits_extremes(nb_bits):
    x = B.mlp_calibration()
    q = aidge_lite.quantize_network(B.mlp3(), x, nb_bits=nb_bits)
    lo, hi = -(1 << (nb_bits - 1)), (1 << (nb_bits - 1)) - 1
    for node in q.topo_order():
        if node.op in AFFINE:
            w = q.constant(node.inputs[1])
            assert w.dtype == (np.int8 if nb_bits <= 8 else np.int16)
            assert np.abs(w).max() == hi  # Sw = 2^(n-1) - 1 is reached by max|W|
        if node.op is OpType.QUANTIZER:
            assert (node.attrs["lo"], node.attrs["hi"]) == (lo, hi)
    out = run1(q, x)
    assert out.min() >= lo and out.max() <= hi and np.all(out == np.round(out))
    if nb_bits == 16:
        ref = run1(B.mlp3(), x, dtype=np.float64)
        deq = aidge_lite.dequantize(q, {"fc3": out})["fc3"]
        assert np.abs(deq - ref).max() / np.abs(ref).max() < 1e-3


# --------------------------------------------------------------- degenerate cases
def all_finite(q):
    bad = []
    for node in q.topo_order():
        values = []
        if node.op is OpType.CONSTANT:
            values.append(node.attrs["value"])
        for key in ("scale", "weight_scale", "multiplier", "shift"):
            if key in node.attrs:
                values.append(node.attrs[key])
        if any(not np.all(np.isfinite(np.asarray(v, np.float64))) for v in values):
            bad.append(node.name)
    for name, factor in q.meta["output_scale"].items():
        if not np.all(np.isfinite(factor)) or np.any(np.asarray(factor) == 0):
            bad.append(f"output_scale[{name}]")
    return bad


def mlp_with(**layers):
    weights = dict(B.MLP_WEIGHTS)
    weights.update(layers)
    return B.mlp3(weights)


ZERO_W2 = (np.zeros((3, 4), np.float32), B.MLP_WEIGHTS["fc2"][1])
_w2 = B.MLP_WEIGHTS["fc2"][0].copy()
_w2[1] = 0.0
ZERO_CHANNEL_W2 = (_w2, B.MLP_WEIGHTS["fc2"][1])
ZERO_OUT = (np.zeros((2, 3), np.float32), np.zeros(2, np.float32))


@pytest.mark.parametrize("layers", [
    pytest.param({"fc2": ZERO_W2}, id="zero_tensor"),
    pytest.param({"fc2": ZERO_CHANNEL_W2}, id="zero_channel"),
    pytest.param({"fc1": (np.zeros((4, 3), np.float32), np.zeros(4, np.float32))}, id="zero_first_layer"),
    pytest.param({"fc3": ZERO_OUT}, id="zero_output"),
])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("no_quant", [False, True])
def test_zero_weights_defined(layers, per_channel, no_quant):
    graph = mlp_with(**layers)
    x = B.mlp_calibration()
    q = aidge_lite.quantize_network(graph, x, per_channel=per_channel, no_quant=no_quant)
    assert all_finite(q) == []
    with np.errstate(all="raise"):
        out = aidge_lite.run(q, x)
    assert np.all(np.isfinite(out["fc3"]))
    deq = aidge_lite.dequantize(q, out)["fc3"]
    ref = run1(graph, x, dtype=np.float64)
    scale_ref = max(np.abs(ref).max(), 1e-30)
    tol = 1e-9 if no_quant else 0.05
    assert np.abs(deq - ref).max() <= tol * scale_ref or np.abs(deq - ref).max() == 0.0


def test_zero_conv_channel_defined():
    graph = B.residual_conv()
    w = graph.constant("conv2_w").copy()
    w[1] = 0.0
    graph.set_constant("conv2_w", w)
    x = np.random.default_rng(3).standard_normal((16, 2, 6, 6)).astype(np.float32)
    for per_channel in (False, True):
        q = aidge_lite.quantize_network(graph, x, per_channel=per_channel)
        assert all_finite(q) == []
        assert np.all(np.isfinite(run1(q, x)))


@pytest.mark.parametrize("no_quant", [False, True])
def test_constant_zero_activation(no_quant):
    """relu1 never fires on the calibration set (fc1 bias -100), fc2 has no bias: fc2's range is 0."""
    graph = mlp_with(fc1=(B.MLP_WEIGHTS["fc1"][0], np.full(4, -100.0, np.float32)),
                     fc2=(B.MLP_WEIGHTS["fc2"][0], np.zeros(3, np.float32)))
    x = B.mlp_calibration()
    q = aidge_lite.quantize_network(graph, x, no_quant=no_quant)
    assert all_finite(q) == []
    with np.errstate(all="raise"):
        out = aidge_lite.run(q, x)
    deq = aidge_lite.dequantize(q, out)["fc3"]
    assert np.all(np.isfinite(deq))
    b3 = B.MLP_WEIGHTS["fc3"][1].astype(np.float64)   # the float output is the constant fc3 bias
    np.testing.assert_allclose(run1(graph, x, dtype=np.float64), np.broadcast_to(b3, (len(x), 2)))
    np.testing.assert_allclose(deq, np.broadcast_to(b3, deq.shape), rtol=1e-9 if no_quant else 0.01)


def test_all_zero_calibration_input():
    """An all-zero calibration set: every range is 0 or a bias; nothing divides by zero."""
    x = np.zeros((8, 3), np.float32)
    for no_quant in (False, True):
        q = aidge_lite.quantize_network(B.mlp3(), x, no_quant=no_quant)
        assert all_finite(q) == []
        assert np.all(np.isfinite(run1(q, B.mlp_calibration())))


# ------------------------------------------------------------------ input untouched
def snapshot(graph):
    return (list(graph.inputs), list(graph.outputs), copy.deepcopy(graph.meta),
            [(n.name, n.op, list(n.inputs), copy.deepcopy(n.attrs), copy.deepcopy(n.meta))
             for n in graph.topo_order()])


def same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("builder", [B.mlp3, B.residual_mlp, B.concat_block, B.softmax_head,
                                     B.matmul_add, B.reshape_initializer, B.conv_add_bias])
def test_input_graph_untouched(builder):
    graph = builder()
    before = snapshot(graph)
    shape = [2 if d is None else d for d in graph.node(graph.inputs[0]).attrs["shape"]]
    x = np.random.default_rng(0).standard_normal([16] + shape[1:]).astype(np.float32)
    aidge_lite.quantize_network(graph, x)
    aidge_lite.quantize_network(graph, x, no_quant=True, per_channel=True)
    assert same(snapshot(graph), before)


@pytest.mark.parametrize("name", B.zoo_params(["mnist8", "lenet", "resnet_tiny"]))
def test_input_zoo_graph_untouched(name):
    graph = B.load_zoo_or_skip(name)
    before = snapshot(graph)
    aidge_lite.quantize_network(graph, B.zoo_split(name).calib_x[:32])
    assert same(snapshot(graph), before)


def test_quantized_graph_contract_mnist8():
    """The contract of docs/design.md on the real mnist-8 graph."""
    q = quantized("mnist8", no_quant=False, n_calib=len(B.zoo_split("mnist8").calib_x))
    graph = B.load_zoo_or_skip("mnist8")
    assert q.outputs == graph.outputs and q.inputs == graph.inputs
    assert q.meta["nb_bits"] == 8 and q.meta["integer"] is True
    assert set(q.meta["output_scale"]) == set(graph.outputs)
    first = q.consumers(q.inputs[0])
    assert len(first) == 1 and first[0].op is OpType.QUANTIZER and first[0].attrs["role"] == "input"
    for node in q.topo_order():
        assert node.op is not OpType.SCALING
        if node.op in AFFINE:
            w, b = q.constant(node.inputs[1]), q.constant(node.inputs[2])
            assert w.dtype == np.int8 and b.dtype in (np.int32, np.int64)
            assert len(q.consumers(node.name)) == 1 and q.consumers(node.name)[0].op is OpType.QUANTIZER
    assert all_finite(q) == []
    x = np.asarray(B.zoo_split("mnist8").test_x[:64], np.float32)
    fake = run1(q, x)
    np.testing.assert_array_equal(run1(q, x, engine="integer"), fake)  # both engines agree
