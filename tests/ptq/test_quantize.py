"""quantize: exact integer weights/biases/scales on the hand-picked MLP, rounding rules."""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite import Target
from aidge_lite.ir import OpType
from aidge_lite.ir.node import META_RANGE
from aidge_lite.ptq import PTQConfig, run_pipeline
from aidge_lite.ptq.calibrate import calibrate
from aidge_lite.ptq.calibration_data import CalibrationSet
from aidge_lite.ptq.finalize import finalize
from aidge_lite.ptq.insert_scaling import insert_scaling
from aidge_lite.ptq.normalize_activations import normalize_activations
from aidge_lite.ptq.normalize_parameters import normalize_parameters
from aidge_lite.ptq.prepare import prepare
from aidge_lite.ptq.quantize import quantize

from . import builders as B

CORE = (prepare, insert_scaling, normalize_parameters, calibrate, normalize_activations, quantize)
W = {k: (w.astype(np.float64), b.astype(np.float64)) for k, (w, b) in B.MLP_WEIGHTS.items()}
ALPHA = {k: float(np.abs(w).max()) for k, (w, _) in W.items()}
FCS = ("fc1", "fc2", "fc3")
PREV = {"fc1": "x_scaling", "fc2": "fc1_scaling", "fc3": "fc2_scaling"}
X = B.mlp_calibration()


def cfg(x=X, **kw):
    return PTQConfig(calibration=CalibrationSet(x), **kw)


def quantized_mlp(nb_bits=8, **kw):
    g = B.mlp3()
    run_pipeline(g, cfg(nb_bits=nb_bits, **kw), passes=CORE)
    return g


def assert_ulp(actual, expected, maxulp=2):
    np.testing.assert_array_max_ulp(np.asarray(actual, np.float64), np.asarray(expected, np.float64), maxulp)


def ranges(g):
    return {n.name: n.meta[META_RANGE] for n in g.topo_order() if META_RANGE in n.meta}


def expected_mlp(r, nb_bits):
    """Integer weights/biases and quantizer scales from the original weights and the ranges."""
    sw = sa = (1 << (nb_bits - 1)) - 1
    cumulative, out = 1.0, {}
    for fc in FCS:
        w, b = W[fc]
        cumulative *= ALPHA[fc]
        r_prev = r[PREV[fc]]
        out[f"{fc}_w"] = B.round_half_away(w / ALPHA[fc] * sw)
        out[f"{fc}_b"] = B.round_half_away(b / cumulative / r_prev * sw * sa)
        out[f"{fc}_scaling"] = (r_prev / r[f"{fc}_scaling"]) * sa / (sa * sw)  # s * Sa(out) / (Sa(in) Sw)
    out["x_scaling"] = (1.0 / r["x_scaling"]) * sa                           # input: s * Sa / 1
    return out


@pytest.mark.parametrize("nb_bits", [8, 4, 12])
def test_quantize_mlp_exact(nb_bits):
    g = quantized_mlp(nb_bits)
    exp = expected_mlp(ranges(g), nb_bits)
    sw = (1 << (nb_bits - 1)) - 1
    lo, hi = -(1 << (nb_bits - 1)), (1 << (nb_bits - 1)) - 1
    wdtype = np.int8 if nb_bits <= 8 else np.int16
    for fc in FCS:
        weight, bias = g.constant(f"{fc}_w"), g.constant(f"{fc}_b")
        assert weight.dtype == wdtype and bias.dtype == np.int32
        np.testing.assert_array_equal(weight, exp[f"{fc}_w"])
        np.testing.assert_array_equal(bias, exp[f"{fc}_b"])
        assert np.abs(weight).max() == sw  # max |W| maps to Sw exactly
        assert_ulp(g.node(fc).attrs["weight_scale"], sw / ALPHA[fc])
    for name in ("x_scaling", "fc1_scaling", "fc2_scaling", "fc3_scaling"):
        node = g.node(name)
        assert node.op is OpType.QUANTIZER
        assert_ulp(node.attrs["scale"], exp[name])
        assert (node.attrs["lo"], node.attrs["hi"]) == (lo, hi)
        assert node.attrs["rounding"] == "half_away" and node.attrs["mode"] == "float"
        assert node.attrs["signed"] is True and node.attrs["dtype"] == ("int8" if nb_bits <= 8 else "int16")
    assert g.node("x_scaling").attrs["role"] == "input"
    assert g.meta["quantized"] is True and g.meta["integer"] is True and g.meta["nb_bits"] == nb_bits


def test_quantize_mlp_forward_bit_exact():
    """Fake-quant and integer engines reproduce a hand-written integer forward exactly."""
    g = quantized_mlp(8)
    exp = expected_mlp(ranges(g), 8)
    finalize(g, cfg())  # renames fc3_scaling back to the float output name "fc3"
    x = np.random.default_rng(5).standard_normal((40, 3)).astype(np.float32) * 3  # some clipping too

    def quant(v, s):
        return np.clip(B.round_half_away(v * s), -128, 127)

    h = quant(x.astype(np.float64), exp["x_scaling"])
    for k, fc in enumerate(FCS):
        acc = h @ exp[f"{fc}_w"].T + exp[f"{fc}_b"]
        h = quant(acc, exp[f"{fc}_scaling"])
        if k < 2:
            h = np.maximum(h, 0)
    assert g.outputs == ["fc3"]
    fake = aidge_lite.run(g, x)["fc3"]
    np.testing.assert_array_equal(fake, h)
    integer = aidge_lite.run(g, x, engine="integer")["fc3"]
    np.testing.assert_array_equal(integer, h)
    assert g.meta["output_scale"]["fc3"] == pytest.approx(
        127 / np.abs(B.mlp_forward(X)["fc3"]).max(), rel=1e-12)


def test_quantize_network_matches_step_by_step():
    g = quantized_mlp(8)
    q = aidge_lite.quantize_network(B.mlp3(), X)
    for name in ("fc1_w", "fc1_b", "fc2_w", "fc2_b", "fc3_w", "fc3_b"):
        np.testing.assert_array_equal(q.constant(name), g.constant(name))
    for name in ("x_scaling", "fc1_scaling", "fc2_scaling"):
        assert q.node(name).attrs["scale"] == g.node(name).attrs["scale"]
    assert q.node("fc3").attrs["scale"] == g.node("fc3_scaling").attrs["scale"]  # renamed by finalize


def test_no_quant_mlp_keeps_scales_without_rounding():
    g = B.mlp3()
    run_pipeline(g, cfg(no_quant=True), passes=CORE)
    exp = expected_mlp(ranges(g), 8)
    for fc in FCS:
        w, b = W[fc]
        cumulative = np.prod([ALPHA[k] for k in FCS[:FCS.index(fc) + 1]])
        assert_ulp(g.constant(f"{fc}_w"), w / ALPHA[fc] * 127)
        np.testing.assert_allclose(g.constant(f"{fc}_b"), b / cumulative / ranges(g)[PREV[fc]] * 127 * 127,
                                   rtol=1e-14)
    for name in ("x_scaling", "fc1_scaling", "fc2_scaling", "fc3_scaling"):
        assert g.node(name).op is OpType.SCALING
        assert_ulp(g.node(name).attrs["scale"], exp[name])
    assert g.meta["integer"] is False
    finalize(g, cfg())
    out = aidge_lite.dequantize(g, aidge_lite.run(g, X))["fc3"]
    np.testing.assert_allclose(out, B.mlp_forward(X)["fc3"], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------ rounding
@pytest.mark.parametrize("rounding, expected", [
    ("half_away", [-2, -1, 1, 2]),
    ("half_even", [-2, 0, 0, 2]),
    ("half_up", [-1, 0, 1, 2]),
    ("floor", [-2, -1, 0, 1]),
])
def test_quantizer_node_rounding(rounding, expected):
    g = B.quantizer_graph(0.5, rounding)
    x = np.array([[-3.0, -1.0, 1.0, 3.0]], np.float32)  # x * 0.5 = -1.5, -0.5, 0.5, 1.5: all ties
    np.testing.assert_array_equal(aidge_lite.run(g, x)["q"], [expected])
    np.testing.assert_array_equal(aidge_lite.run(g, x, engine="integer")["q"], [expected])


def test_quantizer_node_clips():
    g = B.quantizer_graph(0.5)
    x = np.array([[-1000.0, -257.0, 255.0, 1000.0]], np.float32)
    np.testing.assert_array_equal(aidge_lite.run(g, x)["q"], [[-128, -128, 127, 127]])


@pytest.mark.parametrize("target, expected", [
    (None, [1, 2, 3, -1, -2, -3]),                          # default: half away from zero
    (Target(rounding="half_even"), [0, 2, 2, 0, -2, -2]),   # ONNX / numpy.rint
])
def test_target_rounding_reaches_every_quantizer(target, expected):
    """Calibrated so the input quantizer's scale is exactly 1: ties stay ties."""
    calib = np.array([[127.0, -3.0, 0.5], [-1.0, 2.0, 100.0]], np.float32)
    q = aidge_lite.quantize_network(B.mlp3(), calib, target=target)
    rounding = "half_away" if target is None else "half_even"
    quantizers = [n for n in q.topo_order() if n.op is OpType.QUANTIZER]
    assert len(quantizers) == 4 and all(n.attrs["rounding"] == rounding for n in quantizers)
    assert q.node("x_scaling").attrs["scale"] == 1.0
    x = np.array([[0.5, 1.5, 2.5], [-0.5, -1.5, -2.5]], np.float32)
    env = aidge_lite.run(q, x, intermediates=True)
    np.testing.assert_array_equal(env["x_scaling"].ravel(), expected)
