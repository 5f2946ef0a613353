"""How often the PTQ reads the calibration set (issue 18, speed at ImageNet scale).

- with `one_walk_histograms` (opt-in), `calibrate` also collects the clipping histograms: the running
  histogram's power-of-two regrowth gives exactly the counts of binning every value at
  the final range;
- bias correction measures on the first `bias_correction_samples` samples only: the
  same result as running its two steps on those samples, and nothing changes when the
  cap covers the whole set.
"""
from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest

from aidge_lite.errors import QuantizationError
from aidge_lite.interp.reference import ReferenceInterpreter
from aidge_lite.ir import AFFINE
from aidge_lite.ir.node import META_HIST, META_RANGE
from aidge_lite.kernels.histogram import histogram
from aidge_lite.ptq import PIPELINE, PTQConfig, quantize_network, run_pipeline
from aidge_lite.ptq.calibration_data import CalibrationSet
from aidge_lite.ptq.histograms import RunningHistogram
from aidge_lite.ptq.walk import RESCALING

from . import builders as B

BC = importlib.import_module("aidge_lite.ptq.bias_correction")  # the module, not the pass


# ------------------------------------------------------------------ running histograms
@pytest.mark.parametrize("seed", range(4))
def test_running_histogram_equals_binning_at_the_final_range(seed):
    rng = np.random.default_rng(seed)
    # magnitudes growing over several powers of two (and one all-zero batch first)
    batches = [np.zeros(7)] + [rng.standard_normal(50) * 4.0 ** k for k in range(5)]
    batches[2][3] = 2.0 ** 3  # a magnitude exactly at a power of two
    batches = [batches[0]] + list(rng.permutation(np.array(batches[1:], dtype=object)))
    running = RunningHistogram(64, magnitude=True, positive=True)
    for b in batches:
        running.add(b, float(b.min()), float(b.max()))
    every = np.concatenate(batches)
    top = np.abs(every).max()
    assert top < running.rng <= 2 * top and np.log2(running.rng) == round(np.log2(running.rng))
    np.testing.assert_array_equal(running.magnitude, histogram(every, running.rng, 64))
    np.testing.assert_array_equal(running.positive, histogram(every, running.rng, 64, unsigned=True))


def test_running_histogram_refuses_a_bin_count_it_cannot_halve():
    with pytest.raises(QuantizationError, match="power-of-two"):
        RunningHistogram(100)


def _upto_clipping(graph, data, **options):
    passes = PIPELINE[:[p.__name__ for p in PIPELINE].index("optimize_clipping") + 1]
    return run_pipeline(graph, PTQConfig(calibration=CalibrationSet(data, 32), **options), passes)[-1]


def test_calibrate_collects_the_clipping_histograms_in_its_walk():
    data = B.mlp_calibration(200, seed=3)
    graph = B.mlp3()
    report = _upto_clipping(graph, data, clipping="mse", nb_bits=4, one_walk_histograms=True)
    assert report.notes["walks"] == 1
    env = ReferenceInterpreter(np.float64).run(graph, data, intermediates=True)  # one batch
    rescalers = [n for n in graph.topo_order() if n.op in RESCALING]
    assert len(rescalers) == 4
    for node in rescalers:
        top = node.meta[META_RANGE]
        assert top < node.meta["hist_range"] <= 2 * top
        assert "running_hist" not in node.meta
        expected = histogram(env[node.name], node.meta["hist_range"], 2 * report.notes["bins"])
        np.testing.assert_array_equal(node.meta[META_HIST], expected)
        assert 0 < node.meta["clip"] <= top


# ------------------------------------------------------------------ bias correction sample cap
def test_head_yields_the_first_samples_in_the_same_batches():
    data = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    graph = B.mlp3()
    whole = CalibrationSet(data, 4)
    assert whole.head(None) is whole
    got = list(whole.head(6).batches(graph))
    assert [b.shape[0] for b in got] == [4, 2]
    np.testing.assert_array_equal(np.concatenate(got), data[:6])
    for b1, b2 in zip(whole.head(99).batches(graph), whole.batches(graph)):
        np.testing.assert_array_equal(b1, b2)


@pytest.mark.parametrize("option", ["bias_correction_samples", "clipping_samples"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_sample_cap_must_be_a_positive_integer_or_none(bad, option):
    graph = B.mlp3()
    before = _constants(graph)
    with pytest.raises(QuantizationError, match=option):
        quantize_network(graph, B.mlp_calibration(8), preset="best", **{option: bad})
    assert _constants(graph).keys() == before.keys()


def _constants(graph):
    return {n.name: graph.constant(n.name) for n in graph.topo_order() if graph.is_constant(n.name)}


@pytest.mark.parametrize("option", ["bias_correction_samples", "clipping_samples"])
def test_a_cap_covering_the_set_changes_nothing(option):
    data = B.mlp_calibration(96, seed=2)
    full = quantize_network(B.mlp3(), data, preset="best", nb_bits=4, **{option: None})
    capped = quantize_network(B.mlp3(), data, preset="best", nb_bits=4, **{option: 96})
    a, b = _constants(full), _constants(capped)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert capped.meta["options"][option] == 96


def test_a_cap_measures_both_steps_on_the_first_samples():
    """Capped at k: the float means and the correction are those of the first k samples
    (the ranges still come from every sample), and they differ from the uncapped ones."""
    data = B.mlp_calibration(160, seed=5)
    k = 40
    names = [p.__name__ for p in PIPELINE]
    before = PIPELINE[:names.index("bias_correction")]
    graph = B.mlp3()
    capped = PTQConfig(calibration=CalibrationSet(data, 32), nb_bits=4, clipping="mse", per_channel=True,
                       bias_correction=True, bias_correction_samples=k)
    run_pipeline(graph, capped, before)
    head_only = PTQConfig(calibration=CalibrationSet(data[:k], 32), nb_bits=4, clipping="mse",
                          per_channel=True, bias_correction=True, bias_correction_samples=None)
    affines = [n.name for n in graph.topo_order() if n.op in AFFINE]
    expected = BC.channel_means(graph, head_only, affines)  # (integer graph: fake-quant means)
    one, two = copy.deepcopy(graph), copy.deepcopy(graph)
    report = BC.bias_correction(one, capped)
    BC.bias_correction(two, head_only)
    assert report.modified and report.notes["samples"] == k
    for name in affines:
        bias = one.node(name).inputs[2]
        np.testing.assert_array_equal(one.constant(bias), two.constant(bias), err_msg=name)
    assert expected  # measured on the same graph, not a tautology of the pass
    uncapped = copy.deepcopy(graph)
    BC.bias_correction(uncapped, PTQConfig(calibration=CalibrationSet(data, 32), nb_bits=4, clipping="mse",
                                           per_channel=True, bias_correction=True,
                                           bias_correction_samples=None))
    assert any(not np.array_equal(uncapped.constant(uncapped.node(n).inputs[2]),
                                  one.constant(one.node(n).inputs[2])) for n in affines)


def test_float_means_are_taken_on_the_first_samples():
    data = B.mlp_calibration(160, seed=6)
    names = [p.__name__ for p in PIPELINE]
    upto = PIPELINE[:names.index("record_float_means") + 1]
    capped, head = B.mlp3(), B.mlp3()
    options = {"nb_bits": 4, "bias_correction": True}
    run_pipeline(capped, PTQConfig(calibration=CalibrationSet(data, 32), bias_correction_samples=50,
                                   **options), upto)
    run_pipeline(head, PTQConfig(calibration=CalibrationSet(data[:50], 32), bias_correction_samples=None,
                                 **options), upto)
    got = {n.name: n.meta[BC.META_FLOAT_MEAN] for n in capped.topo_order() if BC.META_FLOAT_MEAN in n.meta}
    assert got
    for name, mean in got.items():
        np.testing.assert_array_equal(mean, head.node(name).meta[BC.META_FLOAT_MEAN])


def test_a_join_forcing_a_node_signed_falls_back_to_a_second_walk():
    """concat_block: the sign pass makes a Relu-read rescaler signed at a join after
    `calibrate` kept only max(x, 0) for it: |x| is then binned in a second walk."""
    graph = B.concat_block()
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    names = [p.__name__ for p in PIPELINE]
    reports = run_pipeline(graph, PTQConfig(calibration=CalibrationSet(x, 32), clipping="mse", optimize_signs=True,
                                            one_walk_histograms=True),
                           PIPELINE[:names.index("optimize_clipping") + 1])
    forced = next(r for r in reports if r.name == "compute_signs").notes["forced_signed"]
    assert "fca_scaling" in forced and reports[-1].notes["walks"] == 2
    env = ReferenceInterpreter(np.float64).run(graph, x, intermediates=True)
    node = graph.node("fca_scaling")
    assert "hist_range" not in node.meta and "running_hist" not in node.meta
    np.testing.assert_array_equal(node.meta[META_HIST],
                                  histogram(env[node.name], node.meta[META_RANGE], reports[-1].notes["bins"]))


def test_frontier_store_narrows_integers_and_gives_back_the_original_dtype():
    from aidge_lite.ptq.node_major import FrontierStore

    store = FrontierStore(budget=1 << 20)
    values = {"acc": np.array([[-3.0, 40000.0], [7.0, 0.0]]), "half": np.array([0.5, 1.0]),
              "codes": np.array([1, -2, 3], np.int64)}
    for name, value in values.items():
        store.put(name, value)
    assert store.stored("acc", 0).dtype == np.int32 and store.stored("codes", 0).dtype == np.int8
    assert store.stored("half", 0).dtype == np.float64  # a fraction is kept as it is
    for name, value in values.items():
        got = store.get(name, 0)
        assert got.dtype == value.dtype
        np.testing.assert_array_equal(got, value)
    store.close()


def test_one_walk_is_opt_in_and_reads_a_one_shot_iterator_once():
    data = B.mlp_calibration(128)
    names = [p.__name__ for p in PIPELINE]
    upto = PIPELINE[:names.index("optimize_clipping") + 1]
    default = run_pipeline(B.mlp3(), PTQConfig(calibration=CalibrationSet(data, 32), clipping="mse"), upto)[-1]
    assert default.notes["walks"] == 2
    once = run_pipeline(B.mlp3(), PTQConfig(calibration=CalibrationSet(iter([data[:64], data[64:]]), 32),
                                            clipping="mse", one_walk_histograms=True), upto)[-1]
    assert once.notes["walks"] == 1


@pytest.mark.parametrize("clipping", ["mse", "kl"])
def test_clipping_histograms_bin_the_first_samples_and_ranges_see_all(clipping):
    """`clipping_samples=K`: each histogram holds exactly the counts of the first K samples'
    values binned over the range of all of them; compat "aidge" bins every sample."""
    data = B.mlp_calibration(160, seed=5)
    data[150:] *= 3.0  # the widest values come last: the range must still see them
    graph = B.mlp3()
    report = _upto_clipping(graph, data, clipping=clipping, nb_bits=4, clipping_samples=40)
    assert report.notes["walks"] == 2 and report.notes["samples"] == 40
    env_all = ReferenceInterpreter(np.float64).run(graph, data, intermediates=True)
    env_head = ReferenceInterpreter(np.float64).run(graph, data[:40], intermediates=True)
    signed = {n.name: n.meta.get("signed", True) is not False for n in graph.topo_order()}
    checked = 0
    for node in (n for n in graph.topo_order() if n.op in RESCALING):
        rng = node.meta[META_RANGE]
        assert rng == np.abs(env_all[node.name]).max()
        hist = node.meta[META_HIST]
        assert hist.sum() == env_head[node.name].size  # the first 40 samples' values, no more
        if clipping == "mse" and signed[node.name]:  # (KL bins max(x, 0) before a ReLU)
            np.testing.assert_array_equal(hist, histogram(env_head[node.name], rng, hist.size))
            checked += 1
    assert checked or clipping == "kl"
    compat = B.mlp3()
    report = _upto_clipping(compat, data, clipping=clipping, nb_bits=4, clipping_samples=40, compat="aidge")
    assert report.notes["samples"] is None
    first = next(n for n in compat.topo_order() if n.op in RESCALING and n.meta[META_RANGE] > 0)
    assert first.meta[META_HIST].sum() == env_all[first.name].size  # every sample binned
