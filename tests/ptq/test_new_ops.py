"""The ops exporters produce, quantized: Clip/ReLU6, arithmetic with constants, BatchNorm
without a conv, Mul of two activations, ReduceMean. Lookup-table activations are in
`test_new_op_tables.py`, whole networks and random chains in `test_new_op_networks.py`.

Each graph is quantized, run by both engines (`assert_array_equal`), and compared with
the float reference (SQNR).
"""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite.errors import QuantizationError
from aidge_lite.ir import Graph, OpType
from aidge_lite.kernels.rounding import ROUNDING_NAMES, round_float_ref

from . import builders as B
from .new_ops_helpers import F32, factors, ops, quantize_and_check


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
