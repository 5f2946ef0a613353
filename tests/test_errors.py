"""Bad input for import and run: each raises a clear `aidge_lite.errors` exception
whose message names the culprit (file, node, tensor or opset)."""
from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aidge_lite
from aidge_lite.errors import (
    AidgeLiteError, ExecutionError, InputError, ModelLoadError, UnsupportedOperatorError,
)
from aidge_lite.ir import Graph, Node, OpType

MNIST8 = Path(str(importlib.resources.files("qonnx") / "data" / "onnx" / "mnist-conv" / "model.onnx"))


def model(nodes, inputs, outputs, inits=(), opset=13) -> onnx.ModelProto:
    """A ModelProto from helper pieces; inputs/outputs are (name, shape) float tensors."""
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    vo = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs]
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in inits]
    graph = helper.make_graph(nodes, "g", vi, vo, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def relu_model(opset=13):
    return model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [("x", ["N", 3])], [("y", ["N", 3])],
                 opset=opset)


def two_inputs():
    """y = a + b, a: (N, 3), b: (N, 3)."""
    return aidge_lite.load_onnx(model(
        [helper.make_node("Add", ["a", "b"], ["y"])], [("a", ["N", 3]), ("b", ["N", 3])], [("y", ["N", 3])]))


def test_all_errors_are_aidge_lite_errors():
    assert issubclass(ModelLoadError, AidgeLiteError) and issubclass(InputError, ValueError)


# ------------------------------------------------------------------ loading
def test_truncated_file(tmp_path):
    path = tmp_path / "truncated.onnx"
    data = MNIST8.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated.onnx"):
        aidge_lite.load_onnx(path)


def test_truncated_bytes_do_not_flood_the_message():
    data = MNIST8.read_bytes()[:5000]
    with pytest.raises(ModelLoadError, match="<5000 bytes>") as info:
        aidge_lite.load_onnx(data)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("garbage", [b"\x07not an onnx model at all" * 4, b"\x00" * 64, b"\xff\xfe\xfd"])
def test_garbage_bytes(tmp_path, garbage):
    with pytest.raises(ModelLoadError, match=f"<{len(garbage)} bytes>"):
        aidge_lite.load_onnx(garbage)
    path = tmp_path / "garbage.onnx"
    path.write_bytes(garbage)
    with pytest.raises(ModelLoadError, match="garbage.onnx"):
        aidge_lite.load_onnx(str(path))


def test_empty_bytes():
    with pytest.raises(ModelLoadError, match="<0 bytes>"):
        aidge_lite.load_onnx(b"")


def test_nonexistent_path(tmp_path):
    with pytest.raises(ModelLoadError, match="no_such_model.onnx' does not exist"):
        aidge_lite.load_onnx(tmp_path / "no_such_model.onnx")


def test_not_a_model_object():
    with pytest.raises(ModelLoadError, match="cannot load a int"):
        aidge_lite.load_onnx(42)


def test_invalid_model_names_the_graph():
    m = relu_model()
    m.graph.node[0].input[0] = "undefined_tensor"
    with pytest.raises(ModelLoadError, match="invalid ONNX model 'g'"):
        aidge_lite.load_onnx(m)


@pytest.mark.parametrize("op, attrs", [("Sin", {}), ("LSTM", {"hidden_size": 4})])
def test_unsupported_operator(op, attrs):
    if op == "LSTM":
        w, r = np.zeros((1, 16, 3), np.float32), np.zeros((1, 16, 4), np.float32)
        nodes = [helper.make_node("LSTM", ["x", "W", "R"], ["seq", "h"], name="my_lstm", **attrs)]
        m = model(nodes, [("x", [2, 1, 3])], [("h", [1, 1, 4])], inits=[("W", w), ("R", r)])
        name = "my_lstm"
    else:
        m = model([helper.make_node("Sin", ["x"], ["y"], name="my_sin")], [("x", [1, 3])], [("y", [1, 3])])
        name = "my_sin"
    with pytest.raises(UnsupportedOperatorError, match=f"node '{name}': unsupported operator '{op}'") as info:
        aidge_lite.load_onnx(m)
    assert (info.value.node, info.value.op_type) == (name, op)


def test_unnamed_unsupported_node_is_named_by_its_output():
    m = model([helper.make_node("Sin", ["x"], ["sin_out"])], [("x", [1, 3])], [("sin_out", [1, 3])])
    with pytest.raises(UnsupportedOperatorError, match="node 'sin_out'"):
        aidge_lite.load_onnx(m)


def test_non_default_domain():
    m = relu_model()
    m.graph.node[0].domain = "com.example"
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOperatorError, match="node 'relu': unsupported operator 'Relu'"):
        aidge_lite.load_onnx(m)


@pytest.mark.parametrize("opset", [6, 22, 25])
def test_opset_outside_7_to_21(opset):
    m = relu_model()
    m.opset_import[0].version = opset
    with pytest.raises(ModelLoadError, match=f"opset {opset} is outside the supported range 7..21"):
        aidge_lite.load_onnx(m)


def test_supported_opset_bounds_load():
    for opset in (7, 21):
        aidge_lite.load_onnx(relu_model(opset))


def test_reading_maxpool_indices():
    nodes = [
        helper.make_node("MaxPool", ["x"], ["pooled", "indices"], kernel_shape=[2, 2], name="pool"),
        helper.make_node("Identity", ["indices"], ["idx"]),
    ]
    m = model(nodes, [("x", [1, 1, 4, 4])], [])
    m.graph.output.append(helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 1, 3, 3]))
    with pytest.raises(UnsupportedOperatorError,
                       match="node 'pooled'.*'MaxPool'.*extra output 'indices' is read by node 'idx'"):
        aidge_lite.load_onnx(m)


def test_graph_output_is_maxpool_indices():
    m = model([helper.make_node("MaxPool", ["x"], ["pooled", "indices"], kernel_shape=[2, 2])],
              [("x", [1, 1, 4, 4])], [])
    m.graph.output.append(helper.make_tensor_value_info("indices", TensorProto.INT64, [1, 1, 3, 3]))
    with pytest.raises(UnsupportedOperatorError, match="'pooled'.*'indices' is read by graph output"):
        aidge_lite.load_onnx(m)


def test_dynamic_reshape_shape_names_node_and_op():
    m = model([helper.make_node("Reshape", ["x", "shape"], ["y"])], [("x", [2, 3])], [("y", [3, 2])])
    m.graph.input.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [2]))
    with pytest.raises(UnsupportedOperatorError, match="node 'y': unsupported operator 'Reshape'.*'shape' must be a constant"):
        aidge_lite.load_onnx(m)


def test_graph_input_without_shape():
    m = relu_model()
    m.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(ModelLoadError, match="invalid ONNX model 'g': .*'shape'"):  # the checker refuses it
        aidge_lite.load_onnx(m)


def test_non_numeric_graph_input():
    m = model([helper.make_node("Identity", ["x"], ["y"])], [], [])
    m.graph.input.append(helper.make_tensor_value_info("x", TensorProto.STRING, [2]))
    m.graph.output.append(helper.make_tensor_value_info("y", TensorProto.STRING, [2]))
    with pytest.raises(UnsupportedOperatorError, match="node 'x'.*only numeric tensor inputs"):
        aidge_lite.load_onnx(m)


# ------------------------------------------------------------------ running
def test_missing_graph_input():
    with pytest.raises(InputError, match="missing graph input 'b'"):
        aidge_lite.run(two_inputs(), {"a": np.zeros((1, 3), np.float32)})


def test_one_array_for_a_two_input_graph():
    with pytest.raises(InputError, match=r"\['a', 'b'\]"):
        aidge_lite.run(two_inputs(), np.zeros((1, 3), np.float32))


def test_unknown_input_name():
    feeds = {"a": np.zeros((1, 3)), "b": np.zeros((1, 3)), "typo": np.zeros((1, 3))}
    with pytest.raises(InputError, match=r"unknown input\(s\) \['typo'\]"):
        aidge_lite.run(two_inputs(), feeds)


@pytest.mark.parametrize("shape", [(3,), (1, 1, 3), ()])
def test_wrong_input_rank(shape):
    graph = aidge_lite.load_onnx(relu_model())
    with pytest.raises(InputError, match=f"input 'x': rank {len(shape)}"):
        aidge_lite.run(graph, np.zeros(shape, np.float32))


def test_wrong_non_batch_shape():
    graph = aidge_lite.load_onnx(relu_model())
    with pytest.raises(InputError, match=r"input 'x': shape \(2, 4\) does not match .* at axis 1"):
        aidge_lite.run(graph, np.zeros((2, 4), np.float32))


def test_batch_dimension_is_free():
    graph = aidge_lite.load_onnx(MNIST8)  # declared batch 1
    (out,) = aidge_lite.run(graph, np.zeros((3, 1, 28, 28), np.float32)).values()
    assert out.shape == (3, 10)


@pytest.mark.parametrize("value", [
    np.zeros((1, 3), np.complex64), np.zeros((1, 3), bool), np.array([["a", "b", "c"]]),
    np.array([[None, None, None]], dtype=object),
])
def test_wrong_input_dtype(value):
    graph = aidge_lite.load_onnx(relu_model())
    with pytest.raises(InputError, match=f"input 'x': dtype {value.dtype}"):
        aidge_lite.run(graph, value)


def test_failing_op_raises_execution_error_naming_the_node():
    g = Graph("bad_matmul")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 3], "dtype": "float32"}))
    g.add_constant("w", np.zeros((4, 5), np.float32))  # 3 != 4: the product cannot run
    g.add(Node("the_matmul", OpType.MATMUL, ["x", "w"]))
    g.outputs = ["the_matmul"]
    with pytest.raises(ExecutionError, match=r"node 'the_matmul' \(MatMul\)") as info:
        aidge_lite.run(g, np.zeros((2, 3), np.float32))
    assert isinstance(info.value.__cause__, ValueError)  # the original error is kept


def test_model_failing_shape_inference_at_load():
    """A model that cannot run at all fails at load (shape inference runs it)."""
    m = model([helper.make_node("MatMul", ["x", "w"], ["prod"])], [("x", ["N", 3])], [("prod", ["N", 5])],
              inits=[("w", np.zeros((4, 5), np.float32))])
    with pytest.raises(ExecutionError, match="node 'prod' \\(MatMul\\)"):
        aidge_lite.load_onnx(m)
