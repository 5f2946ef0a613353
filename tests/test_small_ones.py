"""Small first-hour fixes: `info` shows a free batch as N and every dtype; Graph.node() takes
a Node from topo_order(); the demo's report and next steps."""
from __future__ import annotations

import pytest

import aidge_lite
from aidge_lite import cli
from aidge_lite.errors import GraphError
from aidge_lite.tensor_info import tensor_dtypes, tensor_shapes

from .ptq.builders import mlp3, mlp_calibration


def test_info_free_batch_and_dtypes(capsys):
    assert cli.main(["info", "lenet"]) == 0
    out = capsys.readouterr().out
    assert "Output: logits  shape [N, 10]  float32" in out
    assert "(batch of one)" not in out
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines()
             if line.startswith("| ") and line.count("|") == 5 and "|---" not in line]
    assert table[0] == ["tensor", "op", "shape (N: batch)", "dtype"]
    assert len(table) == 24 and all(r[3] == "float32" for r in table[1:]), table  # no empty dtype
    assert ["/conv1/Conv_output_0", "Conv", "[N, 6, 24, 24]", "float32"] in table


def test_info_of_an_integer_graph(tmp_path, capsys):
    q = aidge_lite.quantize_network(mlp3(), mlp_calibration(32), nb_bits=8, optimize_signs=True)
    aidge_lite.save(q, tmp_path / "q.npz")
    assert cli.main(["info", str(tmp_path / "q.npz")]) == 0
    out = capsys.readouterr().out
    assert "Output: fc3  shape [N, 2]  int8" in out
    dtypes = tensor_dtypes(q)
    gemms = [n.name for n in q.topo_order() if n.op is aidge_lite.OpType.GEMM]
    assert all(dtypes[g] == "int64 (int32 acc)" for g in gemms)
    relu = dtypes["relu1"]
    assert relu == dtypes[q.node("relu1").inputs[0]] == "uint8"  # through the ReLU: its quantizer's dtype
    shapes = tensor_shapes(q)
    assert shapes["x"] == ("N", 3) and shapes["fc3"] == ("N", 2)


def test_tensor_info_rejects_a_non_graph():
    from aidge_lite.errors import InputError

    with pytest.raises(InputError, match="tensor_shapes: graph must be"):
        tensor_shapes("lenet")
    with pytest.raises(InputError, match="tensor_dtypes: graph must be"):
        tensor_dtypes(None)


def test_a_fixed_batch_graph_keeps_its_shapes():
    g = mlp3()
    g.node("x").attrs["shape"] = [1, 3]
    from aidge_lite.ir import Node, OpType

    g.add(Node("r", OpType.RESHAPE, ["fc3"], attrs={"shape": [1, 2]}))
    g.outputs = ["r"]
    from aidge_lite.interp.shapes import infer_shapes

    infer_shapes(g)
    shapes = tensor_shapes(g)
    assert shapes["r"] == (1, 2)  # the Reshape fixes batch 1: nothing to call N


def test_graph_node_takes_a_node():
    g = mlp3()
    for node in g.topo_order():  # what a user tries first
        assert g.node(node) is node and node in g and node.name in g
    with pytest.raises(GraphError, match="expected a node name"):
        g.node(3)
    with pytest.raises(GraphError, match="no node named 'nope'"):
        g.node("nope")
    assert [1] not in g  # unhashable: simply not a name
    other = mlp3()
    assert other.node("fc1") not in g  # a node of another graph


def test_topo_order_is_documented():
    assert "Node" in aidge_lite.Graph.topo_order.__doc__ and "node.name" in aidge_lite.Graph.topo_order.__doc__


def test_demo_next_steps(capsys, tmp_path):
    from aidge_lite import demo

    demo._next_steps(tmp_path)
    out = capsys.readouterr().out
    assert "Next:" in out and f"aidge-lite show {tmp_path / 'model.npz'}" in out
    assert "--preset best" in out and "report.md" in out


@pytest.mark.slow
def test_demo_writes_a_report(tmp_path, capsys):
    from aidge_lite import demo

    pytest.importorskip("qonnx")
    assert demo.main(["--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert {p.name for p in (tmp_path / "demo").iterdir()} >= {"model.npz", "report.json", "report.md"}
    assert "| 4    | best    | 99.38% | 98.85%" in out and "Next:" in out
