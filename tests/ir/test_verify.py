"""`verify`: a sound graph passes; each broken invariant raises a GraphError naming it.

Breakages that the Graph API refuses to make are made by editing `Node.inputs`
directly, which is exactly the mistake `verify` exists to catch.
"""
from __future__ import annotations

import numpy as np
import pytest

from aidge_lite.errors import GraphError
from aidge_lite.ir import Graph, Node, OpType, verify
from aidge_lite.ir.node import META_SHAPE


def mlp() -> Graph:
    """x (N, 4) -> Gemm(x, w(4, 3), b) -> Relu -> y."""
    g = Graph("mlp")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 4], "dtype": "float32"}))
    g.add_constant("w", np.zeros((4, 3), np.float32))
    g.add_constant("b", np.zeros(3, np.float32))
    g.add(Node("fc", OpType.GEMM, ["x", "w", "b"]))
    g.add(Node("y", OpType.RELU, ["fc"]))
    g.outputs = ["y"]
    g.node("x").meta[META_SHAPE] = (1, 4)
    return g


def conv() -> Graph:
    """x (N, 4, 8, 8) -> Conv(x, w(6, 2, 3, 3), group=2) -> y."""
    g = Graph("conv")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 4, 8, 8], "dtype": "float32"}))
    g.add_constant("w", np.zeros((6, 2, 3, 3), np.float32))
    g.add(Node("y", OpType.CONV, ["x", "w"], attrs={"group": 2}))
    g.outputs = ["y"]
    g.node("x").meta[META_SHAPE] = (1, 4, 8, 8)
    return g


def test_sound_graphs_pass():
    assert verify(mlp()) is None
    assert verify(conv()) is None


def test_cycle():
    g = mlp()
    g.set_inputs("fc", ["x", "w", "y"])
    with pytest.raises(GraphError, match="'mlp' has a cycle"):
        verify(g)


def test_dangling_input():
    g = mlp()
    g.node("y").inputs = ["ghost"]
    with pytest.raises(GraphError, match="'y': input 'ghost' does not exist"):
        verify(g)


def test_operand_without_edge():
    g = mlp()
    g.node("y").inputs = ["x"]  # names an existing tensor, but no edge x -> y
    with pytest.raises(GraphError, match="'y': input 'x' has no edge"):
        verify(g)


def test_edge_without_operand():
    g = mlp()
    g.node("fc").inputs = ["x", "w"]  # the edge b -> fc is still there
    with pytest.raises(GraphError, match=r"'fc': edges \['b', 'w', 'x'\] != inputs \['x', 'w'\]"):
        verify(g)


@pytest.mark.parametrize("op, inputs, arity", [
    (OpType.ADD, ["fc"], "1 inputs, expected 2..2"),
    (OpType.RELU, ["fc", "x"], "2 inputs, expected 1..1"),
    (OpType.GEMM, ["x"], "1 inputs, expected 2..3"),
])
def test_wrong_arity(op, inputs, arity):
    g = mlp()
    g.add(Node("bad", op, inputs))
    with pytest.raises(GraphError, match=f"'bad' \\({op.value}\\): {arity}"):
        verify(g)


@pytest.mark.parametrize("op, attrs, missing", [
    (OpType.CONCAT, {}, "axis"),
    (OpType.MAXPOOL, {"strides": [1, 1]}, "kernel_shape"),
    (OpType.RESHAPE, {}, "shape"),
    (OpType.QUANTIZER, {"scale": 1.0, "rounding": "half_even", "lo": -128}, "hi"),
])
def test_missing_required_attribute(op, attrs, missing):
    g = mlp()
    g.add(Node("bad", op, ["y"], attrs))
    with pytest.raises(GraphError, match=f"'bad' \\({op.value}\\): missing attribute\\(s\\) \\['{missing}'\\]"):
        verify(g)


def test_input_node_without_shape():
    g = Graph("g")
    g.add(Node("x", OpType.INPUT, attrs={"dtype": "float32"}))
    g.outputs = ["x"]
    with pytest.raises(GraphError, match=r"'x' \(Input\): missing attribute\(s\) \['shape'\]"):
        verify(g)


def test_gemm_weight_not_fitting_input():
    g = mlp()
    g.set_constant("w", np.zeros((5, 3), np.float32))
    with pytest.raises(GraphError, match=r"'fc' \(Gemm\): input shape \(1, 4\) does not fit weight shape \(5, 3\)"):
        verify(g)


def test_gemm_trans_b_is_honoured():
    g = mlp()
    g.set_constant("w", np.zeros((3, 4), np.float32))
    with pytest.raises(GraphError, match="'fc'"):
        verify(g)
    g.node("fc").attrs["transB"] = 1
    verify(g)


@pytest.mark.parametrize("w_shape, group", [((6, 4, 3, 3), 2), ((6, 2, 3, 3), 1), ((6, 2, 3), 2)])
def test_conv_weight_not_fitting_input(w_shape, group):
    g = conv()
    g.set_constant("w", np.zeros(w_shape, np.float32))
    g.node("y").attrs["group"] = group
    with pytest.raises(GraphError, match=r"'y' \(Conv\): input shape \(1, 4, 8, 8\) does not fit"):
        verify(g)


def test_graph_input_that_is_not_an_input_node():
    g = mlp()
    g.inputs.append("w")
    with pytest.raises(GraphError, match="graph input 'w' is not an Input node"):
        verify(g)


def test_missing_and_unknown_graph_outputs():
    g = mlp()
    g.outputs = []
    with pytest.raises(GraphError, match="'mlp' has no outputs"):
        verify(g)
    g.outputs = ["nope"]
    with pytest.raises(GraphError, match="graph output 'nope' does not exist"):
        verify(g)
