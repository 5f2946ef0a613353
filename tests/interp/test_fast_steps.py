"""Compiled steps of the integer engine (`interp.fast_steps`): from its second call with an
input signature, the plain `IntegerInterpreter` runs a compiled list instead of the
node-by-node walk. These tests pin that it gives the walk's results bit for bit (outputs,
overflow counts and warnings, errors), that it is rebuilt when the graph, the signature
or the engine's op table changes, and that observers still see every node."""
from __future__ import annotations

import warnings

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import aidge_lite
from aidge_lite import Graph, Node, OpType, Target, kernels
from aidge_lite.errors import AccumulatorOverflowError, GraphError, InputError
from aidge_lite.interp.integer import IntegerInterpreter
from aidge_lite.interp.quant_common import AccumulatorOverflowWarning
from aidge_lite.interp.walk_plan import _PLANS
from aidge_lite.kernels import threads
from aidge_lite.testing import quantizable_graphs


class Walk(IntegerInterpreter):
    """The integer engine node by node (a subclass never takes the compiled steps)."""


def compiled(graph):
    """The compiled step lists of `graph`'s current plan."""
    plan = _PLANS.get(graph)
    return [] if plan is None else [v for k, v in plan.memo.items() if k[0] == "steps"]


def run_both(graph, x, target=None):
    """(outputs, overflows, warning count) of the compiled engine and of the walk."""
    got = []
    for engine in (IntegerInterpreter(target), Walk(target)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AccumulatorOverflowWarning)
            out = engine.run(graph, x)
        got.append((out, dict(engine.policy.overflows),
                    sum(issubclass(w.category, AccumulatorOverflowWarning) for w in caught)))
    return got


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_mnist8_compiles_its_convs_relus_and_pools(mnist8):
    graph, images = mnist8
    graph = graph.copy()
    walk = Walk().run(graph, images[:1])
    first = aidge_lite.run(graph, images[:1], engine="integer")  # traced walk
    (steps,) = compiled(graph)
    kinds = sorted(steps.specialised.values())
    assert kinds == ["fused conv + relu", "fused conv + relu", "gemm", "maxpool", "maxpool",
                     "quantizer", "quantizer", "reshape"], steps.specialised
    assert len(steps.steps) == 8  # (the input's float64 copy is the first quantizer's)
    assert_same(first, walk)
    for i in range(len(images)):
        one = aidge_lite.run(graph, images[i:i + 1], engine="integer")
        assert_same(one, Walk().run(graph, images[i:i + 1]))
        fake = aidge_lite.run(graph, images[i:i + 1])
        for k in one:
            np.testing.assert_array_equal(one[k], fake[k])
    assert compiled(graph) == [steps]  # one signature, one list


def test_each_input_signature_gets_its_own_list(mnist8):
    graph, images = mnist8
    graph = graph.copy()
    for x in (images[:1], images[:3], images[:1].astype(np.float64), images[:3], images[:1]):
        for _ in range(2):
            assert_same(aidge_lite.run(graph, x, engine="integer"), Walk().run(graph, x))
    assert len(compiled(graph)) == 3


def _compiled_copy(graph, x):
    """A copy of `graph` run twice on `x` (compiled from the second call), its outputs, and
    its first conv."""
    graph = graph.copy()
    for _ in range(2):
        out = aidge_lite.run(graph, x, engine="integer")
    return graph, out, next(n for n in graph.topo_order() if n.op is OpType.CONV)


def test_folded_relu_follows_a_quantizer_bound_changed_in_place(mnist8):
    graph, images = mnist8
    x = images[:2]
    graph, before, conv = _compiled_copy(graph, x)
    (q,) = graph.consumers(conv.name)
    q.attrs["lo"] = 5  # the folded Relu's bound must follow: max(lo, 0) is now 5
    q.attrs["hi"] = 40
    for _ in range(2):
        after = aidge_lite.run(graph, x, engine="integer")
        assert_same(after, Walk().run(graph, x))
        assert_same(after, Walk().run(graph.copy(), x))
    assert any(not np.array_equal(before[k], after[k]) for k in after)


def test_observers_see_every_node_on_every_call(mnist8):
    graph, images = mnist8
    seen = []

    class Observer(IntegerInterpreter):
        def run_node(self, node, operands):
            seen.append(node.name)
            return super().run_node(node, operands)

    aidge_lite.run(graph, images[:1], engine="integer")
    aidge_lite.run(graph, images[:1], engine="integer")  # compiled from here on
    assert compiled(graph)
    walked = [n.name for n in graph.topo_order() if n.op is not OpType.INPUT]
    for _ in range(2):
        seen.clear()
        Observer().run(graph, images[:1])
        assert seen == walked
    engine, names = IntegerInterpreter(), []  # an instance's own run_node: the walk too
    engine.run_node = lambda node, ops: (names.append(node.name)
                                         or IntegerInterpreter.run_node(engine, node, ops))
    engine.run(graph, images[:1])
    assert names == walked
    both = IntegerInterpreter().run(graph, images[:1], intermediates=True)
    assert set(both) >= set(walked)


def test_a_replaced_impl_sends_the_graph_back_to_the_walk(mnist8, monkeypatch):
    graph, images = mnist8
    for _ in range(2):
        want = aidge_lite.run(graph, images[:1], engine="integer")
    calls = []
    original = IntegerInterpreter.impls[OpType.MAXPOOL]

    def counting(self, node, x):
        calls.append(node.name)
        return original(self, node, x)

    monkeypatch.setitem(IntegerInterpreter.impls, OpType.MAXPOOL, counting)
    for _ in range(3):
        assert_same(aidge_lite.run(graph, images[:1], engine="integer"), want)
    assert len(calls) == 6  # two pools, three calls: none compiled away
    seen, begin = [], IntegerInterpreter.begin
    monkeypatch.setattr(IntegerInterpreter, "begin", lambda self, g: seen.append(g) or begin(self, g))
    aidge_lite.run(graph, images[:1], engine="integer")
    aidge_lite.run(graph, images[:1], engine="integer")
    assert seen == [graph, graph]


def test_inputs_are_still_checked_once_compiled(mnist8):
    graph, images = mnist8
    x = images[:1].copy()
    for _ in range(2):
        aidge_lite.run(graph, x, engine="integer")
    x[0, 0, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        aidge_lite.run(graph, x, engine="integer")
    with pytest.raises(InputError, match="shape"):
        aidge_lite.run(graph, images[:1, :, :27], engine="integer")


def test_replaced_conv_weight_is_seen_by_the_compiled_steps(mnist8):
    graph, images = mnist8
    x = images[:1]
    graph, before, conv = _compiled_copy(graph, x)
    w = graph.constant(conv.inputs[1])
    graph.set_constant(conv.inputs[1], -w)
    for _ in range(2):
        after = aidge_lite.run(graph, x, engine="integer")
        assert_same(after, Walk().run(graph, x))
    assert any(not np.array_equal(before[k], after[k]) for k in after)


@pytest.mark.parametrize("overflow", ["saturate", "wrap", "error"])
def test_narrow_accumulators_take_the_walk_policy(mnist8, overflow):
    # 12-bit accumulators: a blank image fits them (its convs are compiled fused), the
    # digits overflow the first conv at least; the compiled steps then hand those nodes
    # to the walk's policy, which counts, warns or raises exactly as it does in the walk
    graph, images = mnist8
    target = Target(acc_bits=12, overflow=overflow)
    blank, x = np.zeros_like(images[:2]), images[:2]
    for _ in range(2):
        (out, counts, warned), (want, _, _) = run_both(graph, blank, target)
        assert_same(out, want)
        assert counts == {} and warned == 0
    (steps,) = [s for s in compiled(graph) if s.target == target]
    assert list(steps.specialised.values()).count("fused conv + relu") == 2
    if overflow == "error":
        for engine in (IntegerInterpreter(target), Walk(target)):
            with pytest.raises(AccumulatorOverflowError):
                engine.run(graph, x)
        return
    for _ in range(2):
        (out, counts, warned), (want, want_counts, want_warned) = run_both(graph, x, target)
        assert_same(out, want)
        assert counts == want_counts and "Convolution28_Output_0" in counts
        assert warned == want_warned == len(counts)


def _dense_graph():
    g = Graph("dense")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 64], "dtype": "float32"}))
    g.add_constant("w", np.random.default_rng(3).uniform(0.5, 1.0, (64, 4)).astype(np.float32))
    g.add(Node("fc", OpType.GEMM, ["x", "w"]))
    g.outputs = ["fc"]
    return aidge_lite.quantize_network(g, np.random.default_rng(4).random((8, 64)).astype(np.float32))


@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
def test_gemm_accumulator_out_of_range_takes_the_walk_policy(overflow):
    graph, target = _dense_graph(), Target(acc_bits=16, overflow=overflow)
    blank, full = np.zeros((1, 64), np.float32), np.ones((1, 64), np.float32)
    for _ in range(2):
        (out, counts, _), (want, _, _) = run_both(graph, blank, target)
        assert_same(out, want)
        assert counts == {}
    (steps,) = compiled(graph)
    assert "gemm" in steps.specialised.values()
    for _ in range(2):  # 64 products near 127 * 127: beyond int16
        (out, counts, warned), (want, want_counts, want_warned) = run_both(graph, full, target)
        assert_same(out, want)
        assert counts == want_counts == {"fc_pre": 4}  # (the PTQ renames the Gemm)
        assert warned == want_warned == 1


def test_wide_accumulators_in_range_stay_compiled(mnist8):
    graph, images = mnist8
    for target in (Target(acc_bits=64), Target(acc_bits=24, overflow="saturate")):
        for _ in range(3):
            (out, counts, warned), (want, want_counts, _) = run_both(graph, images[:2], target)
            assert_same(out, want)
            assert counts == want_counts == {} and warned == 0


def test_errors_of_the_walk_are_raised_by_the_compiled_steps(mnist8):
    graph, images = mnist8
    graph = graph.copy()
    for _ in range(2):
        aidge_lite.run(graph, images[:1], engine="integer")
    gemm = next(n for n in graph.topo_order() if n.op is OpType.GEMM)
    w = graph.constant(gemm.inputs[1])
    graph.set_constant(gemm.inputs[1], w[:, :-1])  # one column short: validation names the Gemm
    with pytest.raises(GraphError, match=gemm.name):
        aidge_lite.run(graph, images[:1], engine="integer")


HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
          HealthCheck.filter_too_much]


@settings(max_examples=150, deadline=None, suppress_health_check=HEALTH)
@given(case=quantizable_graphs())
def test_random_graphs_compiled_equal_the_walk(case):
    check_compiled_equal_walk(case)


@settings(max_examples=60, deadline=None, suppress_health_check=HEALTH)
@given(case=quantizable_graphs(extended=True))
def test_random_extended_graphs_compiled_equal_the_walk(case):
    check_compiled_equal_walk(case)


def check_compiled_equal_walk(case):
    graph, x = case.graph, case.test_x
    for _ in range(2):  # first call: the traced walk; second: the compiled steps
        results = []
        for engine in (IntegerInterpreter(), Walk()):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", AccumulatorOverflowWarning)
                try:
                    results.append((engine.run(graph, x), dict(engine.policy.overflows), len(caught)))
                except AccumulatorOverflowError as exc:
                    results.append((type(exc), str(exc)))
        if len(results[0]) == 2:
            assert results[0] == results[1]
            continue
        (out, counts, warned), (want, want_counts, want_warned) = results
        assert_same(out, want)
        assert counts == want_counts and warned == want_warned
    assert compiled(graph) or len(results[0]) == 2


def test_small_lists_set_one_thread_once_and_restore(mnist8):
    if kernels.max_threads() < 2:
        pytest.skip("Numba started with one thread")
    graph, images = mnist8
    graph = graph.copy()
    previous = kernels.set_threads(2)
    try:
        assert threads.call_serial(numba.get_num_threads) == 1
        assert numba.get_num_threads() == 2
        with pytest.raises(ZeroDivisionError):
            threads.call_serial(lambda: 1 // 0)
        assert numba.get_num_threads() == 2  # restored on error too
        big = np.repeat(images[:1], 64, axis=0)  # its second conv pays for two threads
        for x in (images[:1], images[:1], big, big):
            assert_same(aidge_lite.run(graph, x, engine="integer"), Walk().run(graph, x))
            assert numba.get_num_threads() == 2
        serial = {key[2][0][0]: steps.serial  # batch -> serial
                  for key, steps in _PLANS[graph].memo.items() if key[0] == "steps"}
        assert serial == {1: True, 64: False}
    finally:
        kernels.set_threads(previous)
