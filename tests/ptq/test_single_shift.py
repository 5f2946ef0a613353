"""single_shift: every rescale becomes a power of two, compensated (aidge-ptq.md §4.6).

Before/after: the same graph quantized with and without `single_shift` (same
calibration, so the same float scales s) gives the expected (multiplier, shift)
for every quantizer and W_ss = round(W * rho) for every affine node.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import aidge_lite
from aidge_lite import Target, evaluate
from aidge_lite.ir import AFFINE, OpType
from aidge_lite.ptq import PTQConfig, run_pipeline
from aidge_lite.ptq.calibrate import calibrate
from aidge_lite.ptq.calibration_data import CalibrationSet
from aidge_lite.ptq.compute_signs import compute_signs
from aidge_lite.ptq.insert_scaling import insert_scaling
from aidge_lite.ptq.normalize_activations import normalize_activations
from aidge_lite.ptq.normalize_parameters import normalize_parameters
from aidge_lite.ptq.prepare import prepare
from aidge_lite.ptq.quantize import quantize
from aidge_lite.ptq.single_shift import single_shift

from . import opt_builders as O

UP_TO_QUANTIZE = (prepare, insert_scaling, normalize_parameters, calibrate, compute_signs,
                  normalize_activations, quantize)


def round_half_away(v):
    v = np.asarray(v, np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def ceil_exponent(s: float) -> int:
    return math.ceil(math.log2(s))


def quantizers(graph):
    return [n for n in graph.topo_order() if n.op is OpType.QUANTIZER]


def follows_affine(graph, node) -> bool:
    return graph.node(node.inputs[0]).op in AFFINE


def _graphs(name):
    """(float graph, calibration) for the structural tests (small calibration sets)."""
    if name == "mixed_residual":
        return O.mixed_residual(), np.random.default_rng(0).standard_normal((128, 8)).astype(np.float32)
    return O.zoo_model(name), O.f32(O.zoo_data(name).calib_x[::10])


# ---------------------------------------------------------------- structure
@pytest.mark.parametrize("name", ["mixed_residual", "mnist8", "resnet_tiny"])
@pytest.mark.parametrize("nb_bits", [8, 4])
def test_every_quantizer_is_int_shift_or_compensated(name, nb_bits):
    g, x = _graphs(name)
    plain = aidge_lite.quantize_network(g, x, nb_bits=nb_bits)
    ss = aidge_lite.quantize_network(g, x, nb_bits=nb_bits, single_shift=True)
    half = 1 << (nb_bits - 1)
    kinds = {"shift": 0, "compensated": 0}
    for before, after in zip(quantizers(plain), quantizers(ss)):
        assert before.name == after.name
        a = after.attrs
        if a["role"] == "input":  # the float boundary keeps its float multiplier
            assert a["mode"] == "float" and a["scale"] == before.attrs["scale"]
            continue
        assert before.attrs["mode"] == "float" and a["mode"] == "int"
        assert a["multiplier"].dtype == np.int64 and a["shift"].dtype == np.int64
        scales = np.atleast_1d(before.attrs["scale"])
        k = np.array([ceil_exponent(s) for s in scales])
        if follows_affine(ss, after):
            kinds["shift"] += 1
            assert np.all(a["multiplier"] == 1), after.name  # a pure shift
            np.testing.assert_array_equal(a["shift"], -k)
        else:
            kinds["compensated"] += 1
            m = a["multiplier"]
            assert np.all((half // 2 <= m) & (m <= half)), (after.name, m)  # 64..128 at 8 bits
            np.testing.assert_array_equal(m, round_half_away(scales / np.exp2(k) * half))
            np.testing.assert_array_equal(a["shift"], (nb_bits - 1) - k)
            approx = m / np.exp2(a["shift"])
            assert np.all(np.abs(approx - scales) <= np.exp2(k) / (2 * half) * (1 + 1e-12))
    assert kinds["shift"] > 0
    if name != "mnist8":  # joins: the residual and post-join rescalers are compensated
        assert kinds["compensated"] > 0
    print(f"{name} {nb_bits} bits: {kinds}")


@pytest.mark.parametrize("name", ["mixed_residual", "mnist8"])
def test_weights_shrink_by_rho_never_grow(name):
    g, x = _graphs(name)
    plain = aidge_lite.quantize_network(g, x)
    ss = aidge_lite.quantize_network(g, x, single_shift=True)
    for node in plain.topo_order():
        if node.op not in AFFINE:
            continue
        (quant,) = plain.consumers(node.name)
        scales = np.atleast_1d(quant.attrs["scale"])
        rho = scales / np.exp2([ceil_exponent(s) for s in scales])
        assert np.all((rho > 0.5) & (rho <= 1.0))
        rho = rho[0] if rho.size == 1 else rho
        w, w_ss = plain.constant(node.inputs[1]), ss.constant(node.inputs[1])
        b, b_ss = plain.constant(node.inputs[2]), ss.constant(node.inputs[2])
        rows = np.reshape(rho, (-1,) + (1,) * (w.ndim - 1)) if np.ndim(rho) else rho
        assert w_ss.dtype == w.dtype and b_ss.dtype == b.dtype
        np.testing.assert_array_equal(w_ss, round_half_away(w.astype(np.float64) * rows))
        np.testing.assert_array_equal(b_ss, round_half_away(b.astype(np.float64) * rho))
        assert np.all(np.abs(w_ss) <= np.abs(w))
        np.testing.assert_allclose(ss.node(node.name).attrs["weight_scale"],
                                   plain.node(node.name).attrs["weight_scale"] * rho, rtol=1e-12)


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("optimize_signs", [False, True], ids=["signed", "signs"])
@pytest.mark.parametrize("rounding", ["half_away", "floor"])
def test_single_shift_with_other_options_bit_exact(per_channel, optimize_signs, rounding):
    """single_shift combined with per-channel rho (folded row by row) and unsigned levels."""
    g = O.mixed_residual()
    x = np.random.default_rng(0).standard_normal((256, 8)).astype(np.float32)
    q = aidge_lite.quantize_network(g, x, single_shift=True, per_channel=per_channel,
                                    optimize_signs=optimize_signs, target=Target(rounding=rounding))
    affine_quant = [n for n in quantizers(q) if follows_affine(q, n)]
    assert all(np.all(n.attrs["multiplier"] == 1) for n in affine_quant)
    if per_channel:
        assert any(n.attrs["shift"].size > 1 for n in affine_quant)
    cmp = evaluate.compare_engines(q, x)
    assert cmp["mismatches"] == 0
    ref = aidge_lite.run(g, x, dtype=np.float64)["fc3"]
    assert O.rel_error(cmp["reference"], ref) < (0.06 if rounding == "half_away" else 0.1)


# ---------------------------------------------------------- hand computed
def _quantized_single_fc():
    g = O.single_fc()
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    cfg = PTQConfig(calibration=CalibrationSet(x), single_shift=True)
    run_pipeline(g, cfg, passes=UP_TO_QUANTIZE)
    return g, cfg


def test_hand_computed_shift_s_0_00886():
    """§4.6: s = 0.00886 -> 2^ceil(log2 s) = 2^-6, rho = 0.567, weight max 127 -> 72."""
    g, cfg = _quantized_single_fc()
    w_before = g.constant("fc_w").copy()
    b_before = g.constant("fc_b").copy()
    assert np.abs(w_before).max() == 127
    g.node("fc_scaling").attrs["scale"] = 0.00886
    scale_before = g.node("fc").attrs["weight_scale"]
    report = single_shift(g, cfg)
    assert report.notes == {"shifted": ["fc_scaling"], "compensated": []}
    q = g.node("fc_scaling").attrs
    assert ceil_exponent(0.00886) == -6
    np.testing.assert_array_equal(q["multiplier"], [1])
    np.testing.assert_array_equal(q["shift"], [6])  # y = round(acc / 2^6)
    rho = 0.00886 * 64
    assert rho == pytest.approx(0.567, abs=5e-4)
    assert np.abs(g.constant("fc_w")).max() == 72
    np.testing.assert_array_equal(g.constant("fc_w"), round_half_away(w_before * rho))
    np.testing.assert_array_equal(g.constant("fc_b"), round_half_away(b_before * rho))
    assert g.node("fc").attrs["weight_scale"] == pytest.approx(scale_before * rho, rel=1e-12)


@pytest.mark.parametrize("scale, expected", [(0.14029, (72, 9)), (0.97623, (125, 7)),
                                             (0.5, (128, 8)), (0.0078125 * 1.0001, (64, 13))])
def test_hand_computed_compensation(scale, expected):
    """§4.6 examples: 0.14029 -> 72 * 2^-9 and 0.97623 -> 125 * 2^-7 on residual/join quantizers."""
    g = O.mixed_residual()
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    cfg = PTQConfig(calibration=CalibrationSet(x), single_shift=True)
    run_pipeline(g, cfg, passes=UP_TO_QUANTIZE)
    for name in ("add_res1", "add_scaling"):
        g.node(name).attrs["scale"] = scale
    report = single_shift(g, cfg)
    assert sorted(report.notes["compensated"]) == ["add_res1", "add_scaling"]
    assert report.notes["shifted"] == ["fc1_scaling", "fc2_scaling", "fc3_scaling"]
    for name in ("add_res1", "add_scaling"):
        q = g.node(name).attrs
        assert (int(q["multiplier"][0]), int(q["shift"][0])) == expected


# ---------------------------------------------------------- must not fire
def test_off_by_default_and_with_no_quant(mnist8, mnist):
    x = O.f32(mnist.calib_x[::20])
    plain = aidge_lite.quantize_network(mnist8, x)
    assert {q.attrs["mode"] for q in quantizers(plain)} == {"float"}
    nq = aidge_lite.quantize_network(mnist8, x, no_quant=True, single_shift=True)
    assert not quantizers(nq)
    assert all("mode" not in n.attrs for n in nq.topo_order() if n.op is OpType.SCALING)
    assert {p["pass"]: p["modified"] for p in nq.meta["ptq_passes"]}["single_shift"] is False


# ------------------------------------------------------------- bit exact
# Fast: 200 test images per combination; slow: 500. Spread over the test set (sorted by class).
IMAGES = [200, pytest.param(500, marks=pytest.mark.slow)]


@pytest.mark.parametrize("images", IMAGES)
@pytest.mark.parametrize("nb_bits", [8, 4])
@pytest.mark.parametrize("rounding", ["half_away", "floor"])
def test_mnist8_single_shift_bit_exact(mnist8, mnist, nb_bits, rounding, images):
    q = aidge_lite.quantize_network(mnist8, O.f32(mnist.calib_x[::5]), nb_bits=nb_bits,
                                    single_shift=True, target=Target(rounding=rounding))
    assert {n.attrs["rounding"] for n in quantizers(q)} == {rounding}
    tx, ty = O.spread_subset(mnist, images)
    cmp = evaluate.compare_engines(q, tx)
    assert cmp["mismatches"] == 0 and cmp["max_abs_diff"] == 0
    acc = evaluate.top1(cmp["integer"], ty)
    print(f"mnist8 single_shift {nb_bits} bits {rounding}: {images}-image accuracy {acc:.4f}")
    assert acc > (0.97 if nb_bits == 8 else 0.85)


# ------------------------------------------------------------ accuracy (slow)
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist8", "digits_mlp", "lenet", "resnet_tiny", "inception_tiny",
                                  "mobilenet_tiny"])
def test_single_shift_8bit_within_0_3pt_of_float_rescale(name):
    g, data = O.zoo_model(name), O.zoo_data(name)
    cx, tx, ty = O.f32(data.calib_x), data.test_x, data.test_y
    float_rescale = evaluate.accuracy(aidge_lite.quantize_network(g, cx), tx, ty)
    shifted = evaluate.accuracy(aidge_lite.quantize_network(g, cx, single_shift=True), tx, ty)
    print(f"{name}: 8-bit float rescale {float_rescale:.4f}, single shift {shifted:.4f} "
          f"({len(ty)} test images)")
    assert shifted >= float_rescale - 0.003


@pytest.mark.slow
def test_measure_floor_vs_rounded_shift_mnist8(mnist8, mnist):
    """Measurement (printed): a bare arithmetic shift (floor) against a rounded shift."""
    cx, tx, ty = O.f32(mnist.calib_x), mnist.test_x, mnist.test_y
    results = {}
    for nb_bits in (8, 6, 4):
        for rounding in ("half_away", "floor"):
            q = aidge_lite.quantize_network(mnist8, cx, nb_bits=nb_bits, single_shift=True,
                                            target=Target(rounding=rounding))
            results[nb_bits, rounding] = evaluate.accuracy(q, tx, ty)
        print(f"mnist8 single shift {nb_bits} bits ({len(ty)} images): "
              f"half_away {results[nb_bits, 'half_away']:.4f}, floor {results[nb_bits, 'floor']:.4f}")
    assert results[8, "half_away"] > 0.97 and results[8, "floor"] > 0.95
