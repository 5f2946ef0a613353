"""Rounding helpers against exact Fraction / Python-int oracles."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aidge_lite.kernels import rounding as R
from tests.strategies import INT64_MAX, INT64_MIN, int64s, modes

MODES = [R.HALF_AWAY, R.HALF_UP, R.HALF_EVEN, R.FLOOR]


def round_fraction(x, mode):
    """Exact oracle: round a Fraction (or int) to an int with ``mode``."""
    x = Fraction(x)
    q = math.floor(x)
    frac = x - q
    if mode == R.FLOOR or frac < Fraction(1, 2):
        return q
    if frac > Fraction(1, 2):
        return q + 1
    return {R.HALF_UP: q + 1, R.HALF_EVEN: q + (q % 2), R.HALF_AWAY: q + (q >= 0)}[mode]


def test_names_match_constants():
    assert R.ROUNDING_NAMES == {"half_away": 0, "half_up": 1, "half_even": 2, "floor": 3}


def test_oracle_sanity():
    assert [round_fraction(Fraction(-5, 2), m) for m in MODES] == [-3, -2, -2, -3]
    assert [round_fraction(Fraction(5, 2), m) for m in MODES] == [3, 3, 2, 2]


# --- round_div_pow2 ---------------------------------------------------------

def _pow2_edge_values(shift):
    """int64 values around every tie point q*2^s + 2^(s-1) and the int64 limits."""
    vals = {0, 1, -1, 2, -2, 3, -3, INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 1,
            -(2 ** 31), 2 ** 31 - 1}
    half = 2 ** (shift - 1) if shift > 0 else 0
    for q, d in itertools.product(range(-3, 3), (-1, 0, 1)):
        vals.add(q * 2 ** shift + half + d)
    for k, d in itertools.product((shift, 31, 62), (-2, -1, 0, 1, 2)):
        vals.update((2 ** k + d, -(2 ** k) + d))
    return sorted(v for v in vals if INT64_MIN <= v <= INT64_MAX)


@pytest.mark.parametrize("shift", list(range(0, 32)) + [62, 63, 64, 65, 100])
def test_round_div_pow2_edges(shift):
    v = np.array(_pow2_edge_values(shift), np.int64)
    for mode in MODES:
        expected = [round_fraction(Fraction(int(x), 2 ** shift), mode) for x in v]
        assert [R.round_div_pow2(x, np.int64(shift), mode) for x in v] == expected
        np.testing.assert_array_equal(R.round_div_pow2_ref(v, shift, mode), expected)


@given(v=int64s, shift=st.integers(0, 70), mode=modes)
@example(v=INT64_MIN, shift=64, mode=R.HALF_AWAY)
@example(v=INT64_MIN, shift=63, mode=R.HALF_EVEN)
@example(v=INT64_MAX, shift=1, mode=R.HALF_UP)
def test_round_div_pow2_matches_fraction(v, shift, mode):
    expected = round_fraction(Fraction(v, 2 ** shift), mode)
    assert R.round_div_pow2(np.int64(v), np.int64(shift), mode) == expected
    assert R.round_div_pow2_ref(np.array([v]), shift, mode)[0] == expected


@given(data=st.data(), shift=st.integers(-62, -1), mode=modes)
def test_round_div_pow2_negative_shift_is_left_shift(data, shift, mode):
    bound = 2 ** (63 + shift)  # keeps v << -shift inside int64
    v = data.draw(st.integers(-bound, bound - 1))
    assert R.round_div_pow2(np.int64(v), np.int64(shift), mode) == v * 2 ** -shift
    assert R.round_div_pow2_ref(np.array([v]), shift, mode)[0] == v * 2 ** -shift


def test_round_div_pow2_ref_broadcasts_per_element_shift():
    v = np.array([[5, -5, 6], [7, -7, 8]], np.int64)
    shift = np.array([1, 1, 2], np.int64)
    expected = [[round_fraction(Fraction(int(x), 2 ** int(s)), R.HALF_EVEN)
                 for x, s in zip(row, shift)] for row in v]
    np.testing.assert_array_equal(R.round_div_pow2_ref(v, shift, R.HALF_EVEN), expected)


# --- round_div --------------------------------------------------------------

@given(num=int64s, den=st.integers(1, INT64_MAX), mode=modes)
@example(num=INT64_MIN, den=3, mode=R.HALF_AWAY)
@example(num=INT64_MIN, den=2, mode=R.HALF_EVEN)
@example(num=INT64_MAX, den=INT64_MAX, mode=R.FLOOR)
@example(num=INT64_MIN, den=INT64_MAX, mode=R.HALF_UP)
@example(num=-5, den=2, mode=R.HALF_AWAY)
@example(num=-5, den=2, mode=R.HALF_UP)
@example(num=7, den=2, mode=R.HALF_EVEN)
@example(num=-9, den=6, mode=R.HALF_EVEN)
@example(num=17, den=1, mode=R.HALF_AWAY)
def test_round_div_matches_fraction(num, den, mode):
    expected = round_fraction(Fraction(num, den), mode)
    assert R.round_div(np.int64(num), np.int64(den), mode) == expected
    assert R.round_div_ref(np.array([num]), den, mode)[0] == expected


# --- round_float ------------------------------------------------------------

NEAR_HALVES = [0.49999999999999994, -0.49999999999999994, 0.5, -0.5, 1.5, -1.5, 2.5,
               -2.5, 0.5000000000000001, -0.5000000000000001, 2.4999999999999996,
               -2.4999999999999996, 2.0 ** 52 + 0.5 + 0.5, 2.0 ** 52 - 0.5, -(2.0 ** 52) + 0.5,
               4503599627370495.5, -4503599627370495.5, 0.0, -0.0, 1e300, -1e300, 5e-324,
               -5e-324, 0.3, -0.3, -0.7]


@given(y=st.floats(allow_nan=False, allow_infinity=False), mode=modes)
def test_round_float_matches_fraction(y, mode):
    expected = float(round_fraction(Fraction(y), mode))
    got = R.round_float(y, mode)
    assert got == expected
    assert got != 0 or math.copysign(1.0, got) > 0, "never -0.0"
    assert R.round_float_ref(np.array([y]), mode)[0] == expected


@pytest.mark.parametrize("mode", MODES)
def test_round_float_near_halves(mode):
    y = np.array(NEAR_HALVES)
    expected = [float(round_fraction(Fraction(v), mode)) for v in y]
    assert [R.round_float(v, mode) for v in y] == expected
    np.testing.assert_array_equal(R.round_float_ref(y, mode), expected)
    assert not np.signbit(R.round_float_ref(y, mode)[np.array(expected) == 0]).any()
