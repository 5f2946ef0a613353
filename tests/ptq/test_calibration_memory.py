"""Calibration memory bounded by a budget, and bias correction computed node-major.

- `CalibrationSet` cuts batches to what `memory_budget` allows, measured on the model;
- `NodeMajor` (bias correction) gives exactly the per-layer sums of a batch-by-batch
  run, whether its frontier stays in memory or goes to files;
- node-major bias correction sets exactly the biases of the sequential per-layer
  algorithm it replaces (one calibration pass per layer).
"""
import tracemalloc

import numpy as np
import pytest

from aidge_lite.interp.reference import ReferenceInterpreter
from aidge_lite.ir import AFFINE, Graph, OpType
from aidge_lite.ptq import PIPELINE, PTQConfig, run_pipeline
from aidge_lite.ptq.bias_correction import (META_FLOAT_MEAN, accumulator_factors, bias_correction,
                                            channel_means)
from aidge_lite.ptq.calibrate import calibrate
from aidge_lite.ptq.calibration_data import CalibrationSet, bytes_per_sample
from aidge_lite.ptq.node_major import FrontierStore, NodeMajor
from aidge_lite.ptq.quantize import round_half_away

from . import builders as B


def _conv_graph(channels=8, size=32) -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("conv")
    B.add_input(g, "x", [None, 3, size, size])
    B.add_conv(g, "c1", "x", rng.standard_normal((channels, 3, 3, 3)) * 0.3, rng.standard_normal(channels))
    B.add_op(g, "r1", OpType.RELU, ["c1"])
    B.add_conv(g, "c2", "r1", rng.standard_normal((4, channels, 3, 3)) * 0.2, rng.standard_normal(4))
    return B.finish(g, ["c2"])


def test_bytes_per_sample_replays_the_walk():
    g = _conv_graph(channels=8, size=32)
    x, c1, c2 = 3 * 32 * 32 * 8, 8 * 32 * 32 * 8, 4 * 32 * 32 * 8  # float64 bytes per sample
    # worst step: c1 computed while x is live, counted twice (its temporaries)
    expected = max(2 * x, x + 2 * c1, c1 + 2 * c1, c1 + 2 * c2)
    assert bytes_per_sample(g, np.zeros((1, 3, 32, 32))) == expected


def test_batches_are_cut_to_the_budget():
    g = _conv_graph()
    data = np.random.default_rng(1).random((50, 3, 32, 32)).astype(np.float32)
    per_sample = bytes_per_sample(g, data[:1].astype(np.float64))
    calib = CalibrationSet(data, batch_size=256, memory_budget=3 * per_sample)
    batches = list(calib.batches(g))
    assert max(b.shape[0] for b in batches) == 3
    np.testing.assert_array_equal(np.concatenate(batches), data.astype(np.float64))
    # a user's list of big batches is cut too; batch_size still caps the rows
    listed = CalibrationSet([data[:40], data[40:]], batch_size=2, memory_budget=1 << 40)
    assert [b.shape[0] for b in listed.batches(g)] == [2] * 25


def _streamed(n, size=48, batch=64):
    def source():
        rng = np.random.default_rng(n)
        for start in range(0, n, batch):
            yield rng.random((min(batch, n - start), 3, size, size)).astype(np.float32)
    return source


def _calibration_peak(n: int, budget: int) -> int:
    g = _conv_graph(channels=16, size=48)
    cfg = PTQConfig(calibration=CalibrationSet(_streamed(n), memory_budget=budget))
    tracemalloc.start()
    try:
        calibrate(g, cfg)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_calibration_peak_follows_the_budget_not_the_batch():
    per_sample = bytes_per_sample(_conv_graph(channels=16, size=48), np.zeros((1, 3, 48, 48)))
    small, large = _calibration_peak(64, 4 * per_sample), _calibration_peak(256, 4 * per_sample)
    unbounded = _calibration_peak(64, 1 << 40)  # batches of 64 as fed
    assert large < 1.3 * small  # flat in the number of samples
    assert small < unbounded / 3  # 4 samples in flight, not 64


def _sequential_bias_correction(graph, cfg):
    """The algorithm node-major replaces: one batch-by-batch pass per layer."""
    limit = 1 << (cfg.target.acc_bits - 1)
    factors = accumulator_factors(graph)
    for node in graph.topo_order():
        if node.op not in AFFINE or META_FLOAT_MEAN not in node.meta:
            continue
        float_mean = node.meta.pop(META_FLOAT_MEAN)
        quant_mean = channel_means(graph, cfg, [node.name])[node.name]
        shift = round_half_away(np.broadcast_to(factors[node.name], float_mean.shape) * float_mean
                                - quant_mean)
        bias = np.clip(graph.constant(node.inputs[2]).astype(np.int64) + shift.astype(np.int64),
                       -limit, limit - 1)
        graph.set_constant(node.inputs[2], bias.astype(np.int32))


def _before_bias_correction(name, samples, batch_size, nb_bits, seed):
    """Zoo model `name` through every pass before `bias_correction` (per-channel, with float
    means), on `samples` random inputs; returns the graph and its config."""
    graph = B.load_zoo_or_skip(name)
    x = np.random.default_rng(seed).random((samples, *graph.node(graph.inputs[0]).attrs["shape"][1:]))
    cfg = PTQConfig(calibration=CalibrationSet(x.astype(np.float32), batch_size=batch_size), nb_bits=nb_bits,
                    bias_correction=True, per_channel=True)
    graph = graph.copy()
    run_pipeline(graph, cfg, PIPELINE[:PIPELINE.index(bias_correction)])
    return graph, cfg


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_tiny", "inception_tiny"])
def test_node_major_bias_correction_equals_the_sequential_one(name):
    graph, cfg = _before_bias_correction(name, 40, 16, 4, seed=2)
    old = graph.copy()
    for node in graph.topo_order():  # copy() may not carry the float means
        if META_FLOAT_MEAN in node.meta:
            old.node(node.name).meta[META_FLOAT_MEAN] = node.meta[META_FLOAT_MEAN].copy()
    bias_correction(graph, cfg)
    _sequential_bias_correction(old, cfg)
    affines = [n for n in graph.topo_order() if n.op in AFFINE]
    assert affines
    moved = 0
    for node in affines:
        new_b, old_b = graph.constant(node.inputs[2]), old.constant(node.inputs[2])
        np.testing.assert_array_equal(new_b, old_b)
        moved += int(np.count_nonzero(new_b))
    assert moved  # the biases were set (not all zero)


def test_frontier_on_disk_gives_the_same_sums():
    graph = B.load_zoo_or_skip("resnet_tiny")
    x = np.random.default_rng(3).random((24, *graph.node(graph.inputs[0]).attrs["shape"][1:]))
    cfg = PTQConfig(calibration=CalibrationSet(x.astype(np.float32), batch_size=8), nb_bits=8)
    graph = graph.copy()
    run_pipeline(graph, cfg, PIPELINE[:PIPELINE.index(bias_correction)])
    names = [n.name for n in graph.topo_order() if n.op in AFFINE]
    in_memory, on_disk = NodeMajor(graph, cfg.calibration, 1 << 40), NodeMajor(graph, cfg.calibration, 0)
    try:
        for name in names:
            (s1, c1), (s2, c2) = in_memory.advance_to(name), on_disk.advance_to(name)
            np.testing.assert_array_equal(s1, s2)
            assert c1 == c2
            # and the batch-by-batch reference interpreter's sums
            expected = channel_means(graph, cfg, [name])[name]
            np.testing.assert_array_equal(s1 / c1, expected)
        assert on_disk.store._dir is not None and not in_memory.store._dir
    finally:
        in_memory.close()
        on_disk.close()


def test_frontier_store_keeps_integers_compact():
    store = FrontierStore(budget=1 << 20)
    codes = np.array([[-128.0, 3.0], [7.0, 127.0]])
    store.put("q", codes)
    store.put("f", np.array([0.5, 1.0]))
    assert store.tensors["q"][0].dtype == np.int8 and store.tensors["f"][0].dtype == np.float64
    got = store.get("q", 0)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, codes)
    store.drop("q")
    assert store.in_memory == 16
    store.close()
    assert store.in_memory == 0


def test_reference_unchanged_by_the_walk_plan_cache():
    # the same graph run twice, then changed: the plan follows the change
    g = _conv_graph()
    x = np.random.default_rng(4).random((2, 3, 32, 32))
    first = ReferenceInterpreter(np.float64).run(g, x)["c2"]
    np.testing.assert_array_equal(ReferenceInterpreter(np.float64).run(g, x)["c2"], first)
    g.set_constant("c2_b", g.constant("c2_b") + 1.0)
    np.testing.assert_allclose(ReferenceInterpreter(np.float64).run(g, x)["c2"], first + 1.0, atol=1e-5)


def test_integer_engine_plan_follows_attribute_changes():
    # the walk plan's memo keeps per-node parameters (fused quantizer bounds, geometry):
    # a changed attribute must rebuild them, in step with the fake-quant engine
    import aidge_lite

    graph = B.load_zoo_or_skip("lenet")
    x = np.random.default_rng(6).random((3, *graph.node(graph.inputs[0]).attrs["shape"][1:]))
    q = aidge_lite.quantize_network(graph, x.astype(np.float32))
    before = aidge_lite.run(q, x, engine="integer")
    quantizers = [n for n in q.topo_order() if n.op is OpType.QUANTIZER and n.attrs.get("hi", 0) > 8]
    for node in quantizers:
        node.attrs["hi"] = 8  # tighter clamp, same attribute objects otherwise
    after = aidge_lite.run(q, x, engine="integer")
    fake = aidge_lite.run(q, x)
    for key in after:
        np.testing.assert_array_equal(after[key], fake[key].astype(after[key].dtype))
    assert any(not np.array_equal(before[k], after[k]) for k in after)


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_tiny"])
def test_node_major_engines_give_the_same_sums_and_biases(name):
    """The integer engine (the default for an integer graph) and the fake-quant engine
    compute the same integers: every layer's channel sums, what the corrected biases come from."""
    graph, cfg = _before_bias_correction(name, 24, 8, 6, seed=4)
    walks = {engine: NodeMajor(graph, cfg.calibration, engine=engine) for engine in ("integer", "reference")}
    assert type(NodeMajor(graph, cfg.calibration).interp).__name__ == "IntegerInterpreter"
    try:
        for node in [n for n in graph.topo_order() if n.op in AFFINE]:
            (s1, c1), (s2, c2) = (walk.advance_to(node.name) for walk in walks.values())
            np.testing.assert_array_equal(s1, s2)
            assert c1 == c2 and np.any(s1)
    finally:
        for walk in walks.values():
            walk.close()


def test_frontier_shift_is_pending_and_refused_past_the_limit():
    store = FrontierStore(budget=1 << 20)
    acc = np.array([[[5, -7]], [[100, 3]]], np.int64)  # (N=2, C=1, 2)
    store.put("acc", acc[:1])
    store.put("acc", acc[1:])
    assert store.shift("acc", np.array([10]), limit=128)
    np.testing.assert_array_equal(store.get("acc", 1), acc[1:] + 10)
    assert store.get("acc", 1).dtype == np.int64
    assert store.stored("acc", 1).dtype == np.int8  # the stored batch is not rewritten
    # 100 + 10 + 18 = 128 would reach the limit: refused, the earlier shift kept
    assert not store.shift("acc", np.array([18]), limit=128)
    np.testing.assert_array_equal(store.get("acc", 0), acc[:1] + 10)
    assert store.shift("acc", np.array([-30]), limit=128)
    np.testing.assert_array_equal(store.get("acc", 0), acc[:1] - 20)
    store.put("frac", np.array([[0.5, 1.0]]))
    assert not store.shift("frac", np.array([1]), limit=128)  # not integers: the caller recomputes
    store.drop("acc")
    assert "acc" not in store.offsets
    store.close()
