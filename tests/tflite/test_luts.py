"""TFLite int8 LOGISTIC / TANH / HARD_SWISH tables and the SOFTMAX kernel.

Two layers: a Python-int oracle of gemmlowp's softmax (written from the C
code, int32 semantics spelled out) against the Numba kernel and its NumPy
twin; then everything against LiteRT's BUILTIN_REF kernels on single-op
models: all 256 int8 codes per (scale, zero point), random rows with ties
for SOFTMAX. 0 mismatches everywhere. Heavier sweeps are marked slow.
"""
import math
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aidge_lite.kernels.softmax import (check_softmax_args, pack_softmax_params, softmax_int8,
                                        softmax_int8_ref)
from aidge_lite.tflite import luts

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
CODES = np.arange(-128, 128, dtype=np.int8)
TABLES = {"LOGISTIC": luts.logistic_table, "TANH": luts.tanh_table,
          "HARD_SWISH": luts.hard_swish_table}


# --- Python-int oracle of reference_ops::Softmax (int8 -> int8) ----------------------

def _wrap(v):
    return ((v + 2 ** 31) % 2 ** 32) - 2 ** 31


def _srdhm(a, b):
    if a == b == I32_MIN:
        return I32_MAX
    n = a * b + (2 ** 30 if a * b >= 0 else 1 - 2 ** 30)
    return n // 2 ** 31 if n >= 0 else -((-n) // 2 ** 31)  # C division truncates


def _rdbpot(x, e):
    mask = (1 << e) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if (x & mask) > threshold else 0)


def _mul_pot(x, e):  # SaturatingRoundingMultiplyByPOT<e>, e > 0
    t = (1 << (31 - e)) - 1
    return I32_MAX if x > t else I32_MIN if x < -t else x * 2 ** e


def _exp_neg(a):  # FixedPoint<int32, 5> -> FixedPoint<int32, 0>
    a_mod = (a & (2 ** 24 - 1)) - 2 ** 24
    x = _mul_pot(a_mod, 5) + 2 ** 28
    x2 = _srdhm(x, x)
    x3, x4 = _srdhm(x2, x), _srdhm(x2, x2)
    t = _rdbpot(_wrap(_srdhm(_wrap(_rdbpot(x4, 2) + x3), 715827883) + x2), 1)
    result = _wrap(1895147668 + _srdhm(1895147668, _wrap(x + t)))
    remainder = _wrap(a_mod - a)
    for k, m in zip(range(-2, 5), (1672461947, 1302514674, 790015084, 290630308, 39332535,
                                   720401, 242)):
        if remainder & (1 << (26 + k)):
            result = _srdhm(result, m)
    return I32_MAX if a == 0 else result


def _one_over_one_plus_x(a):
    s = a + I32_MAX
    half = (s + 1) // 2 if s >= 0 else -((1 - s) // 2)
    x = _wrap(1515870810 + _srdhm(half, -1010580540))
    for _ in range(3):
        x = _wrap(x + _mul_pot(_srdhm(x, _wrap(2 ** 29 - _srdhm(half, x))), 2))
    return _mul_pot(x, 1)


def softmax_oracle(row, multiplier, shift, diff_min):
    """One row; None where TFLite's CHECK(0 <= exponent <= 31) aborts."""
    top = max([-128] + [int(v) for v in row])
    exps = {c: _exp_neg(_srdhm(_wrap((int(v) - top) * 2 ** shift), multiplier))
            for c, v in enumerate(row) if int(v) - top >= diff_min}
    total = 0
    for e in exps.values():
        total = _wrap(total + _rdbpot(e, 12))
    headroom = 32 - (total % 2 ** 32).bit_length()  # CountLeadingZeros((uint32)total)
    exponent = 12 - headroom + 31 - 8
    if not 0 <= exponent <= 31:
        return None
    recip = _one_over_one_plus_x(_wrap(((total % 2 ** 32) << headroom) % 2 ** 32 - 2 ** 31))
    return [min(max(_rdbpot(_srdhm(recip, exps[c]), exponent) - 128, -128), 127)
            if c in exps else -128 for c in range(len(row))]


def run_both(x, params):
    check_softmax_args(x, params)
    a = softmax_int8(x, params, np.empty_like(x))
    b = softmax_int8_ref(x, params, np.empty_like(x))
    np.testing.assert_array_equal(a, b)
    return a


def test_fixed_point_pieces_approximate_their_functions():
    for a in (0, -1, -(2 ** 20), -(2 ** 26), -5 * 2 ** 26, -31 * 2 ** 26):
        assert abs(_exp_neg(a) / 2 ** 31 - math.exp(a / 2 ** 26)) < 1e-6
    for a in (0, 1, 2 ** 29, 2 ** 30, I32_MAX):
        assert abs(_one_over_one_plus_x(a) / 2 ** 31 - 1 / (1 + a / 2 ** 31)) < 1e-6


def test_softmax_params_pinned():
    # 0.1f * 2**26 = 6710886.5 = 0.8000000119 * 2**23; diff_min = -floor(31 * 2**26 / 2**23)
    assert luts.softmax_params(0.1, 1.0) == {"input_multiplier": 1717986944,
                                             "input_left_shift": 23, "diff_min": -248}
    big = luts.softmax_params(10.0, 1e4)  # capped at 2**31 - 1: shift 31, only the max counts
    assert big == {"input_multiplier": I32_MAX, "input_left_shift": 31, "diff_min": 0}
    with pytest.raises(ValueError, match="must be > 1"):
        luts.softmax_params(2.0 ** -26, 1.0)  # TFLite aborts: real == 1


scales = st.floats(-6.0, 1.5).map(lambda e: float(np.float32(10.0 ** e)))
betas = st.sampled_from([1.0, 0.5, 2.0, 1e-3, 10.0, 1e4])


@st.composite
def softmax_cases(draw):
    s_in, beta = draw(scales), draw(betas)
    if not float(np.float32(s_in)) * float(np.float32(beta)) * 2 ** 26 > 1:
        s_in, beta = 0.05, 1.0
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 40))
    centre = draw(st.integers(-128, 127))
    spread = draw(st.sampled_from([0, 1, 3, 30, 255]))
    values = st.integers(max(-128, centre - spread), min(127, centre + spread))
    x = np.array(draw(st.lists(values, min_size=rows * cols, max_size=rows * cols)), np.int8)
    return s_in, beta, x.reshape(rows, cols)


@given(softmax_cases())
def test_softmax_kernel_twin_and_oracle_agree(case):
    s_in, beta, x = case
    p = luts.softmax_params(s_in, beta)
    got = run_both(x, pack_softmax_params(p))
    for row, out in zip(x, got):
        assert out.tolist() == softmax_oracle(row, *pack_softmax_params(p).tolist())


@pytest.mark.parametrize("s_in, beta", [(0.1, 1.0), (10.0, 1e4), (2.0 ** -26 * 1.5, 1.0),
                                        (1 / 16, 1.0), (0.0390625, 0.3)])
def test_softmax_edges(s_in, beta):
    p = pack_softmax_params(luts.softmax_params(s_in, beta))
    diff_min = int(p[2])
    edge = [max(-128, 127 + diff_min), max(-128, 127 + diff_min - 1), 127]
    rows = [[127], [-128], [-128, 127], [0] * 511, [127] * 300 + [-128] * 300, edge,
            list(range(-128, 128)), [5, 5, 5, -100]]
    for row in rows:
        x, expected = np.array([row], np.int8), softmax_oracle(row, *p.tolist())
        if expected is None:  # sum of exps >= 512 (tiny beta * s_in): TFLite aborts
            for kernel in (softmax_int8, softmax_int8_ref):
                with pytest.raises(ValueError, match="aborts"):
                    kernel(x, p, np.empty_like(x))
        else:
            assert run_both(x, p)[0].tolist() == expected
    assert run_both(np.zeros((3, 0), np.int8), p).shape == (3, 0)


def test_softmax_raises_where_tflite_aborts():
    p = pack_softmax_params(luts.softmax_params(0.1, 1.0))
    x = np.zeros((2, 512), np.int8)  # 512 equal maxima: sum of exps = 2**28
    assert softmax_oracle(x[0], *p.tolist()) is None
    for kernel in (softmax_int8, softmax_int8_ref):
        with pytest.raises(ValueError, match="aborts"):
            kernel(x, p, np.empty_like(x))


# --- tables without LiteRT ------------------------------------------------------------

def test_tables_fixed_points_and_rejections():
    assert luts.logistic_table(0.1, 7, 1 / 256, -128)[128 + 7] == 0      # sigmoid(0) = 1/2
    assert luts.tanh_table(0.05, -3, 1 / 128, 0)[128 - 3] == 0
    assert luts.hard_swish_table(0.05, 10, 0.03, -20)[128 + 10] == -20
    t = np.clip(luts.tanh_table(0.05, 0, 1 / 128, 0)[1:].astype(int), -127, 127)
    assert (t == -t[::-1]).all()                                          # odd around code 0
    with pytest.raises(ValueError, match="1/256"):
        luts.logistic_table(0.1, 0, 1 / 255, -128)
    with pytest.raises(ValueError, match="exponent"):
        luts.hard_swish_table(1.0, 0, 1.0 / 128, 0)                       # s_in / (128 s_out) = 1
    with pytest.raises(ValueError, match="int16"):
        luts.hard_swish_table(0.1, 40000, 0.1, 0)
    with pytest.raises(ValueError):
        luts.tanh_table(float("nan"), 0, 1 / 128, 0)


# --- against LiteRT -----------------------------------------------------------------

def _unary_model(opcode, s_in, z_in, s_out, z_out):
    from aidge_lite.testing.tflite_build import Op, Tensor, build_model

    t = [Tensor("x", (1, 256), "int8", scale=[s_in], zero_point=[z_in]),
         Tensor("y", (1, 256), "int8", scale=[s_out], zero_point=[z_out])]
    return build_model(t, [Op(opcode, ["x"], ["y"])], ["x"], ["y"])


def litert_table(opcode, s_in, z_in, s_out, z_out):
    """LiteRT's output for all 256 codes, or None when its Prepare fails."""
    from aidge_lite.testing.litert_oracle import run_litert

    try:
        out = run_litert(_unary_model(opcode, s_in, z_in, s_out, z_out), CODES[None])
    except (RuntimeError, ValueError):
        return None
    return out["y"].reshape(256)


def assert_table_matches(opcode, s_in, z_in, s_out, z_out):
    ref = litert_table(opcode, s_in, z_in, s_out, z_out)
    try:
        ours = TABLES[opcode](s_in, z_in, s_out, z_out)
    except ValueError:
        assert ref is None, f"{opcode}{(s_in, z_in, s_out, z_out)}: LiteRT accepts, we reject"
        return
    assert ref is not None, f"{opcode}{(s_in, z_in, s_out, z_out)}: LiteRT rejects, we accept"
    bad = np.flatnonzero(ours != ref)
    assert bad.size == 0, f"{opcode}{(s_in, z_in, s_out, z_out)}: codes {bad - 128}"


EDGE_CASES = [  # (op, s_in, z_in, s_out, z_out)
    *[("LOGISTIC", s, z, 1 / 256, -128) for s in (1e-40, 1e-8, 0.0039, 0.1, 7.5, 1e30, 3e38)
      for z in (-128, 0, 127)],
    ("LOGISTIC", 0.1, 0, 1 / 256, 127), ("LOGISTIC", 0.1, 0, 1 / 255, -128),
    *[("TANH", s, z, so, zo) for s in (1e-9, 0.02, 0.5, 1e20) for z in (-128, 127)
      for so, zo in ((1 / 128, 0), (1e-12, 0), (0.3, -128), (1e-5, 127))],
    *[("HARD_SWISH", s, z, so, zo) for s in (1e-9, 2e-7, 0.02, 3e7) for z in (-128, 127)
      for so, zo in ((s / 100, -128), (s * 1000, 127), (s * 6e4, 0), (s / 128, 0))],
    ("HARD_SWISH", 0.1, 32767, 0.1, -32768), ("HARD_SWISH", 0.1, 32768, 0.1, 0),
]


@pytest.mark.parametrize("case", EDGE_CASES, ids=lambda c: "-".join(map(str, c)))
def test_tables_equal_litert_at_edges(case):
    pytest.importorskip("ai_edge_litert")
    assert_table_matches(*case)


zps = st.one_of(st.sampled_from([-128, 127, 0]), st.integers(-128, 127))
wide_scales = st.floats(-8.0, 3.0).map(lambda e: float(np.float32(10.0 ** e)))


@settings(max_examples=40)
@given(st.sampled_from(sorted(TABLES)), wide_scales, zps, wide_scales, zps)
def test_tables_equal_litert(opcode, s_in, z_in, s_out, z_out):
    pytest.importorskip("ai_edge_litert")
    if opcode == "LOGISTIC":
        s_out = 1 / 256
    assert_table_matches(opcode, s_in, z_in, s_out, z_out)


def _softmax_model(s_in, beta, shape):
    from aidge_lite.testing.tflite_build import Op, Tensor, build_model

    t = [Tensor("x", shape, "int8", scale=[s_in], zero_point=[3]),
         Tensor("y", shape, "int8", scale=[1 / 256], zero_point=[-128])]
    return build_model(t, [Op("SOFTMAX", ["x"], ["y"], {"beta": float(beta)})], ["x"], ["y"])


def assert_softmax_matches(s_in, beta, x):
    from aidge_lite.testing.litert_oracle import run_litert

    ref = run_litert(_softmax_model(s_in, beta, x.shape), x)["y"]
    ours = run_both(x, pack_softmax_params(luts.softmax_params(s_in, beta)))
    assert (ours != ref).sum() == 0, f"SOFTMAX s_in={s_in} beta={beta}"


@settings(max_examples=40)
@given(softmax_cases())
def test_softmax_equals_litert(case):
    pytest.importorskip("ai_edge_litert")
    assert_softmax_matches(*case)


@pytest.mark.slow
def test_sweeps_equal_litert():
    pytest.importorskip("ai_edge_litert")
    rng = np.random.default_rng(2024)
    draw_scale = lambda lo, hi: float(np.float32(10 ** rng.uniform(lo, hi)))  # noqa: E731
    draw_zp = lambda: int(rng.choice([-128, 127, int(rng.integers(-128, 128))]))  # noqa: E731
    for _ in range(1500):
        for opcode in TABLES:
            s_out = 1 / 256 if opcode == "LOGISTIC" else draw_scale(-8, 3)
            assert_table_matches(opcode, draw_scale(-8, 3), draw_zp(), s_out, draw_zp())
    for _ in range(1500):
        s_in, beta = draw_scale(-6, 1.5), float(rng.choice([1.0, 0.5, 2.0, 1e-3, 10.0, 1e4]))
        if s_in * beta * 2 ** 26 <= 1:
            continue
        cols = int(rng.choice([1, 3, 10, 100, 511, int(rng.integers(1, 300))]))
        spread = int(rng.choice([0, 2, 40, 255]))
        c = int(rng.integers(-128, 128))
        shape = (int(rng.integers(2, 9)), cols)
        x = rng.integers(max(-128, c - spread), min(127, c + spread) + 1, shape).astype(np.int8)
        assert_softmax_matches(s_in, beta, x)


@pytest.mark.slow
def test_litert_aborts_where_the_kernel_raises():
    pytest.importorskip("ai_edge_litert")
    code = ("import numpy as np; from tests.tflite.test_luts import _softmax_model;"
            "from aidge_lite.testing.litert_oracle import run_litert;"
            "run_litert(_softmax_model(0.1, 1.0, (2, {n})), np.zeros((2, {n}), np.int8))")
    codes = {}
    for n in (511, 512):  # sum of exps 511 (fine) and 512 (the kernel raises)
        proc = subprocess.run([sys.executable, "-c", code.format(n=n)], capture_output=True,
                              timeout=120, cwd=Path(__file__).resolve().parents[2])
        codes[n] = proc.returncode
    assert codes == {511: 0, 512: -signal.SIGABRT}  # TFLITE_CHECK(exponent <= 31) aborts
