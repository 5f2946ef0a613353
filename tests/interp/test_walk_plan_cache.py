"""The walk plan cache (`interp.walk_plan`): a graph is validated once per state, not once
per call, so a change made after a first run must still be seen on the next one.

Each case warms both engines on a quantized graph, changes one thing (an attribute
replaced or edited in place, a constant, the stored target, the input's shape, dtype or
values), and checks that the next run of each engine stops with the same error class naming
the same node, or, for a legal change, gives what a fresh copy of the graph gives.
"""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite import Graph, Node, OpType
from aidge_lite.errors import AidgeLiteError, ExecutionError, GraphError, InputError
from aidge_lite.interp.walk_plan import _PLANS, SMALL_ARRAY

ENGINES = ("reference", "integer")


def _float_graph() -> Graph:
    rng = np.random.default_rng(18)
    g = Graph("plan_cache")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 2, 8, 8], "dtype": "float32"}))
    g.add_constant("c1_w", rng.normal(0, 0.5, (4, 2, 3, 3)).astype(np.float32))  # 72: small
    g.add_constant("c1_b", rng.normal(0, 0.2, 4).astype(np.float32))
    g.add(Node("c1", OpType.CONV, ["x", "c1_w", "c1_b"], {"pads": [1, 1, 1, 1], "strides": [1, 1]}))
    g.add(Node("r1", OpType.RELU, ["c1"]))
    g.add(Node("pool", OpType.MAXPOOL, ["r1"], {"kernel_shape": [2, 2], "strides": [2, 2]}))
    g.add_constant("c2_w", rng.normal(0, 0.5, (8, 4, 3, 3)).astype(np.float32))  # 288: large
    g.add_constant("c2_b", rng.normal(0, 0.2, 8).astype(np.float32))
    g.add(Node("c2", OpType.CONV, ["pool", "c2_w", "c2_b"], {"pads": [1, 1, 1, 1]}))
    g.add(Node("flat", OpType.FLATTEN, ["c2"], {"axis": 1}))
    g.add_constant("fc_w", rng.normal(0, 0.3, (128, 5)).astype(np.float32))
    g.add(Node("fc", OpType.GEMM, ["flat", "fc_w"]))
    g.outputs = ["fc"]
    return g


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(5).random((16, 2, 8, 8)).astype(np.float32)


@pytest.fixture
def graph(calib):
    """A quantized graph both engines have already run twice (their plans are cached, and
    the integer engine's compiled steps for this input, `interp.fast_steps`, exist)."""
    q = aidge_lite.quantize_network(_float_graph(), calib)
    warm(q, calib[:1])
    warm(q, calib[:1])
    assert any(key[0] == "steps" for key in _PLANS[q].memo)
    return q


def warm(g, x):
    outs = [aidge_lite.run(g, x, engine=e) for e in ENGINES]
    assert g in _PLANS
    return outs


def both_fail(g, x, error, node):
    """Both engines raise `error` (exactly that class) naming `node`."""
    seen = []
    for engine in ENGINES:
        with pytest.raises(AidgeLiteError) as info:
            aidge_lite.run(g, x, engine=engine)
        seen.append(info.value)
    assert [type(e) for e in seen] == [error, error], seen
    for e in seen:
        assert f"'{node}'" in str(e), e


def same_as_fresh(g, x):
    """Both engines on the cached plan give, bit for bit, what they give on a fresh copy."""
    fresh = g.copy()
    for engine in ENGINES:
        got, want = aidge_lite.run(g, x, engine=engine), aidge_lite.run(fresh, x, engine=engine)
        assert got.keys() == want.keys()
        for k in got:
            np.testing.assert_array_equal(got[k], want[k])


def _conv_weight(g, conv):
    return g.node(conv).inputs[1]


# ------------------------------------------------------------------ reuse
def test_repeated_runs_reuse_the_plan_and_give_identical_outputs(graph, calib):
    plan = _PLANS[graph]
    for i in range(3):
        x = calib[i:i + 1]
        first = warm(graph, x)
        again = warm(graph, x)
        for a, b in zip(first, again):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    assert _PLANS[graph] is plan  # nothing changed: never rebuilt
    same_as_fresh(graph, calib[3:5])
    ints = aidge_lite.run(graph, calib[:4], engine="integer")  # another batch size, same plan
    fake = aidge_lite.run(graph, calib[:4])
    for k in ints:
        np.testing.assert_array_equal(ints[k], fake[k].astype(ints[k].dtype))
    assert _PLANS[graph] is plan


# ------------------------------------------------------------- attributes
def test_attribute_list_edited_in_place_is_caught(graph, calib):
    graph.node("c1").attrs["strides"][0] = 0  # same list object
    both_fail(graph, calib[:1], GraphError, "c1")


def test_attribute_replaced_is_caught(graph, calib):
    graph.node("pool").attrs["kernel_shape"] = [2, -1]
    both_fail(graph, calib[:1], GraphError, "pool")


def test_quantizer_bounds_changed_are_caught(graph, calib):
    q = next(n for n in graph.topo_order() if n.op is OpType.QUANTIZER and n.attrs["hi"] > 0)
    q.attrs["lo"], q.attrs["hi"] = 5, 4
    both_fail(graph, calib[:1], GraphError, q.name)


def test_legal_attribute_change_is_followed(graph, calib):
    # a tighter clamp: the memo (fused quantizer bounds) must be rebuilt, in step with the
    # fake-quant engine, and with what a fresh copy gives
    before = aidge_lite.run(graph, calib[:4], engine="integer")
    for n in graph.topo_order():
        if n.op is OpType.QUANTIZER and n.attrs["hi"] > 3:
            n.attrs["hi"] = 3
    after = aidge_lite.run(graph, calib[:4], engine="integer")
    assert any(not np.array_equal(before[k], after[k]) for k in after)
    same_as_fresh(graph, calib[:4])


def test_stored_target_edited_in_place_is_caught(graph, calib):
    graph.meta["target"]["acc_bits"] = "wide"  # the same dict object
    with pytest.raises(GraphError, match="target"):
        aidge_lite.run(graph, calib[:1], engine="integer")
    with pytest.raises(GraphError, match="target"):
        aidge_lite.run(graph, calib[:1])


def test_node_added_after_a_run_is_validated(graph, calib):
    graph.add(Node("bad", OpType.MAXPOOL, ["c2"], {"kernel_shape": [2, 2], "strides": [0, 1]}))
    both_fail(graph, calib[:1], GraphError, "bad")


# -------------------------------------------------------------- constants
@pytest.mark.parametrize("operand", [1, 2])  # c1's weight (72 values), its bias
def test_small_constant_edited_in_place_is_followed(graph, calib, operand):
    value = graph.constant(graph.node("c1").inputs[operand])
    assert value.size <= SMALL_ARRAY
    before = aidge_lite.run(graph, calib[:2], engine="integer")
    # in place: a cached packed weight or fused-conv bias must not keep the old values
    value[...] = np.where(value > 0, 0, value) if operand == 1 else value + 40
    after = aidge_lite.run(graph, calib[:2], engine="integer")
    assert any(not np.array_equal(before[k], after[k]) for k in after)
    same_as_fresh(graph, calib[:2])


def test_constant_replaced_by_a_float_array_is_caught(graph, calib):
    name = _conv_weight(graph, "c2")
    graph.set_constant(name, graph.constant(name).astype(np.float64))
    both_fail(graph, calib[:1], GraphError, "c2")


def test_constant_beyond_the_exact_bound_is_caught(graph, calib):
    name = _conv_weight(graph, "c2")
    w = graph.constant(name).astype(np.int64)
    w[0, 0, 0, 0] = 1 << 50
    graph.set_constant(name, w)
    both_fail(graph, calib[:1], ExecutionError, "c2")


def test_wide_operands_are_bounded_on_every_run(graph, calib):
    # int64 weights prove nothing from their dtype: the integer engine bounds their values
    # on every run, so even an in-place edit the plan's stamp cannot see (an array above
    # SMALL_ARRAY elements: replace it instead, `Graph.set_constant`) is refused
    name = _conv_weight(graph, "c2")
    w = graph.constant(name).astype(np.int64)
    graph.set_constant(name, w)
    warm(graph, calib[:1])
    assert w.size > SMALL_ARRAY
    w[0, 0, 0, 0] = 1 << 50
    with pytest.raises(ExecutionError, match="'c2'.*2\\^53"):
        aidge_lite.run(graph, calib[:1], engine="integer")


def test_shape_of_a_constant_changed_is_caught(graph, calib):
    name = _conv_weight(graph, "c1")
    graph.set_constant(name, graph.constant(name)[:, :1])
    both_fail(graph, calib[:1], ExecutionError, "c1")


# ----------------------------------------------------------------- inputs
def test_input_shape_changed_after_a_run_is_caught(graph, calib):
    both_fail(graph, calib[:1, :, :7], InputError, "x")
    both_fail(graph, calib[:1, :1], InputError, "x")
    warm(graph, calib[:1])  # and the right shape still runs


@pytest.mark.parametrize("bad", [np.complex64, np.bool_, "U1"])
def test_input_dtype_changed_after_a_run_is_caught(graph, calib, bad):
    both_fail(graph, calib[:1].astype(bad), InputError, "x")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_input_values_are_checked_on_every_run(graph, calib, value):
    x = calib[:1].copy()
    warm(graph, x)  # this (shape, dtype) passed once: its values are still checked
    x[0, 1, 2, 3] = value
    both_fail(graph, x, InputError, "x")


def test_integer_input_codes_are_checked_on_every_run(calib):
    g = aidge_lite.quantize_network(_float_graph(), calib)
    x_node = g.node("x")
    x_node.attrs["dtype"] = "int8"  # as an int8 TFLite model declares its input
    q = next(n for n in g.topo_order() if n.inputs == ["x"])
    g.set_inputs(q.name, ["x"])  # (leave the graph valid: the quantizer reads int8 codes)
    codes = np.zeros((1, 2, 8, 8), np.int16)
    try:
        warm(g, codes)
    except AidgeLiteError:
        pytest.skip("this graph does not take int8 codes directly")
    codes[0, 0, 0, 0] = 300  # same shape and dtype, a value outside int8
    both_fail(g, codes, InputError, "x")


@pytest.mark.parametrize("attrs", [None, "strides"])
def test_attribute_dict_replaced_by_a_non_dict_is_caught(graph, calib, attrs):
    graph.node("c2").attrs = attrs
    both_fail(graph, calib[:1], GraphError, "c2")


def test_attribute_moved_between_nodes_is_caught(graph, calib):
    # the pool's last attribute becomes the first of the next node: the flat lists of keys
    # and values the stamp compares are unchanged, the per-node attribute counts are not.
    # Both engines must then do what they do on a fresh copy of the changed graph.
    names = list(graph._g._node)
    pool, after = (graph.node(n) for n in names[names.index("pool"):][:2])
    key = list(pool.attrs)[-1]
    value = pool.attrs.pop(key)
    rest = dict(after.attrs)
    after.attrs.clear()
    after.attrs[key] = value
    after.attrs.update(rest)
    for engine in ENGINES:
        got, want = (_outcome(g, calib[:1], engine) for g in (graph, graph.copy()))
        assert type(got) is type(want) and (isinstance(got, tuple) and got == want or
                                           all(np.array_equal(got[k], want[k]) for k in want)), (got, want)


def _outcome(g, x, engine):
    try:
        return aidge_lite.run(g, x, engine=engine)
    except AidgeLiteError as exc:
        return type(exc), str(exc)
