"""TFLite / gemmlowp requantization against Python-int / Fraction oracles."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from aidge_lite.kernels.gemmlowp import (check_gemmlowp_args, multiply_by_quantized_multiplier,
                                        quantize_multiplier,
                                        quantize_multiplier_greater_than_one,
                                        quantize_multiplier_smaller_than_one_exp,
                                        requant_gemmlowp, requant_gemmlowp_ref,
                                        rounding_divide_by_pot,
                                        saturating_rounding_doubling_high_mul)

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
HALF = Fraction(1, 2)
int32s = st.integers(I32_MIN, I32_MAX)
multipliers = st.integers(0, I32_MAX)
shifts = st.integers(-31, 30)


# --- oracles: exact rationals, the rounding rule stated once, in words ----------

def srdhm_oracle(a, b):
    """a * b / 2**31 to nearest, ties toward +inf; -1 * -1 saturates."""
    assert I32_MIN <= a <= I32_MAX and I32_MIN <= b <= I32_MAX
    if a == b == I32_MIN:
        return I32_MAX
    return math.floor(Fraction(a * b, 2 ** 31) + HALF)


def rdbpot_oracle(x, exponent):
    """x / 2**exponent to nearest, ties away from zero."""
    assert I32_MIN <= x <= I32_MAX and 0 <= exponent <= 31
    mag = math.floor(abs(Fraction(x, 2 ** exponent)) + HALF)
    return mag if x >= 0 else -mag


def mbqm_oracle(x, m, s):
    left = x * 2 ** max(s, 0)
    assert I32_MIN <= left <= I32_MAX, "TFLite would overflow int32 (UB)"
    out = rdbpot_oracle(srdhm_oracle(left, m), max(-s, 0))
    assert I32_MIN <= out <= I32_MAX
    return out


def requant_oracle(acc, m, s, params):
    in_off, pre, out_off, lo, hi = (int(p) for p in params)
    res = [[mbqm_oracle((int(a) - in_off) * 2 ** pre, int(m[c]), int(s[c])) + out_off
            for c, a in enumerate(row)] for row in acc]
    assert all(I32_MIN <= y <= I32_MAX for row in res for y in row)
    return [[min(max(y, lo), hi) for y in row] for row in res]


def test_oracles_follow_the_c_code_by_hand():
    # SRDHM: nudge 2**30 for ab >= 0, 1 - 2**30 below, then C's truncating division.
    assert srdhm_oracle(1, 2 ** 30) == 1 and srdhm_oracle(3, 2 ** 30) == 2      # +0.5, +1.5
    assert srdhm_oracle(-1, 2 ** 30) == 0 and srdhm_oracle(-3, 2 ** 30) == -1   # -0.5, -1.5
    # RDBPOT: threshold mask/2 (+1 when x < 0), i.e. ties away from zero.
    assert [rdbpot_oracle(x, 1) for x in (-3, -1, 1, 3)] == [-2, -1, 1, 2]


# --- scalar helpers ---------------------------------------------------------------

SRDHM_PINNED = [
    ((I32_MIN, I32_MIN), I32_MAX),                # the single saturating case
    ((I32_MIN, I32_MAX), I32_MIN + 1),            # exact, no rounding
    ((I32_MAX, I32_MAX), I32_MAX - 1),            # 2**31 - 2 + 2**-31
    ((I32_MIN, 1), -1), ((I32_MIN, 0), 0), ((0, I32_MIN), 0),
    ((1, 2 ** 30), 1), ((-1, 2 ** 30), 0),        # ties +-0.5: toward +inf
    ((3, 2 ** 30), 2), ((-3, 2 ** 30), -1),       # ties +-1.5: toward +inf
    ((-1, 2 ** 30 + 1), -1), ((-1, 2 ** 30 - 1), 0),  # just past / before the tie
    ((I32_MIN, 2 ** 30), -(2 ** 30)), ((I32_MAX, 2 ** 30), 2 ** 30),  # 2**30 - 1/2 ties up
]


@pytest.mark.parametrize("args, expected", SRDHM_PINNED)
def test_srdhm_pinned(args, expected):
    assert saturating_rounding_doubling_high_mul(*args) == expected == srdhm_oracle(*args)


RDBPOT_PINNED = [
    ((5, 0), 5), ((I32_MIN, 0), I32_MIN), ((I32_MAX, 0), I32_MAX),
    ((1, 1), 1), ((-1, 1), -1), ((3, 1), 2), ((-3, 1), -2), ((-5, 2), -1), ((-6, 2), -2),
    ((I32_MIN, 31), -1), ((I32_MAX, 31), 1), ((2 ** 30, 31), 1), ((-(2 ** 30), 31), -1),
    ((2 ** 30 - 1, 31), 0), ((1 - 2 ** 30, 31), 0), ((-1, 31), 0), ((I32_MIN + 1, 31), -1),
]


@pytest.mark.parametrize("args, expected", RDBPOT_PINNED)
def test_rdbpot_pinned(args, expected):
    assert rounding_divide_by_pot(*args) == expected == rdbpot_oracle(*args)


@given(a=int32s, b=int32s)
@example(a=I32_MIN, b=I32_MIN)
def test_srdhm_matches_oracle(a, b):
    assert saturating_rounding_doubling_high_mul(a, b) == srdhm_oracle(a, b)


@given(x=int32s, e=st.integers(0, 31))
@example(x=-(2 ** 30), e=31)
def test_rdbpot_matches_oracle(x, e):
    assert rounding_divide_by_pot(x, e) == rdbpot_oracle(x, e)


def test_mbqm_rounds_twice():
    # real multiplier 2**30 * 2**(-1 - 31) = 1/4: 1/4 -> SRDHM 1/2 -> 1, then 1/2 -> 1.
    assert multiply_by_quantized_multiplier(1, 2 ** 30, -1) == 1      # one rounding: 0
    assert multiply_by_quantized_multiplier(-2, 2 ** 30, -1) == -1    # one rounding (half up): 0
    assert multiply_by_quantized_multiplier(1, I32_MAX, 30) == 2 ** 30  # left shift first


# --- requant_gemmlowp: kernel == twin == oracle -----------------------------------

def run_all(acc, m, s, params, out):
    acc, m, s, params = (np.asarray(a, np.int64) for a in (acc, m, s, params))
    check_gemmlowp_args(acc, m, s, params, out)
    got = requant_gemmlowp(acc, m, s, params, out.copy())
    ref = requant_gemmlowp_ref(acc, m, s, params, out.copy())
    assert got.dtype == ref.dtype == out.dtype
    np.testing.assert_array_equal(got, ref)
    assert got.tolist() == requant_oracle(acc, m, s, params)
    return got


def x_edges(total_left):
    """int32 values x with x * 2**total_left still an int32, biased to the edges."""
    lo, hi = -(2 ** 31 >> total_left), I32_MAX >> total_left
    cands = {lo, lo + 1, hi, hi - 1, 0, 1, -1, 2, -2, 3, -3}
    cands |= {sg * 2 ** k + d for sg in (1, -1) for k in range(31) for d in (-1, 0, 1)}
    cands |= {sg * (2 ** k + 2 ** (k - 1)) for sg in (1, -1) for k in range(1, 31)}  # .5 ties
    return sorted(x for x in cands if lo <= x <= hi)


@pytest.mark.parametrize("shift", list(range(-31, 31)))
def test_edges_match_oracle(shift):
    m = np.array([0, 1, 2 ** 30 - 1, 2 ** 30, 2 ** 30 + 1, 1518500250, I32_MAX], np.int64)
    acc = np.array(x_edges(max(shift, 0)), np.int64)[:, None].repeat(len(m), axis=1)
    full = [0, 0, 0, I32_MIN, I32_MAX]
    run_all(acc, m, np.full(len(m), shift), full, np.empty(acc.shape, np.int32))


@pytest.mark.parametrize("pre, in_off, out_off", [(20, 0, 0), (20, -128, 5), (20, 127, -3),
                                                  (15, 0, 0), (1, I32_MIN, 0), (30, 1, I32_MAX)])
def test_add_style_pre_shift_edges(pre, in_off, out_off):
    m = np.array([0, 2 ** 30, 1073741823, I32_MAX], np.int64)
    for shift in (-31, -20, -1, 0):
        xs = [x + in_off for x in x_edges(pre) if I32_MIN <= x + in_off <= I32_MAX]
        acc = np.array(xs, np.int64)[:, None].repeat(len(m), axis=1)
        params = [in_off, pre, out_off, I32_MIN, I32_MAX]
        try:
            check_gemmlowp_args(acc, m, np.full(len(m), shift, np.int64), np.array(params))
        except ValueError:  # out_off pushes a value out of int32: keep the in-range rows
            ok = [r for r in range(len(xs)) if all(
                I32_MIN <= mbqm_oracle((xs[r] - in_off) << pre, int(mc), shift) + out_off <= I32_MAX
                for mc in m)]
            acc = acc[ok]
        run_all(acc, m, np.full(len(m), shift), params, np.empty(acc.shape, np.int32))


@pytest.mark.parametrize("dtype, lo, hi", [(np.int8, -128, 127), (np.uint8, 0, 255),
                                           (np.int16, -32768, 32767), (np.int8, 0, 6)])
def test_clamps_to_the_output_type(dtype, lo, hi):
    acc = np.array([[I32_MIN, I32_MAX, 0, -1, 1000, -1000]], np.int64).T.repeat(2, axis=1)
    run_all(acc, [2 ** 30, I32_MAX], [0, -4], [0, 0, 3, lo, hi], np.empty(acc.shape, dtype))


@st.composite
def gemmlowp_cases(draw):
    n_rows, n_ch = draw(st.integers(0, 5)), draw(st.integers(0, 4))
    pre = draw(st.one_of(st.sampled_from([0, 20, 15]), st.integers(0, 30)))
    m = [draw(st.one_of(st.integers(2 ** 30, I32_MAX), multipliers)) for _ in range(n_ch)]
    s = [draw(st.one_of(st.integers(-12, 2), shifts)) for _ in range(n_ch)]
    small = st.integers(-300, 300)
    in_off, out_off = draw(st.one_of(small, int32s)), draw(st.one_of(small, int32s))
    cols = []
    for c in range(n_ch):
        t = pre + max(s[c], 0)
        d_lo = max(-(2 ** 31 >> t), I32_MIN - in_off)
        d_hi = min(I32_MAX >> t, I32_MAX - in_off)
        near_zero = st.integers(max(d_lo, -(2 ** 12)), min(d_hi, 2 ** 12))  # unclamped outputs
        d = st.one_of(near_zero, st.integers(d_lo, d_hi))
        cols.append([in_off + draw(d) for _ in range(n_rows)])
    dtype = draw(st.sampled_from([np.int8, np.uint8, np.int16, np.int32]))
    info = np.iinfo(dtype)
    lo = draw(st.integers(int(info.min), int(info.max)))
    hi = draw(st.integers(lo, int(info.max)))
    acc = np.array(cols, np.int64).reshape(n_ch, n_rows).T.copy()
    return (acc, np.array(m, np.int64), np.array(s, np.int64),
            np.array([in_off, pre, out_off, lo, hi], np.int64), np.empty(acc.shape, dtype))


@given(args=gemmlowp_cases())
def test_kernel_matches_twin_and_oracle(args):
    try:
        check_gemmlowp_args(*args)
    except ValueError:
        assume(False)  # output_offset overflow: rejected, covered by test_check_* below
    run_all(*args)


# --- check_gemmlowp_args ------------------------------------------------------------

def row(*values):
    return np.array([values], np.int64)


def make_params(in_off=0, pre=0, out_off=0, lo=-128, hi=127):
    return np.array([in_off, pre, out_off, lo, hi], np.int64)


def good(**kw):
    args = dict(acc=row(10, -10), multiplier=np.array([2 ** 30, 2 ** 30]), shift=np.array([0, -3]),
                params=make_params(), out=np.empty((1, 2), np.int8))
    args.update(kw)
    return args


@pytest.mark.parametrize("kw, msg", [
    (dict(acc=np.array([[1, 2]], np.int32)), "int64"),
    (dict(acc=np.zeros((2, 4), np.int64)[:, ::2]), "C-contiguous"),
    (dict(multiplier=np.array([1, 2, 3])), r"multiplier must be .* shape \(2,\)"),
    (dict(shift=np.array([0.0, 1.0])), "shift must be an int64"),
    (dict(params=np.array([0, 0, 0, 1])), "params"),
    (dict(multiplier=np.array([2 ** 31, 1])), "multiplier"),
    (dict(multiplier=np.array([-1, 1])), "multiplier"),
    (dict(shift=np.array([31, 0])), r"\[-31, 30\]"),
    (dict(shift=np.array([0, -32])), r"\[-31, 30\]"),
    (dict(params=make_params(in_off=2 ** 31)), "input_offset"),
    (dict(params=make_params(out_off=-(2 ** 31) - 1)), "output_offset"),
    (dict(acc=row(0, 0), params=make_params(pre=31)), "pre_shift = 31"),
    (dict(acc=row(0, 0), params=make_params(pre=-1)), "pre_shift = -1"),
    (dict(params=make_params(lo=5, hi=4)), "empty clamp range"),
    (dict(params=make_params(lo=-129)), "int8"),
    (dict(out=np.empty((1, 2), np.int64)), "out"),
    (dict(out=np.empty((2, 1), np.int8)), "out"),
    (dict(acc=row(2 ** 31, 0)), "acc leaves int32"),
    (dict(acc=row(I32_MIN, 0), params=make_params(in_off=1)), "row 0, channel 0"),
    (dict(acc=row(0, 2 ** 11), params=make_params(pre=20)), "channel 1"),
    (dict(acc=row(2 ** 30, 0), shift=np.array([1, 0])), "row 0, channel 0"),
    (dict(acc=row(I32_MAX, 0), multiplier=np.array([I32_MAX, 0]), params=make_params(out_off=2)),
     "output_offset = 2147483648"),
])
def test_check_rejects(kw, msg):
    with pytest.raises(ValueError, match=msg):
        check_gemmlowp_args(**good(**kw))


@pytest.mark.parametrize("kw", [
    {},
    dict(acc=row(I32_MIN, I32_MAX)),
    dict(acc=row(-(2 ** 30), 2 ** 30 - 1), shift=np.array([1, 1])),
    dict(acc=row(-(2 ** 11) + 7, 2 ** 11 + 6), params=make_params(in_off=7, pre=20)),
    dict(acc=row(0, -1), shift=np.array([30, 30]), params=make_params(pre=1)),
    # output_offset next to int32 max: fine, the exact products are +-1 (the
    # conservative bound |MBQM(v)| <= |v| alone would reject it)
    dict(acc=row(I32_MAX, I32_MIN), multiplier=np.array([1, 1]),
         params=make_params(out_off=I32_MAX - 1, lo=0)),
    dict(acc=row(I32_MAX, 0), multiplier=np.array([I32_MAX, 0]),
         params=make_params(out_off=1)),  # 2**31 - 2 + 1 == int32 max
    dict(acc=np.zeros((0, 2), np.int64), params=make_params(pre=30), out=np.empty((0, 2), np.int8)),
])
def test_check_accepts(kw):
    args = good(**kw)
    check_gemmlowp_args(**args)
    run_all(args["acc"], args["multiplier"], args["shift"], args["params"], args["out"])


# --- quantize_multiplier -------------------------------------------------------------

def quantize_multiplier_oracle(real):
    """TFLite's algorithm redone in Fractions: frexp by search, std::round, renormalise,
    flush shift < -31 to zero; no clamp of shift > 30 (double-rounding build)."""
    x = Fraction(real)
    if x == 0:
        return 0, 0
    e = 0
    while x >= Fraction(2) ** e:
        e += 1
    while x < Fraction(2) ** (e - 1):
        e -= 1
    scaled = x / Fraction(2) ** e * 2 ** 31
    q = math.floor(scaled + HALF)  # scaled > 0: half away from zero
    if q == 2 ** 31:
        q, e = q // 2, e + 1
    return (0, 0) if e < -31 else (q, e)


KNOWN = [
    (0.0, (0, 0)), (0.5, (2 ** 30, 0)), (1.0, (2 ** 30, 1)), (0.75, (3 * 2 ** 29, 0)),
    (0.25, (2 ** 30, -1)), (2.0 ** -31, (2 ** 30, -30)), (2.0 ** -32, (2 ** 30, -31)),
    (2.0 ** -33, (0, 0)), (5e-324, (0, 0)), (2.0 ** 40, (2 ** 30, 41)),
    (1.0 - 2.0 ** -53, (2 ** 30, 1)),                   # mantissa rounds up to 1: renormalised
    (0.5 + 2.0 ** -32, (2 ** 30 + 1, 0)),                # exact tie: away from zero (not to even)
    (0.5 + 3 * 2.0 ** -32, (2 ** 30 + 2, 0)),
    (0.5 + 2.0 ** -33, (2 ** 30, 0)),                    # below the tie
    (0.1, (1717986918, -3)), (2.0 ** -32 * (1 - 2.0 ** -53), (2 ** 30, -31)),
]


@pytest.mark.parametrize("real, expected", KNOWN)
def test_quantize_multiplier_known(real, expected):
    assert quantize_multiplier(real) == expected == quantize_multiplier_oracle(real)


@given(real=st.floats(0.0, 2.0 ** 64, allow_subnormal=True))
@example(real=1.0 - 2.0 ** -32)
@example(real=2.0 ** -32 - 2.0 ** -86)
def test_quantize_multiplier_matches_fraction_oracle(real):
    q, shift = quantize_multiplier(real)
    assert (q, shift) == quantize_multiplier_oracle(real)
    assert q == 0 or 2 ** 30 <= q < 2 ** 31


@pytest.mark.parametrize("bad", [-1.0, -0.0 - 1e-300, float("nan"), float("inf")])
def test_quantize_multiplier_rejects(bad):
    with pytest.raises(ValueError):
        quantize_multiplier(bad)


def test_quantize_multiplier_checked_variants():
    assert quantize_multiplier_smaller_than_one_exp(0.5) == (2 ** 30, 0)
    assert quantize_multiplier_smaller_than_one_exp(0.1) == (1717986918, -3)
    assert quantize_multiplier_smaller_than_one_exp(2.0 ** -40) == (0, 0)
    for bad in (0.0, 1.0, 1.5, -0.5, 1.0 - 2.0 ** -53):  # the last rounds to shift 1
        with pytest.raises(ValueError):
            quantize_multiplier_smaller_than_one_exp(bad)
    assert quantize_multiplier_greater_than_one(3.0) == (3 * 2 ** 29, 2)
    for bad in (1.0, 0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            quantize_multiplier_greater_than_one(bad)


@given(x=st.integers(-(2 ** 20), 2 ** 20), real=st.floats(2.0 ** -20, 0.999))
def test_q31_requant_is_close_to_the_real_product(x, real):
    q, s = quantize_multiplier(real)
    y = multiply_by_quantized_multiplier(x, q, s)
    assert abs(Fraction(y) - Fraction(x) * Fraction(real)) <= 1
