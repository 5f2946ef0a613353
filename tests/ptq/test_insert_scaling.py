"""insert_scaling: where scaling nodes go (before/expected structure tests)."""
from __future__ import annotations

import pytest

from aidge_lite.ir import AFFINE, JOINING, OpType
from aidge_lite.ptq import PTQConfig, run_pipeline
from aidge_lite.ptq.insert_scaling import insert_scaling
from aidge_lite.ptq.prepare import prepare
from aidge_lite.ptq.walk import branch_rescaler

from . import builders as B
from .test_prepare import load_or_skip

I, S, G, C, R, A, CAT, F, MP = (
    OpType.INPUT, OpType.SCALING, OpType.GEMM, OpType.CONV, OpType.RELU, OpType.ADD, OpType.CONCAT,
    OpType.FLATTEN, OpType.MAXPOOL)


def scaled(graph):
    g = graph.copy()
    run_pipeline(g, PTQConfig(), passes=(prepare, insert_scaling))
    return g


def prepared(graph):
    g = graph.copy()
    run_pipeline(g, PTQConfig(), passes=(prepare,))
    return g


def strip_scaling(graph):
    """The structure with every SCALING node bypassed (must equal the prepared graph's)."""
    def source(name):
        while graph.node(name).op is OpType.SCALING:
            name = graph.node(name).inputs[0]
        return name
    return {n.name: (n.op, [source(i) for i in n.inputs]) for n in graph.topo_order()
            if n.op not in (OpType.CONSTANT, OpType.SCALING)}


def check_invariants(before, after):
    """Generic rules on any graph: one scaling node per affine/join/input, private branch rescalers."""
    assert strip_scaling(after) == B.structure(before)
    roles = B.rescalers(after)
    for node in before.topo_order():
        if node.op is OpType.INPUT or node.op in AFFINE or node.op in JOINING:
            role = "input" if node.op is OpType.INPUT else ("affine" if node.op in AFFINE else "join")
            name = f"{node.name}_scaling"
            assert roles.get(name) == (role, [node.name]), name
            assert [c.name for c in after.consumers(node.name)] == [name]
    for node in after.topo_order():
        if node.op in JOINING:
            for operand in node.inputs:
                assert branch_rescaler(after, operand) is not None, (node.name, operand)
    expected_count = sum(1 for n in before.topo_order()
                         if n.op is OpType.INPUT or n.op in AFFINE or n.op in JOINING)
    residual = [n for n, (role, _) in roles.items() if role == "residual"]
    assert len(roles) == expected_count + len(residual)
    for node in after.topo_order():
        if node.op is OpType.SCALING:
            assert node.attrs["scale"] == 1.0


def test_mlp():
    graph = B.mlp3()
    g = scaled(graph)
    assert B.structure_list(g) == [
        ("x", I, []),
        ("x_scaling", S, ["x"]),
        ("fc1", G, ["x_scaling", "fc1_w", "fc1_b"]),
        ("fc1_scaling", S, ["fc1"]),
        ("relu1", R, ["fc1_scaling"]),
        ("fc2", G, ["relu1", "fc2_w", "fc2_b"]),
        ("fc2_scaling", S, ["fc2"]),
        ("relu2", R, ["fc2_scaling"]),
        ("fc3", G, ["relu2", "fc3_w", "fc3_b"]),
        ("fc3_scaling", S, ["fc3"]),
    ]
    assert g.outputs == ["fc3_scaling"]
    assert B.rescalers(g) == {"x_scaling": ("input", ["x"]), "fc1_scaling": ("affine", ["fc1"]),
                              "fc2_scaling": ("affine", ["fc2"]), "fc3_scaling": ("affine", ["fc3"])}
    check_invariants(prepared(graph), g)


def test_residual_block():
    graph = B.residual_mlp()
    g = scaled(graph)
    assert B.structure(g) == {
        "x": (I, []),
        "x_scaling": (S, ["x"]),
        "fc1": (G, ["x_scaling", "fc1_w", "fc1_b"]),
        "fc1_scaling": (S, ["fc1"]),
        "relu1": (R, ["fc1_scaling"]),
        "fc2": (G, ["relu1", "fc2_w", "fc2_b"]),
        "fc2_scaling": (S, ["fc2"]),
        "add_res1": (S, ["relu1"]),             # the purely residual branch (relu1 is a fork)
        "add": (A, ["fc2_scaling", "add_res1"]),
        "add_scaling": (S, ["add"]),
        "relu2": (R, ["add_scaling"]),
        "fc3": (G, ["relu2", "fc3_w", "fc3_b"]),
        "fc3_scaling": (S, ["fc3"]),
    }
    assert B.rescalers(g)["add_res1"] == ("residual", ["relu1"])
    assert B.rescalers(g)["add_scaling"] == ("join", ["add"])
    check_invariants(prepared(graph), g)


def test_residual_conv_block():
    graph = B.residual_conv()
    g = scaled(graph)
    assert B.structure(g)["add"] == (A, ["conv3_scaling", "add_res1"])
    assert B.structure(g)["relu2"] == (R, ["conv2_scaling"])
    assert B.structure(g)["conv3"] == (C, ["relu2", "conv3_w", "conv3_b"])
    assert B.rescalers(g) == {
        "x_scaling": ("input", ["x"]), "conv1_scaling": ("affine", ["conv1"]),
        "conv2_scaling": ("affine", ["conv2"]), "conv3_scaling": ("affine", ["conv3"]),
        "add_res1": ("residual", ["relu1"]), "add_scaling": ("join", ["add"]),
        "fc_scaling": ("affine", ["fc"]),
    }
    check_invariants(prepared(graph), g)


def test_concat_block():
    graph = B.concat_block()
    g = scaled(graph)
    assert B.structure(g) == {
        "x": (I, []),
        "x_scaling": (S, ["x"]),
        "fc1": (G, ["x_scaling", "fc1_w", "fc1_b"]),
        "fc1_scaling": (S, ["fc1"]),
        "relu1": (R, ["fc1_scaling"]),
        "fca": (G, ["relu1", "fca_w", "fca_b"]),
        "fca_scaling": (S, ["fca"]),
        "relu_a": (R, ["fca_scaling"]),          # private seamless chain: no residual node
        "fcb": (G, ["relu1", "fcb_w", "fcb_b"]),
        "fcb_scaling": (S, ["fcb"]),
        "cat_res2": (S, ["relu1"]),
        "cat": (CAT, ["relu_a", "fcb_scaling", "cat_res2"]),
        "cat_scaling": (S, ["cat"]),
        "fc_out": (G, ["cat_scaling", "fc_out_w", "fc_out_b"]),
        "fc_out_scaling": (S, ["fc_out"]),
    }
    assert B.rescalers(g)["cat_res2"] == ("residual", ["relu1"])
    assert B.rescalers(g)["cat_scaling"] == ("join", ["cat"])
    check_invariants(prepared(graph), g)


def test_must_not_fire_without_affine_or_join():
    graph = B.no_affine()
    g = scaled(graph)
    assert B.structure_list(g) == [
        ("x", I, []),
        ("x_scaling", S, ["x"]),
        ("relu", R, ["x_scaling"]),
        ("pool", MP, ["relu"]),
        ("flat", F, ["pool"]),
    ]
    assert B.rescalers(g) == {"x_scaling": ("input", ["x"])}
    check_invariants(prepared(graph), g)


def test_skip_from_affine_output_gets_residual_node():
    graph = B.skip_from_affine()
    g = scaled(graph)
    assert B.structure(g) == {
        "x": (I, []),
        "x_scaling": (S, ["x"]),
        "fc1": (G, ["x_scaling", "fc1_w", "fc1_b"]),
        "fc1_scaling": (S, ["fc1"]),            # a fork: read by fc2 and by the join
        "fc2": (G, ["fc1_scaling", "fc2_w", "fc2_b"]),
        "fc2_scaling": (S, ["fc2"]),
        "add_res1": (S, ["fc1_scaling"]),       # the skip needs its own rescaler
        "add": (A, ["fc2_scaling", "add_res1"]),
        "add_scaling": (S, ["add"]),
        "fc3": (G, ["add_scaling", "fc3_w", "fc3_b"]),
        "fc3_scaling": (S, ["fc3"]),
    }
    check_invariants(prepared(graph), g)


def test_skip_from_input_gets_residual_node():
    graph = B.skip_from_input()
    g = scaled(graph)
    assert B.rescalers(g) == {
        "x_scaling": ("input", ["x"]), "fc1_scaling": ("affine", ["fc1"]),
        "add_res1": ("residual", ["x_scaling"]), "add_scaling": ("join", ["add"]),
        "fc3_scaling": ("affine", ["fc3"]),
    }
    assert B.structure(g)["add"] == (A, ["fc1_scaling", "add_res1"])
    check_invariants(prepared(graph), g)


def test_join_operand_rescalers_are_private():
    """After insert_scaling, the rescaler feeding each join operand has no other reader."""
    for builder in (B.residual_mlp, B.residual_conv, B.concat_block):
        g = scaled(builder())
        for node in g.topo_order():
            if node.op in JOINING:
                for operand in node.inputs:
                    rescaler = branch_rescaler(g, operand)
                    assert [c.name for c in g.consumers(rescaler.name)] in ([node.name], [operand]), \
                        (g.name, node.name, operand)


def zoo_expected(before):
    """Input / affine / join scaling nodes expected from the prepared float graph's names."""
    expected = {f"{n}_scaling": ("input", [n]) for n in before.inputs}
    for node in before.topo_order():
        if node.op in AFFINE:
            expected[f"{node.name}_scaling"] = ("affine", [node.name])
        elif node.op in JOINING:
            expected[f"{node.name}_scaling"] = ("join", [node.name])
    return expected


def by_op(graph, op):
    return [n for n in graph.topo_order() if n.op is op]


def test_resnet_tiny():
    """6 Conv + 1 Gemm (BN folded), 2 Adds; block1's skip is purely residual (from the stem MaxPool)."""
    graph = load_or_skip("resnet_tiny")
    before = prepared(graph)
    g = scaled(graph)
    assert len(by_op(before, C)) == 6 and len(by_op(before, G)) == 1 and len(by_op(before, A)) == 2
    assert not by_op(g, OpType.BATCHNORM)
    roles = B.rescalers(g)
    residual = {k: v for k, v in roles.items() if v[0] == "residual"}
    assert {k: v for k, v in roles.items() if v[0] != "residual"} == zoo_expected(before)
    add1, add2 = by_op(before, A)
    # block1: Add(conv2 branch, identity skip). The skip is read from a fork -> <add>_res1
    skip_source = add1.inputs[1]
    assert residual == {f"{add1.name}_res1": ("residual", [skip_source])}
    assert before.node(skip_source).op is MP and len(before.consumers(skip_source)) == 2
    assert g.node(add1.name).inputs == [f"{add1.inputs[0]}_scaling", f"{add1.name}_res1"]
    # block2: both operands come from an affine node (conv2 and the projection conv): no residual node
    assert all(before.node(i).op is C for i in add2.inputs)
    assert g.node(add2.name).inputs == [f"{i}_scaling" for i in add2.inputs]
    # the join's scaling node feeds what the join fed; the fork itself is untouched
    assert [c.op for c in g.consumers(f"{add1.name}_scaling")] == [R]
    assert sorted(c.name for c in g.consumers(skip_source)) == sorted(
        [f"{add1.name}_res1"] + [c.name for c in before.consumers(skip_source) if c.name != add1.name])
    assert g.outputs == [f"{before.outputs[0]}_scaling"]
    check_invariants(before, g)


def test_inception_tiny():
    """Convs + 1 Gemm, one 4-way Concat whose operands all have their own conv: no residual node."""
    graph = load_or_skip("inception_tiny")
    before = prepared(graph)
    g = scaled(graph)
    (cat,) = by_op(before, CAT)
    assert len(cat.inputs) == 4 and len(by_op(before, G)) == 1 and len(by_op(before, C)) >= 5
    roles = B.rescalers(g)
    assert roles == zoo_expected(before)  # exactly: no residual node anywhere
    assert g.node(cat.name).inputs == cat.inputs  # operands are private Relu chains of a conv
    for operand in cat.inputs:
        relu = g.node(operand)
        assert relu.op is R and g.node(relu.inputs[0]).attrs["role"] == "affine"
        assert branch_rescaler(g, operand).name == relu.inputs[0]
    assert [c.name for c in g.consumers(cat.name)] == [f"{cat.name}_scaling"]
    assert g.outputs == [f"{before.outputs[0]}_scaling"]
    check_invariants(before, g)


@pytest.mark.parametrize("name", B.zoo_params())
def test_zoo_invariants(name):
    """Every zoo model: one scaling node per input/affine/join, joins fed by private rescalers."""
    graph = load_or_skip(name)
    before = prepared(graph)
    g = scaled(graph)
    expected = zoo_expected(before)
    roles = B.rescalers(g)
    assert {k: v for k, v in roles.items() if v[0] != "residual"} == expected
    check_invariants(before, g)


def test_insert_scaling_report_lists_inserted_nodes():
    g = B.residual_mlp()
    reports = run_pipeline(g, PTQConfig(), passes=(prepare, insert_scaling))
    assert sorted(reports[1].notes["inserted"]) == sorted(B.rescalers(g))
    assert reports[1].modified
