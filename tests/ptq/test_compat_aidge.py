"""compat="aidge": what Aidge 0.3.1 does that our own mode does not.

The whole is checked against Aidge itself by `bench/aidge_compat.py` (64
configurations on mnist-8 and the digits MLP); these tests pin each rule:
an input quantizer that is never clipped and always signed, CLE on by
default, half-to-even rounding and float32 rescaling unless a target is given.
"""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite import OpType, Target

from . import builders as B

CALIB = np.abs(B.mlp_calibration(64))  # non-negative inputs, like pixels


def quantizers(q):
    return [n for n in q.topo_order() if n.op is OpType.QUANTIZER]


def input_quantizer(q):
    (node,) = [n for n in quantizers(q) if n.attrs.get("role") == "input"]
    return node


@pytest.mark.parametrize("clipping", ["mse", "aa", "kl"])
def test_input_quantizer_never_clipped(clipping):
    """Aidge has no input quantizer (its caller feeds x * (2^(n-1) - 1)): its range stays
    max |x| whatever the clipping mode, while every other rescaler gets a clip."""
    q = aidge_lite.quantize_network(B.mlp3(), CALIB, nb_bits=4, clipping=clipping, compat="aidge")
    node = input_quantizer(q)
    assert "clip" not in node.meta
    assert node.attrs["scale"] == 7 / float(np.abs(CALIB).max())
    assert all("clip" in n.meta for n in quantizers(q) if n is not node)


def test_input_quantizer_signed_under_optimize_signs():
    """Aidge treats the input as signed in +-1: non-negative data keep int8 levels (Sa = 127
    in the first bias), where our own mode goes unsigned (uint8, Sa = 255)."""
    ours = aidge_lite.quantize_network(B.mlp3(), CALIB, optimize_signs=True)
    compat = aidge_lite.quantize_network(B.mlp3(), CALIB, optimize_signs=True, compat="aidge")
    assert input_quantizer(ours).attrs["dtype"] == "uint8"
    node = input_quantizer(compat)
    assert (node.attrs["dtype"], node.attrs["lo"], node.attrs["hi"], node.attrs["signed"]) == ("int8", -128, 127, True)
    # the rest of the sign map is still optimized: fc1's and fc2's rescalers feed ReLUs
    assert [n.attrs["dtype"] for n in quantizers(compat)] == ["int8", "uint8", "uint8", "int8"]


def test_defaults_reproduce_aidge_arithmetic():
    """No target: round half to even (aidge_core's Round) and float32 quantizers (its float32
    Mul) after the input; CLE runs unless cle=False is passed."""
    q = aidge_lite.quantize_network(B.mlp3(), CALIB, compat="aidge")
    assert q.meta["target"] == Target(rounding="half_even").to_dict()
    assert [n.attrs.get("float32", False) for n in quantizers(q)] == [False, True, True, True]
    assert {p["pass"]: p["modified"] for p in q.meta["ptq_passes"]}["cross_layer_equalization"]
    off = aidge_lite.quantize_network(B.mlp3(), CALIB, compat="aidge", cle=False)
    assert not {p["pass"]: p["modified"] for p in off.meta["ptq_passes"]}["cross_layer_equalization"]


def test_explicit_target_is_honoured():
    """A target passed explicitly wins; an integer rescale has no float32 product."""
    q = aidge_lite.quantize_network(B.mlp3(), CALIB, compat="aidge", target=Target(rescale="fixed_point"))
    assert q.meta["target"]["rounding"] == "half_away"
    assert not any(n.attrs.get("float32") for n in quantizers(q))
    assert {n.attrs["mode"] for n in quantizers(q)[1:]} == {"int"}


def test_compat_graph_bit_exact_and_close_to_float():
    q = aidge_lite.quantize_network(B.mlp3(), CALIB, nb_bits=8, optimize_signs=True, compat="aidge")
    x = CALIB
    ref = aidge_lite.run(q, x)["fc3"]
    np.testing.assert_array_equal(aidge_lite.run(q, x, engine="integer")["fc3"], ref)
    got = aidge_lite.dequantize(q, {"fc3": ref})["fc3"]
    expected = B.mlp_forward(x)["fc3"]
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


def test_constants_go_float64_before_cle():
    """Aidge casts the graph to float64 before its PTQ: CLE's products must not be rounded
    back to float32 (that moved digits_mlp's calibrated ranges by ~1e-7 and flipped a
    float32 rescale: 59.500004 -> 60 where Aidge's 59.499996 -> 59)."""
    from aidge_lite.ptq import PIPELINE, PTQConfig, run_pipeline
    from aidge_lite.ptq.calibration_data import CalibrationSet

    g = B.mlp3()
    cfg = PTQConfig(calibration=CalibrationSet(CALIB, 64), cle=True, compat="aidge")
    reports = run_pipeline(g, cfg, PIPELINE[:2])  # prepare, cross_layer_equalization
    assert reports[0].notes["float64_constants"]
    assert all(g.constant(n.inputs[1]).dtype == np.float64 for n in g.topo_order() if n.op is OpType.GEMM)
