"""rescale.py: how a quantizer's real multiplier is encoded (float, fixed_point, shift,
double_shift), and `Target(rescale=...)` end to end on mnist-8."""
from __future__ import annotations

import math

import numpy as np
import pytest

import aidge_lite
from aidge_lite import Target, evaluate
from aidge_lite.errors import QuantizationError
from aidge_lite.ir import OpType
from aidge_lite.ptq.rescale import (
    MAX_DOUBLE_SHIFT_A, double_shift, effective_multiplier, encode_rescale, int_rescale, power_of_two)

from . import opt_builders as O

SCALES = np.exp(np.linspace(np.log(1e-6), np.log(50.0), 4001))


# ------------------------------------------------------------ power_of_two
@pytest.mark.parametrize("k", [-20, -7, -1, 0, 1, 5])
def test_power_of_two_exact_powers(k):
    assert power_of_two(2.0 ** k) == k and power_of_two(2.0 ** k, "ceil") == k


@pytest.mark.parametrize("scale, nearest, ceil", [
    (0.00886, -7, -6),             # §4.6: ceil gives 2^-6 (rho = 0.567), nearest 2^-7
    (2 ** -6.4, -6, -6), (2 ** -6.6, -7, -6), (3.0, 2, 2), (0.75, 0, 0), (1.0001, 0, 1)])
def test_power_of_two_nearest_and_ceil(scale, nearest, ceil):
    assert power_of_two(scale) == nearest
    assert power_of_two(scale, "ceil") == ceil
    assert 0.5 < scale / 2.0 ** ceil <= 1.0


@pytest.mark.parametrize("bad", [0.0, -0.5, math.inf, math.nan])
def test_power_of_two_rejects_non_positive(bad):
    with pytest.raises(QuantizationError, match="cannot encode rescale"):
        power_of_two(bad)


# ------------------------------------------------------------ double_shift
def test_double_shift_form_and_never_worse_than_shift():
    worst = 0.0
    for s in SCALES:
        m, shift = double_shift(float(s))
        approx = m / 2.0 ** shift
        k = power_of_two(float(s))
        assert abs(s - approx) <= abs(s - 2.0 ** k) * (1 + 1e-12)  # at least the plain shift
        k_floor = math.floor(math.log2(s))  # and at least the *linearly* nearest power of two
        assert abs(s - approx) <= min(abs(s - 2.0 ** k_floor), abs(s - 2.0 ** (k_floor + 1))) * (1 + 1e-12)
        if m == 1:
            assert shift == -k
        else:  # (2^a + 1, a + b): m / 2^shift == (1 + 2^-a) * 2^-b
            a = int(m - 1).bit_length() - 1
            assert m == (1 << a) + 1 and 1 <= a <= MAX_DOUBLE_SHIFT_A
            b = shift - a
            assert approx == (1 + 2.0 ** -a) * 2.0 ** -b
        worst = max(worst, abs(s - approx) / s)
    # The representable mantissas are 1, 1 + 2^-a and 2: the largest gap, (1.5, 2), gives 1/7.
    assert worst <= 1 / 7 + 1e-9
    print(f"double_shift worst relative error over {len(SCALES)} scales: {worst:.5f}")


@pytest.mark.parametrize("scale, expected", [
    (1.25 * 2 ** -7, (5, 9)), ((1 + 2 ** -8) * 2 ** -3, (257, 11)), (1.5, (3, 1)),
    (2 ** -5, (1, 5)), (4.0, (1, -2))])
def test_double_shift_exact_values(scale, expected):
    assert double_shift(scale) == expected


# ------------------------------------------------------------ encode_rescale
def test_encode_fixed_point_q31():
    enc = encode_rescale(SCALES, "fixed_point")
    m, shift = enc["multiplier"], enc["shift"]
    assert enc["mode"] == "int" and m.dtype == np.int64 and shift.dtype == np.int64
    assert np.all((m >= 2 ** 30) & (m < 2 ** 31))
    np.testing.assert_allclose(effective_multiplier(enc), SCALES, rtol=2.0 ** -30)


@pytest.mark.parametrize("mode", ["shift", "double_shift"])
def test_encode_shift_modes_per_channel(mode):
    scales = np.array([0.003, 0.0121, 0.7, 1.9])
    enc = encode_rescale(scales, mode)
    pairs = [(1, -power_of_two(s)) if mode == "shift" else double_shift(s) for s in scales]
    np.testing.assert_array_equal(enc["multiplier"], [p[0] for p in pairs])
    np.testing.assert_array_equal(enc["shift"], [p[1] for p in pairs])
    np.testing.assert_array_equal(effective_multiplier(enc), [p[0] / 2.0 ** p[1] for p in pairs])


def test_encode_float_and_unknown():
    assert encode_rescale(0.01, "float") == {"mode": "float"}
    assert effective_multiplier({"scale": 0.25}) == 0.25
    with pytest.raises(QuantizationError, match="unknown rescale mode"):
        encode_rescale(0.01, "triple_shift")
    with pytest.raises(QuantizationError, match="rescale"):
        Target(rescale="triple_shift")


def test_int_rescale_refuses_a_multiplier_beyond_2_pow_31():
    with pytest.raises(QuantizationError, match="too large"):
        int_rescale([1], [-32])
    assert int_rescale([1, 3], [-31, 62])["mode"] == "int"


@pytest.mark.parametrize("multiplier, shift, expected", [
    (1 << 30, 67, 1 << 25),          # exact
    (3, 63, 2), (-3, 63, -2),        # 1.5 -> 2, half away from zero
    (5, 64, 1), ((1 << 30) + 1, 100, 0), (1, 67, 0),
])
def test_int_rescale_folds_a_shift_beyond_62_into_the_multiplier(multiplier, shift, expected):
    attrs = int_rescale([multiplier], [shift])
    assert attrs["shift"].tolist() == [62]
    assert attrs["multiplier"].tolist() == [expected]


# ------------------------------------------------------- Target on mnist-8
@pytest.fixture(scope="module")
def float_rescaled(mnist8, mnist):
    return aidge_lite.quantize_network(mnist8, O.f32(mnist.calib_x[::5]))


@pytest.mark.parametrize("mode", ["fixed_point", "shift", "double_shift"])
def test_target_rescale_mnist8_encoding_and_bit_exact(mnist8, mnist, float_rescaled, mode):
    q = aidge_lite.quantize_network(mnist8, O.f32(mnist.calib_x[::5]), target=Target(rescale=mode))
    assert q.meta["target"]["rescale"] == mode
    reference = {n.name: n for n in float_rescaled.topo_order() if n.op is OpType.QUANTIZER}
    for node in (n for n in q.topo_order() if n.op is OpType.QUANTIZER):
        a = node.attrs
        assert a["scale"] == reference[node.name].attrs["scale"]  # same float scale, other encoding
        if a["role"] == "input":
            assert a["mode"] == "float"
            continue
        expected = encode_rescale(a["scale"], mode)
        assert a["mode"] == "int"
        np.testing.assert_array_equal(a["multiplier"], expected["multiplier"])
        np.testing.assert_array_equal(a["shift"], expected["shift"])
    tx, ty = O.spread_subset(mnist, 200)
    cmp = evaluate.compare_engines(q, tx)
    assert cmp["mismatches"] == 0
    acc = evaluate.top1(cmp["integer"], ty)
    base = evaluate.accuracy(float_rescaled, tx, ty)
    print(f"mnist8 8 bits rescale={mode}: {acc:.4f} (float rescale {base:.4f}, 200 images)")
    if mode != "shift":
        assert acc >= base - 0.01


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist8", "digits_mlp", "lenet", "resnet_tiny", "inception_tiny",
                                  "mobilenet_tiny"])
def test_rescale_modes_accuracy_8bit(name):
    """fixed_point and double_shift within 0.5 pt of the float rescale on mnist-8 (the brief);
    every mode measured (printed) on every zoo model, full test set."""
    g, data = O.zoo_model(name), O.zoo_data(name)
    cx, tx, ty = O.f32(data.calib_x), data.test_x, data.test_y
    acc = {mode: evaluate.accuracy(aidge_lite.quantize_network(g, cx, target=Target(rescale=mode)), tx, ty)
           for mode in ("float", "fixed_point", "double_shift", "shift")}
    acc["float model"] = evaluate.accuracy(g, tx, ty)
    print(f"{name} 8 bits ({len(ty)} images), rescale: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()))
    assert acc["fixed_point"] >= acc["float"] - 0.005
    if name == "mnist8":
        assert acc["double_shift"] >= acc["float"] - 0.005
