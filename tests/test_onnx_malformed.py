"""`load_onnx` on untrusted models (issue 20): malformed models that onnxruntime refuses are
refused with an error naming the node or tensor (see also `test_onnx_hardening.py`)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import aidge_lite
from aidge_lite.errors import ModelLoadError, QuantizationError, UnsupportedOperatorError

from .onnx_hardening_helpers import F, lenet_path, model, ort_refuses, ort_run

pytest.importorskip("onnxruntime")


# ------------------------------------------------------------------ malformed models
W33 = ("W", np.ones((4, 1, 3, 3), np.float32))
X = [("x", ["N", 1, 8, 8])]
Y4 = [("y", ["a", "b", "c", "d"])]
Y2 = [("y", ["a", "b"])]


def _conv(inits=(W33,), **attrs):
    inputs = ["x", "W"] + (["B"] if len(inits) > 1 else [])
    return model([helper.make_node("Conv", inputs, ["y"], **attrs)], X, Y4, inits)


def _pool(**attrs):
    return model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], X, Y4)


def _gemm(c_shape):
    return model([helper.make_node("Gemm", ["x", "G", "C"], ["y"])], [("x", ["N", 4])], Y2,
                 [("G", np.ones((4, 3), np.float32)), ("C", np.ones(c_shape, np.float32))])


MALFORMED = {  # name: (model, error class, message)
    "conv kernel_shape": (_conv(kernel_shape=[5, 5]), ModelLoadError, "node 'y' \\(Conv\\): kernel_shape=\\[5, 5\\] contradicts"),
    "conv pads length": (_conv(pads=[1, 1]), ModelLoadError, "node 'y' \\(Conv\\): pads=\\[1, 1\\]: expected 4"),
    "conv auto_pad": (_conv(auto_pad="FOO"), ModelLoadError, "node 'y' \\(Conv\\): auto_pad='FOO'"),
    "conv negative pads": (_conv(pads=[-1, 0, 0, 0]), ModelLoadError, "node 'y' \\(Conv\\): pads=\\[-1, 0, 0, 0\\]"),
    "conv stride 0": (_conv(strides=[0, 1]), ModelLoadError, "strides"),
    "conv bias (1, 4)": (_conv((W33, ("B", np.ones((1, 4), np.float32)))), ModelLoadError,
                         "bias 'B' has shape \\[1, 4\\], expected \\[4\\]"),
    "flatten axis": (model([helper.make_node("Flatten", ["x"], ["y"], axis=7)], X, Y2), ModelLoadError,
                     "Invalid value\\(7\\) for attribute 'axis'"),
    "maxpool dilation 0": (_pool(kernel_shape=[2, 2], dilations=[0, 1]), ModelLoadError, "dilations"),
    "maxpool dilation -1": (_pool(kernel_shape=[2, 2], dilations=[-1, 1]), ModelLoadError, "dilations"),
    "maxpool pads >= kernel": (_pool(kernel_shape=[2, 2], pads=[2, 0, 0, 0]), ModelLoadError,
                               "node 'y' \\(MaxPool\\): pads=\\[2, 0, 0, 0\\] must be smaller than kernel"),
    "avgpool auto_pad": (model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], auto_pad="X")],
                               X, Y4), ModelLoadError, "node 'y' \\(AveragePool\\): auto_pad='X'"),
    "gemm C (2, 1, 3)": (_gemm((2, 1, 3)), ModelLoadError, "C 'C' of shape \\[2, 1, 3\\] does not broadcast"),
    "gemm C (5, 3)": (_gemm((5, 3)), ModelLoadError, "C 'C' of shape \\[5, 3\\] does not broadcast to the output shape \\[1, 3\\]"),
    "clip bound (2,)": (model([helper.make_node("Clip", ["x", "lo"], ["y"])], [("x", ["N", 4])], Y2,
                              [("lo", np.zeros(2, np.float32))]), ModelLoadError, "node 'y' \\(Clip\\): min 'lo' of shape \\[2\\] is not a scalar"),
}


def _int_input(op, elem, shape, inits=()):
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in inits]
    inputs = ["x"] + [t.name for t in inits]
    g = helper.make_graph([helper.make_node(op, inputs, ["y"])], "g",
                          [helper.make_tensor_value_info("x", elem, shape)],
                          [helper.make_tensor_value_info("y", elem, ["a"] * len(shape))], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


MALFORMED.update({
    "relu on int64": (_int_input("Relu", TensorProto.INT64, ["N", 4]), UnsupportedOperatorError,
                      "node 'x': .*a int64 graph input"),
    "add on int32": (_int_input("Add", TensorProto.INT32, ["N", 4], [("k", np.ones(4, np.int32))]),
                     UnsupportedOperatorError, "node 'x': .*a int32 graph input"),
    "clip bound (1, 1)": (model([helper.make_node("Clip", ["x", "lo"], ["y"])], [("x", ["N", 4])], Y2,
                                [("lo", np.zeros((1, 1), np.float32))]), ModelLoadError, "min 'lo' of shape \\[1, 1\\] is not a scalar"),
})
MALFORMED.update({
    "batchnorm B (1, 1)": (model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])], X, Y4,
                                 [("s", np.ones(1, np.float32)), ("b", np.ones((1, 1), np.float32)),
                                  ("m", np.zeros(1, np.float32)), ("v", np.ones(1, np.float32))]),
                           ModelLoadError, "node 'y' \\(BatchNormalization\\): 'b' has shape \\[1, 1\\], expected \\[1\\]"),
    "conv channels": (_conv((("W", np.ones((4, 2, 3, 3), np.float32)),)), ModelLoadError,
                      "input 'x' has 1 channels, the weights 'W' \\[4, 2, 3, 3\\] with group=1 take 2"),
    "global pool rank 2": (model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], [("x", ["N", 4])], Y2),
                           ModelLoadError, "input 'x' has rank 2, expected >= 3"),
    # a dead branch (pruned by the import, validated by ORT) reading a 1-D initializer
    "dead concat": (model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["K"], ["k"]),
                           helper.make_node("Concat", ["y", "k"], ["dead"], axis=0)], X, Y4,
                          [("K", np.ones(3, np.float32))]), ModelLoadError, "Concat must have same rank"),
})
MALFORMED["same node name"] = (model([helper.make_node("Relu", ["x"], ["r"], name="n"),
                                     helper.make_node("Relu", ["r"], ["y"], name="n")], X, Y4),
                              ModelLoadError, "two nodes are named 'n'")
MALFORMED["dropout mode (2,)"] = (
    model([helper.make_node("Dropout", ["x", "", "t"], ["y"])], X, Y4,
          [numpy_helper.from_array(np.zeros(2, bool), "t")], opset=13),
    ModelLoadError, "training_mode 't' of shape \\[2\\] is not a scalar")  # was a ValueError
MALFORMED["conv auto_pad + pads"] = (_conv(auto_pad="SAME_UPPER", pads=[1, 1, 1, 1]), ModelLoadError,
                                     "has both auto_pad and pads")
# ORT runs this valid model, which we refuse: an int32 Add computed in float would not wrap.
ORT_RUNS = {"add on int32"}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_model_is_refused_like_onnxruntime(name):
    m, error, match = MALFORMED[name]
    with pytest.raises(error, match=match):
        aidge_lite.load_onnx(m)
    inp = m.graph.input[0]
    dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    assert ort_refuses(m, {"x": np.ones(shape, dtype)}) == (name not in ORT_RUNS)


def test_clip_bound_of_shape_1_is_a_scalar():
    """ORT takes a bound of shape (1,); the importer did `float()` of a 1-D array (TypeError)."""
    m = model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], [("x", ["N", 4])], Y2,
              [("lo", np.zeros(1, np.float32)), ("hi", np.array(2.0, np.float32))])
    x = np.linspace(-3, 3, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(aidge_lite.run(aidge_lite.load_onnx(m), x)["y"], ort_run(m, {"x": x})[0])


def test_output_from_initializers_only_runs_and_quantize_refuses_it():
    """The float reference gives the constant (like ORT); quantize_network refuses it by name
    before any pass runs (was a KeyError at its last pass)."""
    m = model([helper.make_node("Gemm", ["x", "G"], ["y"]), helper.make_node("Identity", ["K"], ["k"])],
              [("x", ["N", 4])], [("y", ["N", 3]), ("k", [1, 4])],
              [("G", np.ones((4, 3), np.float32)), ("K", np.arange(4, dtype=np.float32).reshape(1, 4))])
    graph = aidge_lite.load_onnx(m)
    x = np.ones((2, 4), np.float32)
    ours, ref = aidge_lite.run(graph, x), ort_run(m, {"x": x})
    np.testing.assert_array_equal(ours["k"], ref[1])
    np.testing.assert_array_equal(ours["y"], ref[0])
    with pytest.raises(QuantizationError, match="graph output 'k' depends on no graph input"):
        aidge_lite.quantize_network(graph, np.random.default_rng(0).random((8, 4), np.float32))


def test_deep_chain_loads():
    n = 3000
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(n)]
    graph = aidge_lite.load_onnx(model(nodes, [("t0", ["N", 3])], [(f"t{n}", ["N", 3])]))
    x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    np.testing.assert_array_equal(aidge_lite.run(graph, x)[f"t{n}"], np.maximum(x, 0))


def test_recursion_and_memory_errors_become_model_load_errors(monkeypatch):
    from aidge_lite.interp import shapes

    for exc, match in ((RecursionError, "nests too deeply"), (MemoryError, "does not fit in memory")):
        def boom(graph, exc=exc):
            raise exc()
        monkeypatch.setattr(shapes, "infer_shapes", boom)
        with pytest.raises(ModelLoadError, match=match):
            aidge_lite.load_onnx(lenet_path())


def test_deeply_nested_bytes_are_a_clean_error():
    """Subgraphs nested past protobuf's depth limit: a parse error, not a crash or a RecursionError."""
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "leaf", [],
                             [helper.make_tensor_value_info("o", F, ["N", 3])])
    data = leaf.SerializeToString()
    for _ in range(200):  # GraphProto{node: NodeProto{attribute: AttributeProto{g: <data>}}}, by hand
        attr = _field(5, b"\x0a\x01g" + b"\x20\x05" + _field(6, data))  # name, type=GRAPH, g
        node = _field(1, b"c") + _field(2, b"o") + _field(4, b"If") + attr
        data = _field(1, node)
    model_bytes = b"\x08\x08" + _field(7, data) + _field(8, b"\x10\x0d")  # ir_version 8, graph, opset 13
    with pytest.raises((ModelLoadError, UnsupportedOperatorError)):
        aidge_lite.load_onnx(model_bytes)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_non_finite_weights_are_refused_at_load_and_by_quantize():
    """A -Inf weight gives NaN in a Conv that ORT's Relu turns into 0 and ours keeps: refused at
    load, by name. A graph built otherwise is refused by the PTQ before any pass (was a
    ZeroDivisionError in normalize_parameters)."""
    g = np.ones((4, 3), np.float32)
    g[1, 2] = -np.inf
    m = model([helper.make_node("Gemm", ["x", "G"], ["y"])], [("x", ["N", 4])], [("y", ["N", 3])], [("G", g)])
    with pytest.raises(ModelLoadError, match="tensor 'G' \\(initializer\\) holds NaN or Inf"):
        aidge_lite.load_onnx(m)
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((4, 3), np.float32), "G"))
    graph = aidge_lite.load_onnx(m)
    graph.set_constant("G", g)
    with pytest.raises(QuantizationError, match="constant 'G' holds NaN or Inf"):
        aidge_lite.quantize_network(graph, np.random.default_rng(0).random((8, 4), np.float32))


@pytest.mark.parametrize("data_type", [99, 0])
def test_unknown_tensor_data_type_is_a_clean_error(data_type):
    w = numpy_helper.from_array(np.ones(4, np.float32), "W")
    w.data_type = data_type
    m = model([helper.make_node("Add", ["x", "W"], ["y"])], [("x", ["N", 4])], [("y", ["N", 4])], [w])
    with pytest.raises(ModelLoadError, match="tensor name: W|tensor 'W'"):
        aidge_lite.load_onnx(m)
