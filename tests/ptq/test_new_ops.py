"""The ops exporters produce, quantized: Clip/ReLU6, arithmetic with constants, BatchNorm
without a conv, Mul of two activations, lookup-table activations, ReduceMean.

Each graph is quantized, run by both engines (`assert_array_equal`), and compared with
the float reference (SQNR); tables are checked entry by entry against a Python oracle.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aidge_lite
from aidge_lite.errors import QuantizationError
from aidge_lite.ir import Graph, Node, OpType
from aidge_lite.kernels.rounding import ROUNDING_NAMES, round_float_ref
from aidge_lite.ptq.quantize import factor_rule
from aidge_lite.ptq.walk import propagate

from . import builders as B

F32 = np.float32


def sqnr(ref, got) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return float(10 * np.log10((ref ** 2).sum() / max(((ref - got) ** 2).sum(), 1e-300)))


def quantize_and_check(graph, calib, test, **options):
    """Quantize, run both engines (bit-exact), return (qgraph, SQNR of each output vs float)."""
    q = aidge_lite.quantize_network(graph, calib, **options)
    fake = aidge_lite.run(q, test)
    integer = aidge_lite.run(q, test, engine="integer")
    for name in q.outputs:
        np.testing.assert_array_equal(fake[name], integer[name], err_msg=name)
    ref = aidge_lite.run(graph, test, dtype=np.float64)
    deq = aidge_lite.dequantize(q, fake)
    return q, {name: sqnr(ref[name], deq[name]) for name in graph.outputs}


def ops(graph) -> list[OpType]:
    return [n.op for n in graph.topo_order() if n.op is not OpType.CONSTANT]


def factors(q) -> dict:
    return propagate(q, factor_rule)


# ------------------------------------------------------------------ Clip / ReLU6
def relu6_net(seed=0, low=0.0, high=6.0) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("relu6")
    B.add_input(g, "x", [None, 2, 6, 6])
    B.add_conv(g, "conv1", "x", rng.standard_normal((4, 2, 3, 3)) * 1.5, rng.standard_normal(4))
    B.add_op(g, "clip", OpType.CLIP, ["conv1"], min=low, max=high)
    B.add_conv(g, "conv2", "clip", rng.standard_normal((3, 4, 3, 3)) * 0.5, rng.standard_normal(3) * 0.1)
    return B.finish(g, ["conv2"])


@pytest.mark.parametrize("signs", [False, True])
def test_relu6_is_a_clamp_in_the_quantizer_bounds(signs):
    rng = np.random.default_rng(1)
    calib = (rng.standard_normal((48, 2, 6, 6)) * 3).astype(F32)
    q, snr = quantize_and_check(relu6_net(), calib, calib[:16], optimize_signs=signs)
    assert OpType.CLIP not in ops(q)
    quant = q.node("conv1_scaling")
    factor = factors(q)["conv1_scaling"]
    # the conv output reaches ~20: the rescaler is normalised by the clip's 6, not by the data
    assert aidge_lite.run(relu6_net(), calib, dtype=np.float64, intermediates=True)["conv1"].max() > 12
    top = 255 if signs else 127
    assert abs(factor * 6.0 - top) < 1e-6 * top
    assert (quant.attrs["lo"], quant.attrs["hi"]) == (0, int(round_float_ref(np.array([6.0 * factor]), 0)[0]))
    assert snr["conv2"] > 30, snr


def test_clip_with_negative_bound_and_clamp_exactness():
    """clip(round(F x), round(F lo), round(F hi)) == round(F clip(x, lo, hi)), node by node."""
    rng = np.random.default_rng(2)
    calib = (rng.standard_normal((48, 2, 6, 6)) * 3).astype(F32)
    float_graph = relu6_net(low=-1.5, high=2.5)
    q, snr = quantize_and_check(float_graph, calib, calib[:8])
    quant = q.node("conv1_scaling")
    factor = factors(q)["conv1_scaling"]
    mode = ROUNDING_NAMES[quant.attrs["rounding"]]
    expected = [int(round_float_ref(np.array([v * factor]), mode)[0]) for v in (-1.5, 2.5)]
    assert [quant.attrs["lo"], quant.attrs["hi"]] == expected
    got = aidge_lite.run(q, calib[:8], engine="integer", intermediates=True)["conv1_scaling"]
    assert got.min() == expected[0] and got.max() == expected[1]
    assert snr["conv2"] > 30, snr


# -------------------------------------------------- arithmetic with constants, BatchNorm
def normalised_input_net(pads, seed=3) -> Graph:
    """(x * 1/255 - mean) / std -> conv (ImageNet-style preprocessing left in the graph)."""
    rng = np.random.default_rng(seed)
    g = Graph("normalised")
    B.add_input(g, "x", [None, 3, 6, 6])
    k = g.add_constant("k", np.array(1 / 255, F32)).name
    mean = g.add_constant("mean", np.array([0.485, 0.456, 0.406], F32).reshape(1, 3, 1, 1)).name
    std = g.add_constant("std", np.array([0.229, 0.224, 0.225], F32).reshape(3, 1, 1)).name
    B.add_op(g, "scale", OpType.MUL, ["x", k])
    B.add_op(g, "center", OpType.SUB, ["scale", mean])
    B.add_op(g, "norm", OpType.DIV, ["center", std])
    B.add_conv(g, "conv", "norm", rng.standard_normal((4, 3, 3, 3)) * 0.4, rng.standard_normal(4) * 0.1,
               pads=pads)
    B.add_op(g, "relu", OpType.RELU, ["conv"])
    B.add_op(g, "half", OpType.MUL, ["relu", g.add_constant("h", np.array(0.5, F32)).name])
    B.add_op(g, "gap", OpType.GLOBAL_AVGPOOL, ["half"])
    return B.finish(g, ["gap"])


@pytest.mark.parametrize("pads,kept", [((0, 0, 0, 0), 0), ((1, 1, 1, 1), 1)])
def test_input_normalisation_folds_into_the_conv_when_exact(pads, kept):
    rng = np.random.default_rng(4)
    calib = rng.uniform(0, 255, (32, 3, 6, 6)).astype(F32)
    graph = normalised_input_net(pads)
    q, snr = quantize_and_check(graph, calib, calib[:8])
    for name in ("scale", "center", "half"):
        assert name not in q  # folded (the Mul by 0.5 after the Relu: into the conv before it)
    # a padded conv cannot take the shift (-mean/std would replace its zero padding): one
    # depthwise 1x1 conv is left, quantized like any conv
    assert ops(q).count(OpType.CONV) == 1 + kept
    assert OpType.MUL not in ops(q) and OpType.SUB not in ops(q) and OpType.DIV not in ops(q)
    assert snr["gap"] > 30, snr  # measured 33.8 dB (padded: one more requantization) and higher


def test_folded_constants_keep_the_float_function():
    from aidge_lite.ptq import PTQConfig
    from aidge_lite.ptq.prepare import prepare

    x = np.random.default_rng(5).uniform(0, 255, (4, 3, 6, 6)).astype(F32)
    for pads in ((0, 0, 0, 0), (1, 1, 1, 1)):
        graph = normalised_input_net(pads)
        prepared = graph.copy()
        prepare(prepared, PTQConfig())
        ref = aidge_lite.run(graph, x, dtype=np.float64)["gap"]
        got = aidge_lite.run(prepared, x, dtype=np.float64)["gap"]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def lone_batchnorm_net(seed=6) -> Graph:
    """relu -> BatchNorm (no conv before it) -> padded conv."""
    rng = np.random.default_rng(seed)
    g = Graph("lone_bn")
    B.add_input(g, "x", [None, 3, 5, 5])
    B.add_op(g, "relu", OpType.RELU, ["x"])
    params = [g.add_constant(f"bn_{k}", v.astype(F32)).name for k, v in
              (("s", rng.uniform(0.5, 2, 3)), ("b", rng.standard_normal(3)),
               ("m", rng.uniform(0, 1, 3)), ("v", rng.uniform(0.5, 2, 3)))]
    B.add_op(g, "bn", OpType.BATCHNORM, ["relu"] + params, epsilon=1e-5)
    B.add_conv(g, "conv", "bn", rng.standard_normal((2, 3, 3, 3)) * 0.5, rng.standard_normal(2))
    return B.finish(g, ["conv"])


def test_batchnorm_without_conv_is_a_per_channel_affine():
    rng = np.random.default_rng(7)
    calib = rng.standard_normal((32, 3, 5, 5)).astype(F32)
    q, snr = quantize_and_check(lone_batchnorm_net(), calib, calib[:8], per_channel=True)
    bn = q.node("bn")
    assert bn.op is OpType.CONV and bn.attrs["group"] == 3 and q.constant(bn.inputs[1]).shape == (3, 1, 1, 1)
    assert snr["conv"] > 35, snr


def test_constant_varying_along_another_axis_is_refused():
    g = Graph("spatial")
    B.add_input(g, "x", [None, 2, 3, 3])
    B.add_op(g, "mask", OpType.MUL, ["x", g.add_constant("m", np.arange(9, dtype=F32).reshape(1, 1, 3, 3)).name])
    B.add_conv(g, "conv", "mask", np.ones((1, 2, 1, 1)), [0.0], pads=(0, 0, 0, 0))
    B.finish(g, ["conv"])
    with pytest.raises(QuantizationError, match=r"node 'mask'.*exclude=\['mask'\]"):
        aidge_lite.quantize_network(g, np.ones((4, 2, 3, 3), F32))


# ------------------------------------------------------------ Mul of two activations
def test_mul_of_activations_is_an_exact_integer_product():
    rng = np.random.default_rng(8)
    g = Graph("gate")
    B.add_input(g, "x", [None, 4, 4, 4])
    B.add_conv(g, "feat", "x", rng.standard_normal((4, 4, 3, 3)) * 0.3, rng.standard_normal(4) * 0.1)
    B.add_op(g, "pool", OpType.GLOBAL_AVGPOOL, ["feat"])
    B.add_conv(g, "gate", "pool", rng.standard_normal((4, 4, 1, 1)), rng.standard_normal(4), pads=(0, 0, 0, 0))
    B.add_op(g, "excite", OpType.MUL, ["feat", "gate"])  # (N,4,4,4) * (N,4,1,1): broadcast
    B.finish(g, ["excite"])
    calib = rng.standard_normal((32, 4, 4, 4)).astype(F32)
    q, snr = quantize_and_check(g, calib, calib[:8])
    inter = aidge_lite.run(q, calib[:8], engine="integer", intermediates=True)
    a, b = inter["feat_scaling"], inter["gate_scaling"]
    product = [n for n in q.topo_order() if n.op is OpType.MUL][0]
    np.testing.assert_array_equal(inter[product.name], a.astype(np.int64) * b.astype(np.int64))
    assert inter[product.name].dtype == np.int64
    assert snr["excite"] > 25, snr  # measured 28.0 dB


# ------------------------------------------------------------------ lookup tables
def _hard_sigmoid(x, alpha=0.2, beta=0.5):
    return min(1.0, max(0.0, x * alpha + beta))


ORACLES = {
    OpType.SIGMOID: ({}, lambda x: 1.0 / (1.0 + math.exp(-x))),
    OpType.TANH: ({}, math.tanh),
    OpType.LEAKY_RELU: ({"alpha": 0.1}, lambda x: x if x >= 0 else x * 0.1),
    OpType.HARD_SIGMOID: ({"alpha": 0.25, "beta": 0.4}, lambda x: _hard_sigmoid(x, 0.25, 0.4)),
    OpType.HARD_SWISH: ({}, lambda x: x * _hard_sigmoid(x, 1 / 6, 0.5)),
    OpType.GELU: ({}, lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2)))),
    OpType.ERF: ({}, math.erf),
}


def table_net(op, attrs, seed=9) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph(f"table_{op.value}")
    B.add_input(g, "x", [None, 6])
    B.add_gemm(g, "fc1", "x", rng.standard_normal((5, 6)), rng.standard_normal(5) * 0.3)
    B.add_op(g, "act", op, ["fc1"], **attrs)
    B.add_gemm(g, "fc2", "act", rng.standard_normal((3, 5)), rng.standard_normal(3) * 0.1)
    return B.finish(g, ["fc2"])


def run_table_alone(q, table_node, codes):
    """The LOOKUP node alone, fed every code, in both engines."""
    pre = q.node(table_node.inputs[0])
    g = Graph("one_table")
    g.add(Node("c", OpType.INPUT, attrs={"shape": [None, codes.size], "dtype": pre.attrs["dtype"]}))
    g.add(Node("t", OpType.LOOKUP, ["c"], attrs=dict(table_node.attrs)))
    g.outputs = ["t"]
    g.meta.update(quantized=True, integer=True, target=q.meta["target"])
    feed = codes.reshape(1, -1).astype(pre.attrs["dtype"])
    return (aidge_lite.run(g, feed)["t"].reshape(-1),
            aidge_lite.run(g, feed, engine="integer")["t"].reshape(-1))


@pytest.mark.parametrize("op", list(ORACLES), ids=lambda o: o.value)
def test_lookup_table_matches_a_python_oracle_at_8_bits(op):
    attrs, f = ORACLES[op]
    rng = np.random.default_rng(10)
    calib = (rng.standard_normal((64, 6)) * 1.5).astype(F32)
    q, snr = quantize_and_check(table_net(op, attrs), calib, calib[:32])
    table = q.node("act")
    assert table.op is OpType.LOOKUP and table.attrs["function"] == op.value
    pre = q.node(table.inputs[0])
    post_factor = factors(q)["act"]
    in_factor = factors(q)[pre.name]
    lo, hi = pre.attrs["lo"], pre.attrs["hi"]
    assert hi - lo + 1 == 256 and table.attrs["table"].size == 256
    out_lo, out_hi = (0, 255) if table.attrs["dtype"] == "uint8" else (-128, 127)
    oracle = []
    for code in range(lo, hi + 1):
        v = f(code / in_factor) * post_factor
        r = math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)  # half away from zero
        oracle.append(min(out_hi, max(out_lo, r)))
    codes = np.arange(lo, hi + 1)
    fake, integer = run_table_alone(q, table, codes)
    np.testing.assert_array_equal(integer, np.array(oracle))
    np.testing.assert_array_equal(fake, integer)
    assert snr["fc2"] > 28, (op, snr)


def test_lookup_table_at_16_bits_enumerates_every_code():
    rng = np.random.default_rng(11)
    calib = (rng.standard_normal((64, 6)) * 1.5).astype(F32)
    q, snr = quantize_and_check(table_net(OpType.SIGMOID, {}), calib, calib[:32], nb_bits=16,
                                target=aidge_lite.Target(acc_bits=64))
    table = q.node("act")
    assert table.attrs["table"].size == 1 << 16 and table.attrs["table"].dtype == np.int16
    in_factor, out_factor = factors(q)[table.inputs[0]], factors(q)["act"]
    codes = np.arange(-(1 << 15), 1 << 15)
    expected = np.clip(round_float_ref(out_factor / (1 + np.exp(-codes / in_factor)), 0), -(1 << 15), (1 << 15) - 1)
    fake, integer = run_table_alone(q, table, codes)
    np.testing.assert_array_equal(integer, expected)
    np.testing.assert_array_equal(fake, integer)
    assert snr["fc2"] > 60, snr


def test_non_negative_table_output_is_unsigned_with_sign_optimisation():
    calib = (np.random.default_rng(12).standard_normal((64, 6)) * 1.5).astype(F32)
    q, _ = quantize_and_check(table_net(OpType.SIGMOID, {}), calib, calib[:8], optimize_signs=True)
    assert q.node("act").attrs["dtype"] == "uint8"
    q, _ = quantize_and_check(table_net(OpType.TANH, {}), calib, calib[:8], optimize_signs=True)
    assert q.node("act").attrs["dtype"] == "int8"


# ----------------------------------------------------------------- ReduceMean
def mean_net(reduce_mean: bool) -> Graph:
    rng = np.random.default_rng(13)
    g = Graph("rmean")
    B.add_input(g, "x", [None, 3, 5, 5])
    B.add_conv(g, "conv", "x", rng.standard_normal((4, 3, 3, 3)) * 0.5, rng.standard_normal(4) * 0.1)
    if reduce_mean:
        B.add_op(g, "mean", OpType.REDUCE_MEAN, ["conv"], axes=[-1, -2], keepdims=0)
    else:
        B.add_op(g, "mean", OpType.GLOBAL_AVGPOOL, ["conv"])
        B.add_op(g, "flat", OpType.FLATTEN, ["mean"], axis=1)
    B.add_gemm(g, "fc", "mean" if reduce_mean else "flat", rng.standard_normal((2, 4)),
               rng.standard_normal(2) * 0.1)
    return B.finish(g, ["fc"])


def test_reduce_mean_over_space_is_the_integer_global_pool():
    """ReduceMean(axes=(2, 3)) = GlobalAveragePool (+ Flatten): an exact int64 sum and one
    division rounded with the target's rule (half away from zero by default)."""
    calib = np.random.default_rng(14).standard_normal((32, 3, 5, 5)).astype(F32)
    q, snr = quantize_and_check(mean_net(True), calib, calib[:8])
    pool, _ = quantize_and_check(mean_net(False), calib, calib[:8])
    assert q.node("mean").op is OpType.GLOBAL_AVGPOOL and q.node("mean").attrs["rounding"] == "half_away"
    assert OpType.REDUCE_MEAN not in ops(q)
    np.testing.assert_array_equal(aidge_lite.run(q, calib, engine="integer")["fc"],
                                  aidge_lite.run(pool, calib, engine="integer")["fc"])
    assert snr["fc"] > 20, snr  # measured 25.5 dB: the means are small next to the conv's range


# ------------------------------------------------------- the ops together, in networks
@pytest.mark.parametrize("net", ["mobilenet_v2", "squeeze_excite"])
@pytest.mark.parametrize("options", [{}, {"preset": "best"}, {"single_shift": True, "optimize_signs": True}],
                         ids=["default", "best", "shift+signs"])
def test_exporter_style_networks(net, options, tmp_path):
    from . import exporter_nets as N

    graph = getattr(N, net)()
    q, snr = quantize_and_check(graph, N.images(64, 0), N.images(32, 1), **options)
    kinds = ops(q)
    for op in (OpType.CLIP, OpType.SUB, OpType.DIV, OpType.BATCHNORM, OpType.SIGMOID, OpType.TANH,
               OpType.HARD_SWISH, OpType.HARD_SIGMOID, OpType.LEAKY_RELU, OpType.REDUCE_MEAN):
        assert op not in kinds, op
    if net == "mobilenet_v2":
        assert OpType.MUL not in kinds and kinds.count(OpType.CONV) == 5  # 4 + the normalisation
    else:
        # SiLU (x * Sigmoid(x)) is one table; the excitation stays a product of activations
        assert kinds.count(OpType.MUL) == 1 and kinds.count(OpType.LOOKUP) == 5
        assert q.node("silu").attrs["function"] == "SiLU" and "sig" not in q
    if not options:  # the new nodes survive a save / load (tables, clamped bounds, products)
        from aidge_lite.serialize import load, save

        test = N.images(8, 2)
        again = load(save(q, tmp_path / "q.npz"))
        np.testing.assert_array_equal(aidge_lite.run(again, test, engine="integer")[q.outputs[0]],
                                      aidge_lite.run(q, test, engine="integer")[q.outputs[0]])
    # measured on held-out images: 26.6-30.7 dB (mobilenet_v2), 26.5-28.1 dB (squeeze_excite)
    assert min(snr.values()) > 24, snr


def test_data_movement_ops_pass_codes_through():
    """Slice, DepthToSpace and nearest Resize move codes without arithmetic: quantized as is."""
    rng = np.random.default_rng(15)
    g = Graph("movement")
    B.add_input(g, "x", [None, 2, 4, 4])
    B.add_conv(g, "conv", "x", rng.standard_normal((8, 2, 3, 3)) * 0.5, rng.standard_normal(8) * 0.1)
    B.add_op(g, "d2s", OpType.DEPTH_TO_SPACE, ["conv"], blocksize=2, mode="DCR")
    B.add_op(g, "crop", OpType.SLICE, ["d2s"], starts=[1, 1], ends=[7, 7], axes=[2, 3])
    B.add_op(g, "up", OpType.RESIZE, ["crop"], mode="nearest", scales=[1.0, 1.0, 2.0, 2.0],
             coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    B.add_conv(g, "head", "up", rng.standard_normal((1, 2, 3, 3)) * 0.5, [0.1])
    B.finish(g, ["head"])
    calib = rng.standard_normal((24, 2, 4, 4)).astype(F32)
    q, snr = quantize_and_check(g, calib, calib[:8])
    inter = aidge_lite.run(q, calib[:8], engine="integer", intermediates=True)
    assert inter["up"].dtype == np.int8 and {"d2s", "crop", "up"} <= {n.name for n in q.topo_order()}
    assert snr["head"] > 30, snr


def test_chained_tables_and_a_clamp_after_a_table():
    """Sigmoid -> Tanh -> Clip: the second table reads the first one's codes, the clamp
    goes into the second table's entries."""
    rng = np.random.default_rng(16)
    g = Graph("chain")
    B.add_input(g, "x", [None, 6])
    B.add_gemm(g, "fc1", "x", rng.standard_normal((5, 6)), rng.standard_normal(5) * 0.3)
    B.add_op(g, "sig", OpType.SIGMOID, ["fc1"])
    B.add_op(g, "th", OpType.TANH, ["sig"])
    B.add_op(g, "clamp", OpType.CLIP, ["th"], min=0.3, max=0.7)
    B.add_gemm(g, "fc2", "clamp", rng.standard_normal((3, 5)), rng.standard_normal(3) * 0.1)
    B.finish(g, ["fc2"])
    calib = (rng.standard_normal((64, 6)) * 2).astype(F32)
    q, snr = quantize_and_check(g, calib, calib[:32])
    assert [n.op for n in q.topo_order() if n.name in ("sig", "th")] == [OpType.LOOKUP, OpType.LOOKUP]
    assert "clamp" not in q
    th = q.node("th")
    first = q.node("sig").attrs["table"]
    assert th.attrs["table"].size == int(first.max()) - int(first.min()) + 1
    factor = factors(q)["th"]
    assert th.attrs["table"].min() == round(0.3 * factor) and th.attrs["table"].max() == round(0.7 * factor)
    assert snr["fc2"] > 30, snr


def test_silu_written_as_x_times_sigmoid_is_one_table():
    rng = np.random.default_rng(17)
    g = Graph("silu")
    B.add_input(g, "x", [None, 6])
    B.add_gemm(g, "fc1", "x", rng.standard_normal((5, 6)), rng.standard_normal(5) * 0.3)
    B.add_op(g, "sig", OpType.SIGMOID, ["fc1"])
    B.add_op(g, "swish", OpType.MUL, ["sig", "fc1"])
    B.add_gemm(g, "fc2", "swish", rng.standard_normal((3, 5)), rng.standard_normal(3) * 0.1)
    B.finish(g, ["fc2"])
    calib = (rng.standard_normal((64, 6)) * 2).astype(F32)
    q, snr = quantize_and_check(g, calib, calib[:32])
    table = q.node("swish")
    assert table.op is OpType.LOOKUP and table.inputs == ["fc1_scaling"] and "sig" not in q
    in_factor, out_factor = factors(q)["fc1_scaling"], factors(q)["swish"]
    oracle = []
    for code in range(-128, 128):
        v = code / in_factor / (1.0 + math.exp(-code / in_factor)) * out_factor
        oracle.append(min(127, max(-128, math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1))))
    fake, integer = run_table_alone(q, table, np.arange(-128, 128))
    np.testing.assert_array_equal(integer, np.array(oracle))
    np.testing.assert_array_equal(fake, integer)
    assert snr["fc2"] > 30, snr


# ------------------------------------------------------- random chains of the new ops
_BLOCKS = ("conv", "relu6", "clip", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky", "gelu",
           "scale", "shift", "bn", "gate", "silu", "mean_gap")


@st.composite
def new_op_graphs(draw):
    """A random chain of the ops above on (N, C, 5, 5) tensors, ending in a global pool + Gemm."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    g = Graph("random_new_ops")
    channels = draw(st.integers(1, 4))
    x = B.add_input(g, "x", [None, channels, 5, 5])
    for k, kind in enumerate(draw(st.lists(st.sampled_from(_BLOCKS), min_size=1, max_size=5))):
        name = f"{kind}{k}"
        const = lambda v: g.add_constant(f"{name}_c", np.asarray(v, F32)).name  # noqa: E731
        if kind == "conv":
            out = draw(st.integers(1, 4))
            x = B.add_conv(g, name, x, rng.standard_normal((out, channels, 3, 3)) * 0.5,
                           rng.standard_normal(out) * 0.2)
            channels = out
        elif kind in ("relu6", "clip"):
            # (a clip whose range misses the data's is a constant: see lookup_tables._fold_clamp)
            low, high = (0.0, 6.0) if kind == "relu6" else (rng.uniform(-2, 0), rng.uniform(0.1, 2))
            x = B.add_op(g, name, OpType.CLIP, [x], min=float(low), max=float(high))
        elif kind == "scale":
            x = B.add_op(g, name, OpType.MUL, [x, const(rng.uniform(-2, 2, (1, channels, 1, 1)))])
        elif kind == "shift":
            x = B.add_op(g, name, OpType.SUB, [x, const(rng.uniform(-1, 1, channels).reshape(channels, 1, 1))])
        elif kind == "bn":
            params = [g.add_constant(f"{name}_{p}", v.astype(F32)).name for p, v in
                      (("s", rng.uniform(0.5, 2, channels)), ("b", rng.standard_normal(channels)),
                       ("m", rng.standard_normal(channels)), ("v", rng.uniform(0.5, 2, channels)))]
            x = B.add_op(g, name, OpType.BATCHNORM, [x] + params)
        elif kind == "gate":  # squeeze-and-excitation: x * sigmoid(conv1x1(mean(x)))
            pooled = B.add_op(g, f"{name}_pool", OpType.GLOBAL_AVGPOOL, [x])
            fc = B.add_conv(g, f"{name}_fc", pooled, rng.standard_normal((channels, channels, 1, 1)),
                            rng.standard_normal(channels) * 0.2, pads=(0, 0, 0, 0))
            s = B.add_op(g, f"{name}_sig", OpType.SIGMOID, [fc])
            x = B.add_op(g, name, OpType.MUL, [x, s])
        elif kind == "silu":
            s = B.add_op(g, f"{name}_sig", OpType.SIGMOID, [x])
            x = B.add_op(g, name, OpType.MUL, [s, x])
        elif kind == "mean_gap":
            x = B.add_op(g, name, OpType.REDUCE_MEAN, [x], axes=[2, 3], keepdims=1)
            x = B.add_op(g, f"{name}_up", OpType.RESIZE, [x], mode="nearest", scales=[1.0, 1.0, 5.0, 5.0],
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        else:
            op, attrs = {"sigmoid": (OpType.SIGMOID, {}), "tanh": (OpType.TANH, {}),
                         "hardswish": (OpType.HARD_SWISH, {}), "gelu": (OpType.GELU, {}),
                         "hardsigmoid": (OpType.HARD_SIGMOID, {"alpha": 0.3, "beta": 0.4}),
                         "leaky": (OpType.LEAKY_RELU, {"alpha": 0.2})}[kind]
            x = B.add_op(g, name, op, [x], **attrs)
    pooled = B.add_op(g, "pool", OpType.GLOBAL_AVGPOOL, [x])
    flat = B.add_op(g, "flat", OpType.FLATTEN, [pooled], axis=1)
    B.add_gemm(g, "head", flat, rng.standard_normal((2, channels)), rng.standard_normal(2) * 0.1)
    return B.finish(g, ["head"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=new_op_graphs(), data=st.data())
def test_random_chains_of_new_ops_are_bit_exact(graph, data):
    rng = np.random.default_rng(0)
    calib = rng.normal(0, 2, (8, *graph.node("x").attrs["shape"][1:])).astype(F32)
    test = rng.normal(0, 3, (4, *calib.shape[1:])).astype(F32)
    nodes = [n.name for n in graph.topo_order() if n.op not in (OpType.INPUT, OpType.CONSTANT)]
    options = dict(nb_bits=data.draw(st.sampled_from([4, 8, 8, 12])),
                   optimize_signs=data.draw(st.booleans()), per_channel=data.draw(st.booleans()),
                   single_shift=data.draw(st.booleans()),
                   target=data.draw(st.sampled_from(["default", "tflite", "onnx", "mcu-shift"])),
                   exclude=data.draw(st.lists(st.sampled_from(nodes), max_size=2, unique=True)))
    if options["target"] == "tflite":
        options.update(nb_bits=8, optimize_signs=False)
    if options["nb_bits"] > 8:
        options["target"] = aidge_lite.Target(acc_bits=64)
    q = aidge_lite.quantize_network(graph, calib, **options)
    fake = aidge_lite.run(q, test)
    integer = aidge_lite.run(q, test, engine="integer")
    np.testing.assert_array_equal(fake["head"], integer["head"])
