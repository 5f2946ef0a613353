"""Small op tests of the reference interpreter, against onnxruntime.

They cover what the ONNX node cases do not: the importer's older-opset forms
(attributes that later became inputs, legacy Softmax), float versions of the
Pad modes (the node cases use int32), weights as initializers, batch sizes
other than the declared one, and the Reshape batch rewrite. Same metric as
the conformance suite (`conformance_cases.rel_error` <= 1e-5).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aidge_lite
from aidge_lite.ir import OpType
from tests import conformance_cases as cc

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def build(nodes, feeds, inits=None, opset=13, batch=None):
    """A model with float inputs shaped like `feeds` (dim 0 named `batch` if given)."""
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch or v.shape[0], *v.shape[1:]] if v.ndim else [])
        for n, v in feeds.items()
    ]
    outputs = [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)]
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "t", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 7)  # old opsets need an old IR
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output[0].CopyFrom(inferred.graph.output[0])  # the checker wants its shape
    return model


def check(model, feeds):
    graph = aidge_lite.load_onnx(model)
    ours = aidge_lite.run(graph, feeds)
    return cc.compare([ours[o] for o in graph.outputs], cc.ort_run(model, feeds), model.graph.node[-1].op_type)


N = helper.make_node
X4 = {"x": rand(2, 3, 6, 7)}
X3 = {"x": rand(2, 3, 5)}
X2 = {"x": rand(4, 6)}

CASES = {
    # older opsets: attributes that later became inputs
    "clip_opset7_attrs": (N("Clip", ["x"], ["y"], min=-0.5, max=0.7), X3, {}, 7),
    "clip_opset11_max_only": (N("Clip", ["x", "", "hi"], ["y"]), X3, {"hi": np.float32(0.3)}, 11),
    "pad_opset7_attrs": (N("Pad", ["x"], ["y"], pads=[0, 1, 2, 0, 0, 2, 1, 1], value=1.5), X4, {}, 7),
    "pad_opset10_reflect": (N("Pad", ["x"], ["y"], pads=[0, 0, 2, 1, 0, 0, 1, 2], mode="reflect"), X4, {}, 10),
    "pad_reflect": (N("Pad", ["x", "p"], ["y"], mode="reflect"), X4, {"p": np.array([0, 0, 2, 1, 0, 0, 1, 2])}, 13),
    "pad_edge": (N("Pad", ["x", "p"], ["y"], mode="edge"), X4, {"p": np.array([0, 1, 2, 3, 0, 0, 1, 2])}, 13),
    "pad_wrap": (N("Pad", ["x", "p"], ["y"], mode="wrap"), X4, {"p": np.array([0, 0, 2, 1, 0, 0, 1, 2])}, 19),
    "pad_axes_value": (N("Pad", ["x", "p", "v", "a"], ["y"]), X4,
                       {"p": np.array([1, 2, 3, 0]), "v": np.float32(-2.0), "a": np.array([-1, 2])}, 18),
    "squeeze_opset11_attr": (N("Squeeze", ["x"], ["y"], axes=[2]), {"x": rand(2, 3, 1, 4)}, {}, 11),
    "unsqueeze_opset11_attr": (N("Unsqueeze", ["x"], ["y"], axes=[1, -1]), X3, {}, 11),
    "squeeze_all_ones": (N("Squeeze", ["x"], ["y"]), {"x": rand(2, 1, 3, 1)}, {}, 13),
    "softmax_opset11_legacy_axis1": (N("Softmax", ["x"], ["y"], axis=1), X3, {}, 11),
    "softmax_opset11_default": (N("Softmax", ["x"], ["y"]), X4, {}, 11),
    "softmax_opset13_axis1": (N("Softmax", ["x"], ["y"], axis=1), X3, {}, 13),
    "batchnorm_opset7_spatial": (N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=1, epsilon=1e-3),
                                 X4, {"s": rand(3), "b": rand(3), "m": rand(3), "v": np.float32([0.5, 1, 2])}, 7),
    "batchnorm_opset9_3d": (N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"]),
                            X3, {"s": rand(3), "b": rand(3), "m": rand(3), "v": np.float32([0.5, 1, 2])}, 9),
    "dropout_opset7_ratio": (N("Dropout", ["x"], ["y"], ratio=0.3), X3, {}, 7),
    "dropout_opset12_inputs": (N("Dropout", ["x", "r", "t"], ["y"]), X3,
                               {"r": np.float32(0.4), "t": np.array(False)}, 12),
    "flatten_axis0": (N("Flatten", ["x"], ["y"], axis=0), X4, {}, 11),
    "flatten_axis_neg1": (N("Flatten", ["x"], ["y"], axis=-1), X4, {}, 13),
    "leakyrelu_opset7": (N("LeakyRelu", ["x"], ["y"]), X3, {}, 7),
    "gemm_opset7_all_attrs": (N("Gemm", ["x", "w", "c"], ["y"], transA=1, transB=1, alpha=0.5, beta=2.0),
                              {"x": rand(6, 4)}, {"w": rand(5, 6), "c": rand(1, 5)}, 7),
    "gemm_vector_bias": (N("Gemm", ["x", "w", "c"], ["y"]), X2, {"w": rand(6, 3), "c": rand(3)}, 13),
    "matmul_const_weight_3d": (N("MatMul", ["x", "w"], ["y"]), X3, {"w": rand(5, 4)}, 13),
    "conv_group_dilation_bias": (N("Conv", ["x", "w", "b"], ["y"], group=3, dilations=[2, 1], pads=[1, 0, 2, 1],
                                   strides=[1, 2]), X4, {"w": rand(6, 1, 2, 3), "b": rand(6)}, 13),
    "conv_same_lower": (N("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER", strides=[2, 2]), X4, {"w": rand(4, 3, 2, 3)}, 11),
    "conv_valid": (N("Conv", ["x", "w"], ["y"], auto_pad="VALID"), X4, {"w": rand(2, 3, 3, 3)}, 11),
    "depthwise_conv": (N("Conv", ["x", "w"], ["y"], group=3, pads=[1, 1, 1, 1]), X4, {"w": rand(3, 1, 3, 3)}, 13),
    "averagepool_opset7": (N("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], pads=[1, 1, 1, 0], strides=[2, 2]),
                           X4, {}, 7),
    "averagepool_ceil_include_pad": (N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                       strides=[2, 2], ceil_mode=1, count_include_pad=1), X4, {}, 11),
    "maxpool_opset8": (N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2]), X4, {}, 8),
    "maxpool_ceil_dilated": (N("MaxPool", ["x"], ["y"], kernel_shape=[2, 3], strides=[2, 2], dilations=[2, 1],
                               ceil_mode=1, pads=[0, 1, 0, 1]), X4, {}, 12),
    "globalaveragepool": (N("GlobalAveragePool", ["x"], ["y"]), X4, {}, 7),
    "concat_with_constant": (N("Concat", ["x", "k"], ["y"], axis=-1), X3, {"k": rand(2, 3, 2)}, 13),
    "div_by_constant": (N("Div", ["x", "k"], ["y"]), X3, {"k": np.float32([1.5, -2.0, 4.0, 0.5, 3.0])}, 7),
    "transpose_default_perm": (N("Transpose", ["x"], ["y"]), X3, {}, 13),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_against_ort(name):
    node, feeds, inits, opset = CASES[name]
    assert check(build([node], feeds, inits, opset), feeds) <= cc.RTOL


def test_constant_node_forms():
    nodes = [
        N("Constant", [], ["k1"], value_float=2.0),
        N("Constant", [], ["k2"], value_floats=[1.0, 2.0, 3.0, 4.0, 5.0]),
        N("Constant", [], ["k3"], value=numpy_helper.from_array(rand(3, 5), "k3")),
        N("Mul", ["x", "k1"], ["a"]), N("Add", ["a", "k2"], ["b"]), N("Sub", ["b", "k3"], ["y"]),
    ]
    model = build(nodes, X3, opset=13)
    graph = aidge_lite.load_onnx(model)
    assert {graph.node(k).op for k in ("k1", "k2", "k3")} == {OpType.CONSTANT}
    assert check(model, X3) <= cc.RTOL


@pytest.mark.parametrize("batch", [1, 5])
def test_symbolic_batch_runs_at_any_size(batch):
    nodes = [N("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), N("Relu", ["c"], ["r"]),
             N("Flatten", ["r"], ["f"]), N("Gemm", ["f", "fw"], ["y"], transB=1)]
    inits = {"w": rand(4, 3, 3, 3), "fw": rand(10, 4 * 6 * 7)}
    model = build(nodes, {"x": rand(2, 3, 6, 7)}, inits, batch="N")
    feeds = {"x": rand(batch, 3, 6, 7)}
    assert check(model, feeds) <= cc.RTOL


def test_reshape_of_the_batch_follows_the_batch():
    """A fixed-batch model (batch 2) whose Reshape target starts with 2 runs at batch 3."""
    nodes = [N("Relu", ["x"], ["r"]), N("Reshape", ["r", "s"], ["y"])]
    model = build(nodes, {"x": rand(2, 3, 4)}, {"s": np.array([2, 12])})
    graph = aidge_lite.load_onnx(model)
    assert graph.node("y").attrs["shape"] == [0, 12]
    x = rand(3, 3, 4)
    np.testing.assert_array_equal(aidge_lite.run(graph, x)["y"], np.maximum(x, 0).reshape(3, 12))


def test_reshape_after_transpose_keeps_its_target():
    """dim 0 of the Reshape's data is not the batch: the target must stay as written."""
    nodes = [N("Transpose", ["x"], ["t"], perm=[1, 0, 2]), N("Reshape", ["t", "s"], ["y"])]
    feeds = {"x": rand(2, 3, 4)}
    model = build(nodes, feeds, {"s": np.array([2, -1])})
    assert aidge_lite.load_onnx(model).node("y").attrs["shape"] == [2, -1]
    assert check(model, feeds) <= cc.RTOL


def test_hand_checked_avgpool_divisors():
    """3x3 average pool, pads 1, stride 2 on ones: corner windows see 4 values, edges 6,
    all divided by the valid count (count_include_pad=0), so every output is 1."""
    model = build([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])],
                  {"x": np.ones((1, 1, 5, 5), np.float32)})
    graph = aidge_lite.load_onnx(model)
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    y = aidge_lite.run(graph, x)["y"][0, 0]
    assert y[0, 0] == (0 + 1 + 5 + 6) / 4
    assert y[0, 1] == (1 + 2 + 3 + 6 + 7 + 8) / 6
    assert y[1, 1] == np.mean(x[0, 0, 1:4, 1:4])
    np.testing.assert_array_equal(aidge_lite.run(graph, np.ones((1, 1, 5, 5), np.float32))["y"], 1.0)


def test_float64_on_request():
    model = build([N("Sigmoid", ["x"], ["y"])], X3)
    graph = aidge_lite.load_onnx(model)
    y = aidge_lite.run(graph, X3, dtype=np.float64)["y"]
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-X3["x"].astype(np.float64))), rtol=1e-15)
