"""Streaming histograms of the rescaling nodes (aidge_lite.ptq.histograms)."""
from __future__ import annotations

import numpy as np
import pytest

from aidge_lite.errors import CalibrationError, QuantizationError
from aidge_lite.interp.reference import ReferenceInterpreter
from aidge_lite.ir import OpType
from aidge_lite.ir.node import META_HIST, META_RANGE, META_SIGNED
from aidge_lite.ptq import PTQConfig, run_pipeline
from aidge_lite.ptq.calibrate import calibrate
from aidge_lite.ptq.calibration_data import CalibrationSet
from aidge_lite.ptq.histograms import (HistogramObserver, bin_indices, collect_histograms,
                                       histogram, histogram_bins)
from aidge_lite.ptq.insert_scaling import insert_scaling
from aidge_lite.ptq.normalize_parameters import normalize_parameters
from aidge_lite.ptq.prepare import prepare

from . import builders as B

RESCALING = (OpType.SCALING, OpType.QUANTIZER)


def calibrated(graph, data, batch_size=1024):
    cfg = PTQConfig(calibration=CalibrationSet(data, batch_size))
    run_pipeline(graph, cfg, (prepare, insert_scaling, normalize_parameters, calibrate))
    return cfg


def intermediates(graph, data):
    return ReferenceInterpreter(np.float64).run(graph, np.asarray(data, np.float64), intermediates=True)


# ------------------------------------------------------------------ binning rules
def test_bin_count_rule():
    assert histogram_bins(8) == 4096 and histogram_bins(4) == 256 and histogram_bins(2) == 64
    assert histogram_bins(10) == 4096 and histogram_bins(16) == 4096   # ours: capped
    assert histogram_bins(16, "aidge") == 1 << 20        # compat: the reference's 2^(n+4)


def test_floor_and_round_binning_by_hand():
    m = np.array([0.0, 0.1, 0.125, 0.24, 0.25, 0.375, 0.99, 1.0])
    # t = m * 4 = 0, 0.4, 0.5, 0.96, 1, 1.5, 3.96, 4
    assert bin_indices(m, 1.0, 4, "floor").tolist() == [0, 0, 0, 0, 1, 1, 3, 3]
    assert bin_indices(m, 1.0, 4, "round").tolist() == [0, 0, 1, 1, 1, 2, 3, 3]  # ties away
    # the range is honoured, and values beyond it land in the last bin
    assert bin_indices(np.array([5.0, 12.5, 99.0]), 10.0, 4, "floor").tolist() == [2, 3, 3]


def test_round_binning_is_exact_below_a_half():
    # 0.49999999999999994 + 0.5 == 1.0 in float64: an add-half rounding would say bin 1
    assert bin_indices(np.array([0.49999999999999994]), 1.0, 1 << 3, "round").tolist() == [4]
    assert bin_indices(np.array([0.49999999999999994]), 1.0, 1, "round").tolist() == [0]


def test_bad_binning_refused():
    with pytest.raises(QuantizationError):
        bin_indices(np.ones(3), 1.0, 4, "ceil")


def test_signed_histograms_magnitudes_unsigned_keeps_the_positive_part():
    x = np.array([-0.9, -0.1, 0.2, 0.6, 0.0])
    signed = histogram(x, 1.0, 10)
    unsigned = histogram(x, 1.0, 10, unsigned=True)
    assert signed.dtype == np.int64 and signed.sum() == 5
    assert np.flatnonzero(signed).tolist() == [0, 1, 2, 6, 9]
    assert unsigned.tolist() == [3, 0, 1, 0, 0, 0, 1, 0, 0, 0]   # negatives are quantized to 0


def test_zero_range_puts_everything_in_bin_zero():
    hist = histogram(np.zeros((3, 4)), 0.0, 16)
    assert hist[0] == 12 and hist.sum() == 12


# ------------------------------------------------------------------ the observer
def test_observer_matches_numpy_on_the_intermediates():
    data = B.mlp_calibration(200, seed=1)
    graph = B.mlp3()
    cfg = calibrated(graph, data)
    hists = collect_histograms(graph, cfg.calibration, 256)
    env = intermediates(graph, data)
    rescalers = [n for n in graph.topo_order() if n.op in RESCALING]
    assert set(hists) == {n.name for n in rescalers} and len(rescalers) == 4
    for node in rescalers:
        value = env[node.name]
        expected = np.bincount(
            np.minimum(np.floor(np.abs(value) / node.meta[META_RANGE] * 256), 255).astype(np.int64).ravel(),
            minlength=256)
        assert node.meta[META_HIST] is hists[node.name]
        assert node.meta[META_HIST].dtype == np.int64
        np.testing.assert_array_equal(node.meta[META_HIST], expected)
        assert node.meta[META_HIST].sum() == value.size


def test_observer_streams_batches_like_one_big_batch():
    data = B.mlp_calibration(300, seed=4)
    one = B.mlp3()
    calibrated(one, data)
    many = B.mlp3()
    cfg = calibrated(many, data, batch_size=37)
    collect_histograms(one, CalibrationSet(data, len(data)), 4096, binning="round")
    collect_histograms(many, cfg.calibration, 4096, binning="round")
    for a in one.topo_order():
        if a.op in RESCALING:
            b = many.node(a.name)
            assert a.meta[META_HIST].sum() == b.meta[META_HIST].sum() == data.shape[0] * (
                np.prod(intermediates(one, data[:1])[a.name].shape))
            np.testing.assert_array_equal(a.meta[META_HIST], b.meta[META_HIST])


def test_unsigned_nodes_are_binned_on_their_positive_part():
    data = B.mlp_calibration(200, seed=3)
    graph = B.mlp3()
    cfg = calibrated(graph, data)
    fc1 = graph.node("fc1_scaling")
    fc1.meta[META_SIGNED] = False                  # as the sign pass marks a Relu-fed quantizer
    hists = collect_histograms(graph, cfg.calibration, 128)
    value = intermediates(graph, data)["fc1_scaling"]
    assert (value < 0).any()
    np.testing.assert_array_equal(hists["fc1_scaling"],
                                  histogram(value, fc1.meta[META_RANGE], 128, unsigned=True))
    compat = collect_histograms(graph, cfg.calibration, 128, sign_aware=False)
    np.testing.assert_array_equal(compat["fc1_scaling"], histogram(value, fc1.meta[META_RANGE], 128))


def test_histogram_is_the_count_of_bin_indices():
    values = np.random.default_rng(5).standard_normal(5000) * 3.0
    edges = np.arange(-40, 41) / 2 * 4.0 / 16  # bin edges and midpoints of 16 bins over [0, 4]
    for v in (values, edges):
        for binning in ("floor", "round"):
            want = np.bincount(bin_indices(np.abs(v), 4.0, 16, binning), minlength=16)
            np.testing.assert_array_equal(histogram(v, 4.0, 16, binning=binning), want)


def test_nan_activation_is_reported_with_its_node():
    data = B.mlp_calibration(50, seed=2)
    graph = B.mlp3()
    cfg = calibrated(graph, data)
    fc2 = [n for n in graph.topo_order() if n.op is OpType.GEMM and "fc2" in n.name][0]
    weight = fc2.inputs[1]
    poisoned = graph.constant(weight).copy()
    poisoned[0, 0] = np.nan
    graph.set_constant(weight, poisoned)
    with pytest.raises(QuantizationError, match=r"node '\w*fc2\w*'.*NaN"):
        collect_histograms(graph, cfg.calibration, 64)


def test_observer_needs_calibrated_ranges():
    graph = B.mlp3()
    run_pipeline(graph, PTQConfig(), (prepare, insert_scaling))
    with pytest.raises(QuantizationError, match="calibrate"):
        HistogramObserver(graph, 64)


def test_one_shot_iterator_cannot_be_read_twice():
    data = B.mlp_calibration(128, seed=5)
    graph = B.mlp3()
    cfg = calibrated(graph, iter([data[:64], data[64:]]))
    with pytest.raises(CalibrationError, match="one-shot"):
        collect_histograms(graph, cfg.calibration, 64)


def test_rectified_histograms_keep_what_the_relu_keeps():
    """rectified=True: a node read only by ReLUs is histogrammed on max(x, 0) (its negatives
    land in bin 0); the others (input, the output layer) keep |x|."""
    data = B.mlp_calibration(200, seed=1)
    graph = B.mlp3()
    cfg = calibrated(graph, data)
    plain = {k: v.copy() for k, v in collect_histograms(graph, cfg.calibration, 64).items()}
    rect = collect_histograms(graph, cfg.calibration, 64, rectified=True)
    env = intermediates(graph, data)
    feeds_relu = {n.name for n in graph.topo_order() if n.op in RESCALING and graph.consumers(n.name)
                  and all(c.op is OpType.RELU for c in graph.consumers(n.name))}
    assert len(feeds_relu) == 2  # after fc1 and fc2
    for name in rect:
        if name in feeds_relu:
            negatives = int(np.count_nonzero(env[name] < 0))
            assert negatives > 0 and rect[name][0] >= negatives
            assert not np.array_equal(rect[name], plain[name])
        else:
            np.testing.assert_array_equal(rect[name], plain[name])
