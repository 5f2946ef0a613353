"""Graph mutation API, before/expected style.

Each test states the graph as `snap(g)` = ([(name, op, inputs)] in topological
order, graph outputs) before and after the mutation, and checks that `verify`
still holds (edges in sync with `Node.inputs`).
"""
from __future__ import annotations

import numpy as np
import pytest

from aidge_lite.errors import GraphError
from aidge_lite.ir import Graph, Node, OpType, verify

I, C, G, R, S, A, ID = (OpType.INPUT, OpType.CONSTANT, OpType.GEMM, OpType.RELU,
                        OpType.SIGMOID, OpType.ADD, OpType.IDENTITY)


def snap(g: Graph):
    return [(n.name, n.op, n.inputs) for n in g.topo_order()], list(g.outputs)


def diamond() -> Graph:
    """x -> g = Gemm(x, w) -> r = Relu(g), s = Sigmoid(g) -> a = Add(r, s)."""
    g = Graph("diamond")
    g.add(Node("x", I, attrs={"shape": [None, 2], "dtype": "float32"}))
    g.add_constant("w", np.ones((2, 3), np.float32))
    g.add(Node("g", G, ["x", "w"], attrs={"alpha": 1.0}))
    g.add(Node("r", R, ["g"]))
    g.add(Node("s", S, ["g"]))
    g.add(Node("a", A, ["r", "s"]))
    g.outputs = ["a"]
    verify(g)
    return g


BEFORE = (
    [("w", C, []), ("x", I, []), ("g", G, ["x", "w"]), ("r", R, ["g"]), ("s", S, ["g"]),
     ("a", A, ["r", "s"])],
    ["a"],
)


def test_snapshot_of_the_fixture():
    assert snap(diamond()) == BEFORE


def test_add():
    g = diamond()
    g.add(Node("t", OpType.TANH, ["a"]))
    nodes, outputs = BEFORE
    assert snap(g) == (nodes + [("t", OpType.TANH, ["a"])], outputs)
    assert [n.name for n in g.consumers("a")] == ["t"]
    verify(g)


def test_add_input_node_registers_graph_input():
    g = diamond()
    g.add(Node("y", I, attrs={"shape": [None, 3], "dtype": "float32"}))
    assert g.inputs == ["x", "y"]


def test_add_refuses_duplicates_and_unknown_inputs():
    g = diamond()
    with pytest.raises(GraphError, match="'r' already exists"):
        g.add(Node("r", R, ["g"]))
    with pytest.raises(GraphError, match=r"'t'.*\['nope'\]"):
        g.add(Node("t", R, ["nope"]))
    assert snap(g) == BEFORE


def test_insert_after_redirects_every_consumer():
    g = diamond()
    g.insert_after("g", Node("q", ID))
    assert snap(g) == (
        [("w", C, []), ("x", I, []), ("g", G, ["x", "w"]), ("q", ID, ["g"]), ("r", R, ["q"]),
         ("s", S, ["q"]), ("a", A, ["r", "s"])],
        ["a"],
    )
    verify(g)


def test_insert_after_a_graph_output_redirects_the_output():
    g = diamond()
    g.insert_after("a", Node("q", ID))
    nodes, _ = BEFORE
    assert snap(g) == (nodes + [("q", ID, ["a"])], ["q"])
    verify(g)


def test_insert_before_changes_one_operand_of_one_consumer():
    g = diamond()
    g.insert_before("s", Node("q", ID))
    assert snap(g) == (
        [("w", C, []), ("x", I, []), ("g", G, ["x", "w"]), ("q", ID, ["g"]), ("r", R, ["g"]),
         ("s", S, ["q"]), ("a", A, ["r", "s"])],
        ["a"],
    )
    verify(g)


def test_insert_before_on_a_repeated_operand_changes_only_that_position():
    g = diamond()
    g.set_inputs("a", ["r", "r"])
    g.insert_before("a", Node("q", ID), operand=1)
    assert g.node("a").inputs == ["r", "q"]
    assert g.node("q").inputs == ["r"]
    assert {("r", "a"), ("q", "a")} <= g.edges()
    g.prune()
    verify(g)


def test_insert_before_second_operand():
    g = diamond()
    g.insert_before("g", Node("q", ID), operand=1)
    assert g.node("g").inputs == ["x", "q"]
    assert g.node("q").inputs == ["w"]
    assert [n.name for n in g.consumers("w")] == ["q"]
    verify(g)


def test_replace_uses():
    g = diamond()
    g.add(Node("t", OpType.TANH, ["g"]))
    g.replace_uses("g", "t", exclude=("s",))
    assert snap(g) == (
        [("w", C, []), ("x", I, []), ("g", G, ["x", "w"]), ("s", S, ["g"]), ("t", OpType.TANH, ["g"]),
         ("r", R, ["t"]), ("a", A, ["r", "s"])],
        ["a"],
    )
    verify(g)


def test_replace_uses_rewrites_graph_outputs():
    g = diamond()
    g.add(Node("t", OpType.TANH, ["a"]))
    g.replace_uses("a", "t")
    assert g.outputs == ["t"]
    assert g.node("t").inputs == ["a"]  # the new tensor's own read of `old` stays
    verify(g)


def test_remove():
    g = diamond()
    g.add(Node("t", OpType.TANH, ["g"]))
    removed = g.remove("t")
    assert removed.name == "t" and snap(g) == BEFORE
    verify(g)


@pytest.mark.parametrize("name, users", [("g", r"\['r', 's'\]"), ("a", "graph outputs")])
def test_remove_refuses_a_node_still_used(name, users):
    g = diamond()
    with pytest.raises(GraphError, match=f"'{name}'.*{users}"):
        g.remove(name)
    assert snap(g) == BEFORE


def test_remove_input_node_unregisters_it():
    g = diamond()
    g.add(Node("y", I, attrs={"shape": [1], "dtype": "float32"}))
    g.remove("y")
    assert g.inputs == ["x"]


def test_bypass():
    g = diamond()
    g.bypass("r")
    assert snap(g) == (
        [("w", C, []), ("x", I, []), ("g", G, ["x", "w"]), ("s", S, ["g"]), ("a", A, ["g", "s"])],
        ["a"],
    )
    verify(g)


def test_bypass_a_graph_output():
    g = diamond()
    g.insert_after("a", Node("q", ID))
    g.bypass("q")
    assert snap(g) == BEFORE
    verify(g)


def test_bypass_refuses_multi_input_nodes():
    g = diamond()
    with pytest.raises(GraphError, match="'a': it has 2 inputs"):
        g.bypass("a")
    assert snap(g) == BEFORE


def test_set_inputs_keeps_edges_in_sync():
    g = diamond()
    g.set_inputs("a", ["s", "s"])
    assert g.node("a").inputs == ["s", "s"]
    assert ("r", "a") not in g.edges() and ("s", "a") in g.edges()
    assert [n.name for n in g.consumers("r")] == []
    g.set_inputs("a", ["r", "s"])
    assert snap(g) == BEFORE
    verify(g)


def test_set_inputs_refuses_unknown_names():
    g = diamond()
    with pytest.raises(GraphError, match=r"'a'.*\['nope'\]"):
        g.set_inputs("a", ["r", "nope"])
    assert snap(g) == BEFORE


def test_copy_is_deep():
    g = diamond()
    g.meta["k"] = [1]
    g.node("g").meta["range"] = 1.0
    c = g.copy()
    c.constant("w")[0, 0] = 99.0        # in-place change of the copy's array
    c.node("g").attrs["alpha"] = 2.0
    c.node("g").meta["range"] = 5.0
    c.meta["k"].append(2)
    c.set_inputs("a", ["s", "r"])
    c.outputs.append("g")
    c.add(Node("t", OpType.TANH, ["a"]))
    assert snap(g) == BEFORE
    assert g.constant("w")[0, 0] == 1.0
    assert g.node("g").attrs["alpha"] == 1.0 and g.node("g").meta["range"] == 1.0
    assert g.meta["k"] == [1]
    assert "t" not in g
    verify(g)
    verify(c)


def test_topo_order_is_deterministic_whatever_the_insertion_order():
    a = diamond()
    b = Graph("other order")
    b.add_constant("w", np.ones((2, 3), np.float32))
    b.add(Node("x", I, attrs={"shape": [None, 2], "dtype": "float32"}))
    b.add(Node("g", G, ["x", "w"]))
    b.add(Node("s", S, ["g"]))
    b.add(Node("r", R, ["g"]))
    b.add(Node("a", A, ["r", "s"]))
    b.outputs = ["a"]
    assert [n.name for n in a.topo_order()] == [n.name for n in b.topo_order()]
    assert [n.name for n in a.topo_order()] == [n.name for n in a.copy().topo_order()]
    assert list(a) == a.topo_order() == a.nodes()


def test_topo_order_refuses_a_cycle():
    g = diamond()
    g.set_inputs("g", ["x", "a"])
    with pytest.raises(GraphError, match="cycle"):
        g.topo_order()


def test_prune():
    g = diamond()
    g.add(Node("t", OpType.TANH, ["g"]))
    g.add(Node("u", R, ["t"]))
    g.add(Node("y", I, attrs={"shape": [1], "dtype": "float32"}))  # unused input: kept
    assert g.prune() == ["t", "u"]
    nodes, outputs = BEFORE
    assert snap(g) == (nodes + [("y", I, [])], outputs)  # lexicographic ties: 'a' < 'y'
    assert g.inputs == ["x", "y"]
    assert g.prune() == []
    verify(g)


def test_unique_name_and_lookups():
    g = diamond()
    assert g.unique_name("z") == "z"
    assert g.unique_name("g") == "g_1"
    g.add(Node("g_1", ID, ["g"]))
    assert g.unique_name("g") == "g_2"
    assert [n.name for n in g.producers("a")] == ["r", "s"]
    assert g.is_constant("w") and not g.is_constant("x") and not g.is_constant("nope")
    with pytest.raises(GraphError, match="'nope'"):
        g.node("nope")
    with pytest.raises(GraphError, match="'x' is a Input"):
        g.constant("x")
    with pytest.raises(GraphError, match="'x'"):
        g.set_constant("x", 1.0)
