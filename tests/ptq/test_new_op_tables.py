"""Lookup-table activations (Sigmoid, Tanh, LeakyRelu, HardSigmoid, HardSwish, Gelu, Erf,
SiLU), quantized: every table entry checked against a Python oracle, in both engines
(`assert_array_equal`); tables chained and a clamp folded into a table.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import aidge_lite
from aidge_lite.ir import Graph, OpType
from aidge_lite.kernels.rounding import round_float_ref

from . import builders as B
from .new_ops_helpers import F32, factors, quantize_and_check, run_table_alone


# ------------------------------------------------------------------ lookup tables
def _hard_sigmoid(x, alpha=0.2, beta=0.5):
    return min(1.0, max(0.0, x * alpha + beta))


ORACLES = {
    OpType.SIGMOID: ({}, lambda x: 1.0 / (1.0 + math.exp(-x))),
    OpType.TANH: ({}, math.tanh),
    OpType.LEAKY_RELU: ({"alpha": 0.1}, lambda x: x if x >= 0 else x * 0.1),
    OpType.HARD_SIGMOID: ({"alpha": 0.25, "beta": 0.4}, lambda x: _hard_sigmoid(x, 0.25, 0.4)),
    OpType.HARD_SWISH: ({}, lambda x: x * _hard_sigmoid(x, 1 / 6, 0.5)),
    OpType.GELU: ({}, lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2)))),
    OpType.ERF: ({}, math.erf),
}


def table_net(op, attrs, seed=9) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph(f"table_{op.value}")
    B.add_input(g, "x", [None, 6])
    B.add_gemm(g, "fc1", "x", rng.standard_normal((5, 6)), rng.standard_normal(5) * 0.3)
    B.add_op(g, "act", op, ["fc1"], **attrs)
    B.add_gemm(g, "fc2", "act", rng.standard_normal((3, 5)), rng.standard_normal(3) * 0.1)
    return B.finish(g, ["fc2"])


@pytest.mark.parametrize("op", list(ORACLES), ids=lambda o: o.value)
def test_lookup_table_matches_a_python_oracle_at_8_bits(op):
    attrs, f = ORACLES[op]
    rng = np.random.default_rng(10)
    calib = (rng.standard_normal((64, 6)) * 1.5).astype(F32)
    q, snr = quantize_and_check(table_net(op, attrs), calib, calib[:32])
    table = q.node("act")
    assert table.op is OpType.LOOKUP and table.attrs["function"] == op.value
    pre = q.node(table.inputs[0])
    post_factor = factors(q)["act"]
    in_factor = factors(q)[pre.name]
    lo, hi = pre.attrs["lo"], pre.attrs["hi"]
    assert hi - lo + 1 == 256 and table.attrs["table"].size == 256
    out_lo, out_hi = (0, 255) if table.attrs["dtype"] == "uint8" else (-128, 127)
    oracle = []
    for code in range(lo, hi + 1):
        v = f(code / in_factor) * post_factor
        r = math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)  # half away from zero
        oracle.append(min(out_hi, max(out_lo, r)))
    codes = np.arange(lo, hi + 1)
    fake, integer = run_table_alone(q, table, codes)
    np.testing.assert_array_equal(integer, np.array(oracle))
    np.testing.assert_array_equal(fake, integer)
    assert snr["fc2"] > 28, (op, snr)


def test_lookup_table_at_16_bits_enumerates_every_code():
    rng = np.random.default_rng(11)
    calib = (rng.standard_normal((64, 6)) * 1.5).astype(F32)
    q, snr = quantize_and_check(table_net(OpType.SIGMOID, {}), calib, calib[:32], nb_bits=16,
                                target=aidge_lite.Target(acc_bits=64))
    table = q.node("act")
    assert table.attrs["table"].size == 1 << 16 and table.attrs["table"].dtype == np.int16
    in_factor, out_factor = factors(q)[table.inputs[0]], factors(q)["act"]
    codes = np.arange(-(1 << 15), 1 << 15)
    expected = np.clip(round_float_ref(out_factor / (1 + np.exp(-codes / in_factor)), 0), -(1 << 15), (1 << 15) - 1)
    fake, integer = run_table_alone(q, table, codes)
    np.testing.assert_array_equal(integer, expected)
    np.testing.assert_array_equal(fake, integer)
    assert snr["fc2"] > 60, snr


def test_non_negative_table_output_is_unsigned_with_sign_optimisation():
    calib = (np.random.default_rng(12).standard_normal((64, 6)) * 1.5).astype(F32)
    q, _ = quantize_and_check(table_net(OpType.SIGMOID, {}), calib, calib[:8], optimize_signs=True)
    assert q.node("act").attrs["dtype"] == "uint8"
    q, _ = quantize_and_check(table_net(OpType.TANH, {}), calib, calib[:8], optimize_signs=True)
    assert q.node("act").attrs["dtype"] == "int8"


def test_chained_tables_and_a_clamp_after_a_table():
    """Sigmoid -> Tanh -> Clip: the second table reads the first one's codes, the clamp
    goes into the second table's entries."""
    rng = np.random.default_rng(16)
    g = Graph("chain")
    B.add_input(g, "x", [None, 6])
    B.add_gemm(g, "fc1", "x", rng.standard_normal((5, 6)), rng.standard_normal(5) * 0.3)
    B.add_op(g, "sig", OpType.SIGMOID, ["fc1"])
    B.add_op(g, "th", OpType.TANH, ["sig"])
    B.add_op(g, "clamp", OpType.CLIP, ["th"], min=0.3, max=0.7)
    B.add_gemm(g, "fc2", "clamp", rng.standard_normal((3, 5)), rng.standard_normal(3) * 0.1)
    B.finish(g, ["fc2"])
    calib = (rng.standard_normal((64, 6)) * 2).astype(F32)
    q, snr = quantize_and_check(g, calib, calib[:32])
    assert [n.op for n in q.topo_order() if n.name in ("sig", "th")] == [OpType.LOOKUP, OpType.LOOKUP]
    assert "clamp" not in q
    th = q.node("th")
    first = q.node("sig").attrs["table"]
    assert th.attrs["table"].size == int(first.max()) - int(first.min()) + 1
    factor = factors(q)["th"]
    assert th.attrs["table"].min() == round(0.3 * factor) and th.attrs["table"].max() == round(0.7 * factor)
    assert snr["fc2"] > 30, snr


def test_silu_written_as_x_times_sigmoid_is_one_table():
    rng = np.random.default_rng(17)
    g = Graph("silu")
    B.add_input(g, "x", [None, 6])
    B.add_gemm(g, "fc1", "x", rng.standard_normal((5, 6)), rng.standard_normal(5) * 0.3)
    B.add_op(g, "sig", OpType.SIGMOID, ["fc1"])
    B.add_op(g, "swish", OpType.MUL, ["sig", "fc1"])
    B.add_gemm(g, "fc2", "swish", rng.standard_normal((3, 5)), rng.standard_normal(3) * 0.1)
    B.finish(g, ["fc2"])
    calib = (rng.standard_normal((64, 6)) * 2).astype(F32)
    q, snr = quantize_and_check(g, calib, calib[:32])
    table = q.node("swish")
    assert table.op is OpType.LOOKUP and table.inputs == ["fc1_scaling"] and "sig" not in q
    in_factor, out_factor = factors(q)["fc1_scaling"], factors(q)["swish"]
    oracle = []
    for code in range(-128, 128):
        v = code / in_factor / (1.0 + math.exp(-code / in_factor)) * out_factor
        oracle.append(min(127, max(-128, math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1))))
    fake, integer = run_table_alone(q, table, np.arange(-128, 128))
    np.testing.assert_array_equal(integer, np.array(oracle))
    np.testing.assert_array_equal(fake, integer)
    assert snr["fc2"] > 30, snr
