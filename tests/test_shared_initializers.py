"""Two nodes reading one weight initializer (issue 18, item 4).

Tied weights, or what a constant-folding optimiser leaves, used to be quantized
to garbage with no error (output SQNR -11 dB against +30 dB with the weights
copied): the PTQ folds each BatchNorm into, and rescales, the weight of its own
node, and a shared weight took every node's changes. The importer now gives each
reader its own copy; the quantized model must do as well as the same model
written with two initializers, and both engines must agree bit for bit.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aidge_lite
from aidge_lite.ir import OpType

C = 8


def _bn_inits(prefix, rng):
    return {f"{prefix}_s": rng.uniform(0.3, 3.0, C), f"{prefix}_b": rng.normal(0, 0.3, C),
            f"{prefix}_m": rng.normal(0, 0.3, C), f"{prefix}_v": rng.uniform(0.2, 2.0, C)}


def _model(shared: bool, kind: str) -> onnx.ModelProto:
    """x -> conv0 -> [conv/gemm A -> BN/scale -> relu] -> [B, same weight] -> head."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.4, (C, C, 3, 3) if kind == "conv" else (C, C))
    second = "w" if shared else "w_copy"
    inits = {"w": w, "w_copy": w.copy(), "w0": rng.normal(0, 0.5, (C, 3, 3, 3)),
             "fc": rng.normal(0, 0.3, (4, C)), **_bn_inits("bn1", rng), **_bn_inits("bn2", rng)}
    if kind == "conv":
        body = [
            helper.make_node("Conv", ["h0", "w"], ["a"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["a", "bn1_s", "bn1_b", "bn1_m", "bn1_v"], ["an"]),
            helper.make_node("Relu", ["an"], ["ar"]),
            helper.make_node("Conv", ["ar", second], ["b"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["b", "bn2_s", "bn2_b", "bn2_m", "bn2_v"], ["bn"]),
            helper.make_node("Relu", ["bn"], ["br"]),
            helper.make_node("GlobalAveragePool", ["br"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"]),
        ]
        head = [helper.make_node("Conv", ["x", "w0"], ["c0"]), helper.make_node("Relu", ["c0"], ["h0"])]
    else:  # tied fully connected layers with their own biases
        body = [
            helper.make_node("Gemm", ["h0", "w", "bn1_b"], ["a"], transB=1),
            helper.make_node("Relu", ["a"], ["ar"]),
            helper.make_node("Gemm", ["ar", second, "bn2_b"], ["b"], transB=1),
            helper.make_node("Relu", ["b"], ["f"]),
        ]
        head = [helper.make_node("Conv", ["x", "w0"], ["c0"]), helper.make_node("Relu", ["c0"], ["r0"]),
                helper.make_node("GlobalAveragePool", ["r0"], ["g0"]), helper.make_node("Flatten", ["g0"], ["h0"])]
    nodes = head + body + [helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    used = {i for n in nodes for i in n.input}
    tensors = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items() if k in used]
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _sqnr(ref, got) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2)))


def _quantized_sqnr(model, calib, test):
    graph = aidge_lite.load_onnx(model)
    (ref,) = aidge_lite.run(graph, test).values()
    qgraph = aidge_lite.quantize_network(graph, calib, nb_bits=8)
    fake = aidge_lite.run(qgraph, test)
    ints = aidge_lite.run(qgraph, test, engine="integer")
    for name in fake:
        np.testing.assert_array_equal(fake[name], ints[name])
    (out,) = aidge_lite.dequantize(qgraph, ints).values()
    return _sqnr(ref, out)


@pytest.mark.parametrize("kind", ["conv", "gemm"])
def test_shared_weight_gets_one_copy_per_reader(kind):
    graph = aidge_lite.load_onnx(_model(True, kind))
    op = OpType.CONV if kind == "conv" else OpType.GEMM
    readers = [n for n in graph.topo_order() if n.op is op and graph.node(n.inputs[0]).op is not OpType.INPUT]
    weights = [n.inputs[1] for n in readers][:2]
    assert len(set(weights)) == 2
    np.testing.assert_array_equal(graph.constant(weights[0]), graph.constant(weights[1]))


@pytest.mark.parametrize("kind", ["conv", "gemm"])
def test_shared_weight_quantizes_like_copied_weights(kind):
    rng = np.random.default_rng(1)
    calib = rng.standard_normal((64, 3, 10, 10)).astype(np.float32)
    test = rng.standard_normal((64, 3, 10, 10)).astype(np.float32)
    copied = _quantized_sqnr(_model(False, kind), calib, test)
    shared = _quantized_sqnr(_model(True, kind), calib, test)
    assert copied > 20.0  # the reference point is a good quantization
    assert abs(shared - copied) <= 1.0, (shared, copied)
