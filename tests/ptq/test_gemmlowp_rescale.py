"""Target(rescale="gemmlowp") in our own PTQ (profile "tflite"): TFLite's Q31 multiplier and
signed shift per quantizer, run with TFLite's double rounding by both engines.

Oracle: TFLite's MultiplyByQuantizedMultiplier written out in Python ints the way gemmlowp
writes it (SaturatingRoundingDoublingHighMul with its sign-dependent nudge and C's
truncating division, RoundingDivideByPOT with its mask / threshold), independent of
`kernels.gemmlowp` (which uses round_div_pow2 and a sign-magnitude twin).
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import aidge_lite
from aidge_lite import Target, serialize
from aidge_lite.errors import QuantizationError
from aidge_lite.ir import OpType
from aidge_lite.kernels.gemmlowp import quantize_multiplier as tflite_qm
from aidge_lite.ptq.quantize import check_gemmlowp_headroom
from aidge_lite.ptq.rescale import effective_multiplier, encode_rescale, gemmlowp_rescale
from aidge_lite.target import PROFILES

from . import opt_builders as O

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
N_IMAGES = 300
ORACLE_SAMPLES = 1500  # per quantizer, plus every value where the two roundings differ (capped)


# ------------------------------------------------------------------ the oracle
def srdhm(a: int, b: int) -> int:
    if a == b == I32_MIN:
        return I32_MAX
    ab = a * b
    nudged = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    q = abs(nudged) >> 31  # C's division truncates toward zero
    return -q if nudged < 0 else q


def rdbpot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def tflite_requant(acc: int, multiplier: int, shift: int, lo: int, hi: int) -> int:
    x = acc * (1 << max(shift, 0))
    assert I32_MIN <= acc <= I32_MAX and I32_MIN <= x <= I32_MAX  # TFLite's int32
    return min(max(rdbpot(srdhm(x, multiplier), max(-shift, 0)), lo), hi)


def single_rounding(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, lo, hi) -> np.ndarray:
    """The old profile's fixed_point: round_half_away(acc * M / 2^(31 - shift)), one exact
    rounding (|acc * M| < 2^62: exact in int64)."""
    k = 31 - shift
    p = acc * multiplier
    magnitude = (np.abs(p) + (np.int64(1) << (k - 1))) >> k
    return np.clip(np.where(p < 0, -magnitude, magnitude), lo, hi)


# ------------------------------------------------------------------ encoding
def test_profile_tflite_is_gemmlowp():
    assert PROFILES["tflite"] == Target(acc_bits=32, rounding="half_away", rescale="gemmlowp",
                                        overflow="error")


@pytest.mark.parametrize("scale", [[0.00147], [3e-6, 0.02, 0.7, 1.0, 1.9, 2.0 ** 29], [2.0 ** -40]])
def test_encoding_is_tflites_quantize_multiplier(scale):
    enc = encode_rescale(np.array(scale), "gemmlowp", "q")
    assert enc["mode"] == "gemmlowp" and enc["axis"] == 1
    assert not {"zero_point", "input_zero_point", "pre_shift"} & set(enc)  # symmetric: defaults
    assert [(m, s) for m, s in zip(enc["multiplier"], enc["shift"])] == [tflite_qm(s) for s in scale]
    assert all(type(v) is int for v in enc["multiplier"] + enc["shift"])  # exact Python ints
    for s, real, m in zip(scale, effective_multiplier(enc), enc["multiplier"]):
        if m:  # M * 2^(shift - 31) is s to 31 bits
            assert real == pytest.approx(s, rel=2.0 ** -30)
        else:  # below ~2^-32: flushed to (0, 0), as TFLite does
            assert s < 2.0 ** -32


def test_same_q31_multiplier_as_fixed_point_other_shift_convention():
    scales = np.exp(np.linspace(np.log(1e-6), np.log(100.0), 301))
    g, f = encode_rescale(scales, "gemmlowp"), encode_rescale(scales, "fixed_point")
    np.testing.assert_array_equal(g["multiplier"], f["multiplier"])
    np.testing.assert_array_equal(31 - np.array(g["shift"]), f["shift"])


@pytest.mark.parametrize("scale, match", [
    (2.0 ** 30, "left shift of 31 > 30"), (float("nan"), "cannot encode"), (-0.5, "cannot encode")])
def test_encoding_refuses_what_gemmlowp_cannot_represent(scale, match):
    with pytest.raises(QuantizationError, match=f"node 'conv_q'.*{match}"):
        gemmlowp_rescale([0.01, scale], "conv_q")
    assert gemmlowp_rescale([1.5 * 2.0 ** 29], "q")["shift"] == [30]  # the largest left shift


# --------------------------------------------------------------- quantized models
@pytest.fixture(scope="module")
def q_mnist8(mnist8, mnist):
    """mnist-8, per-channel weights (per-channel multipliers on axis 1 of NCHW)."""
    return aidge_lite.quantize_network(mnist8, O.f32(mnist.calib_x[::5]), per_channel=True,
                                       target=PROFILES["tflite"])


@pytest.fixture(scope="module")
def q_digits():
    """digits_mlp: Gemm outputs (N, C), per-channel multipliers on axis 1."""
    g, data = O.zoo_model("digits_mlp"), O.zoo_data("digits_mlp")
    return aidge_lite.quantize_network(g, O.f32(data.calib_x), per_channel=True,
                                       target=PROFILES["tflite"]), data


def gemmlowp_nodes(q):
    return [n for n in q.topo_order() if n.op is OpType.QUANTIZER and n.attrs["mode"] == "gemmlowp"]


def check_model(q, x, label):
    """Encoding, engines bit-exact, oracle on samples; returns the single-rounding count."""
    quantizers = [n for n in q.topo_order() if n.op is OpType.QUANTIZER]
    assert q.meta["target"]["rescale"] == "gemmlowp"
    for node in quantizers:
        a = node.attrs
        if a["role"] == "input":  # float in: the float path
            assert a["mode"] == "float"
            continue
        assert a["mode"] == "gemmlowp" and a["axis"] == 1
        assert [(m, s) for m, s in zip(a["multiplier"], a["shift"])] == \
            [tflite_qm(s) for s in np.atleast_1d(a["scale"])]
    assert any(np.size(n.attrs["multiplier"]) > 1 for n in gemmlowp_nodes(q))  # per channel
    ref = aidge_lite.run(q, x, intermediates=True)
    integer = aidge_lite.run(q, x, engine="integer", intermediates=True)
    for name, value in ref.items():
        np.testing.assert_array_equal(np.asarray(integer[name]), np.asarray(value), err_msg=name)
    rng = np.random.default_rng(0)
    differ = total = 0
    for node in gemmlowp_nodes(q):
        a = node.attrs
        acc = np.asarray(integer[node.inputs[0]]).astype(np.int64)
        out = np.asarray(integer[node.name]).astype(np.int64)
        assert acc.min() >= I32_MIN and acc.max() <= I32_MAX  # int32 accumulators
        channels = len(a["multiplier"])
        shape = (1, -1) + (1,) * (acc.ndim - 2)  # channel axis 1
        m = np.broadcast_to(np.array(a["multiplier"], np.int64).reshape(shape if channels > 1 else 1), acc.shape)
        s = np.broadcast_to(np.array(a["shift"], np.int64).reshape(shape if channels > 1 else 1), acc.shape)
        single = single_rounding(acc, m, s, a["lo"], a["hi"])
        diff = np.flatnonzero(single != out)
        differ, total = differ + diff.size, total + out.size
        picks = np.concatenate([rng.choice(out.size, min(ORACLE_SAMPLES, out.size), replace=False),
                                diff[:ORACLE_SAMPLES]])
        flat = [v.ravel() for v in (acc, m, s, out)]
        for i in picks:
            want = tflite_requant(int(flat[0][i]), int(flat[1][i]), int(flat[2][i]), a["lo"], a["hi"])
            assert int(flat[3][i]) == want, (node.name, int(i))
        print(f"{label} {node.name}: {diff.size} of {out.size} requantized values differ from "
              f"single-rounding fixed_point ({100 * diff.size / out.size:.3f} %)")
    print(f"{label}: gemmlowp vs single-rounding fixed_point on the same accumulators: "
          f"{differ} of {total} requantized values differ ({100 * differ / total:.3f} %)")
    return differ


def test_mnist8_tflite_profile_bit_exact_and_tflite_rounding(q_mnist8, mnist):
    x, y = O.spread_subset(mnist, N_IMAGES)
    differ = check_model(q_mnist8, O.f32(x), "mnist8")
    assert differ > 0  # the double rounding does show on a real model
    logits = np.asarray(aidge_lite.run(q_mnist8, O.f32(x), engine="integer")[q_mnist8.outputs[0]])
    assert np.mean(logits.reshape(len(x), -1).argmax(1) == y) >= 0.97


def test_digits_mlp_tflite_profile_bit_exact_and_tflite_rounding(q_digits):
    q, data = q_digits
    check_model(q, O.f32(data.test_x[:N_IMAGES]), "digits_mlp")
    assert all(q.node(n.inputs[0]).op is OpType.GEMM for n in gemmlowp_nodes(q))


def test_saved_and_loaded_bit_identical(q_digits):
    q, data = q_digits
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.npz"
        serialize.save(q, path)
        back = serialize.load(path)
    for node in gemmlowp_nodes(q):
        a = back.node(node.name).attrs
        assert a["multiplier"] == node.attrs["multiplier"] and a["shift"] == node.attrs["shift"]
        assert all(type(v) is int for v in a["multiplier"] + a["shift"])
    x = O.f32(data.test_x[:50])
    np.testing.assert_array_equal(np.asarray(aidge_lite.run(back, x, engine="integer")[q.outputs[0]]),
                                  np.asarray(aidge_lite.run(q, x, engine="integer")[q.outputs[0]]))


def test_single_shift_keeps_the_gemmlowp_form():
    g, data = O.zoo_model("digits_mlp"), O.zoo_data("digits_mlp")
    q = aidge_lite.quantize_network(g, O.f32(data.calib_x), single_shift=True, target=PROFILES["tflite"])
    nodes = gemmlowp_nodes(q)
    assert len(nodes) == len([n for n in q.topo_order() if n.op is OpType.QUANTIZER]) - 1
    for node in nodes:  # 2^k or m / 2^s with m < 2^7: exact in Q31
        real = effective_multiplier(node.attrs)
        mantissas = [math.frexp(float(r))[0] * 2 ** 8 for r in real]
        assert all(v == int(v) for v in mantissas)
    x = O.f32(data.test_x[:100])
    np.testing.assert_array_equal(np.asarray(aidge_lite.run(q, x, engine="integer")[q.outputs[0]]),
                                  np.asarray(aidge_lite.run(q, x)[q.outputs[0]]))


# --------------------------------------------------------------------- refusals
def test_refuses_a_wide_accumulator_and_uint16():
    g, data = O.zoo_model("digits_mlp"), O.zoo_data("digits_mlp")
    cx = O.f32(data.calib_x[:100])
    with pytest.raises(QuantizationError, match=r"target: .*int32 accumulators.*acc_bits=64"):
        aidge_lite.quantize_network(g, cx, target=Target(rescale="gemmlowp", acc_bits=64))
    with pytest.raises(QuantizationError, match=r"target: .*cannot write unsigned 12-bit activations"):
        aidge_lite.quantize_network(g, cx, nb_bits=12, optimize_signs=True, target=PROFILES["tflite"])


def test_refuses_a_left_shift_that_can_leave_int32(q_digits):
    q, _ = q_digits
    cfg = SimpleNamespace(target=PROFILES["tflite"])
    check_gemmlowp_headroom(q, cfg)  # as quantized: fits
    bad = q.copy()
    node = gemmlowp_nodes(bad)[1]  # reads a Gemm accumulator
    node.attrs["shift"] = [20] * len(node.attrs["shift"])
    with pytest.raises(QuantizationError, match=f"node '{node.name}'.*left by 20 bits"):
        check_gemmlowp_headroom(bad, cfg)


# ------------------------------------------------------------------------ slow
@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet_tiny", "inception_tiny", "lenet", "mobilenet_tiny"])
def test_zoo_tflite_profile_bit_exact(name):
    """Residual / concat joins (real multiplier >= 1: a left shift), conv stacks."""
    g, data = O.zoo_model(name), O.zoo_data(name)
    q = aidge_lite.quantize_network(g, O.f32(data.calib_x[:500]), per_channel=True,
                                    target=PROFILES["tflite"])
    check_model(q, O.f32(O.spread_subset(data, N_IMAGES)[0]), name)


@pytest.mark.slow
def test_old_and_new_tflite_profile_outputs(mnist8, mnist):
    """End to end: the old profile (fixed_point) vs the new one (gemmlowp), same float scales."""
    cx, (x, y) = O.f32(mnist.calib_x), O.spread_subset(mnist, 2000)
    outs = {}
    for rescale in ("fixed_point", "gemmlowp"):
        q = aidge_lite.quantize_network(mnist8, cx, target=Target(rescale=rescale))
        outs[rescale] = np.asarray(aidge_lite.run(q, O.f32(x), engine="integer")[q.outputs[0]])
    differ = np.count_nonzero(outs["fixed_point"] != outs["gemmlowp"])
    agree = np.mean(outs["fixed_point"].reshape(len(x), -1).argmax(1)
                    == outs["gemmlowp"].reshape(len(x), -1).argmax(1))
    print(f"mnist8 logits, fixed_point vs gemmlowp: {differ} of {outs['gemmlowp'].size} differ; "
          f"top-1 agreement {agree:.4f}")
    assert agree >= 0.99
