"""requant_float / requant_int against their twins and exact oracles."""

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aidge_lite.kernels import (quantize_multiplier, requant_float, requant_float32,
                               requant_float32_ref, requant_float_ref, requant_int, requant_int_ref)
from tests.kernels.test_rounding import MODES, round_fraction
from tests.strategies import (INT64_MAX, INT64_MIN, requant_float32_cases, requant_float_cases,
                              requant_int_cases)

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
INT8 = np.array([-128, 127], np.int64)
FULL64 = np.array([INT64_MIN, INT64_MAX], np.int64)
ACC_EDGES = sorted({I32_MIN, I32_MAX, 0, 1, -1, 2, -2, 3, -3}
                   | {s * 2 ** k + d for s in (1, -1) for k in (7, 15, 16, 30)
                      for d in (-2, -1, 0, 1, 2)})


def acc3(values):
    return np.array(values, np.int64).reshape(1, 1, -1)


def run_both(kernel, ref, *args):
    """Run kernel and twin on separate output buffers; assert equal; return result."""
    *head, out = args
    got, expected = kernel(*head, out.copy()), ref(*head, out.copy())
    assert got.dtype == out.dtype
    np.testing.assert_array_equal(got, expected)
    return got


# --- float multiplier ------------------------------------------------------

@given(args=requant_float_cases())
@example(args=(acc3([5, -5, 3, -3, 1, -1]), np.array([0.5]), 0, INT8, np.empty((1, 1, 6), np.int8)))
@example(args=(acc3([5, -5, 3, -3, 1, -1]), np.array([0.5]), 1, INT8, np.empty((1, 1, 6), np.int8)))
@example(args=(acc3([5, -5, 3, -3, 1, -1]), np.array([0.5]), 2, INT8, np.empty((1, 1, 6), np.float64)))
@example(args=(acc3([I32_MIN, I32_MAX]), np.array([2.0 ** -24]), 0, INT8, np.empty((1, 1, 2), np.int8)))
@example(args=(acc3([INT64_MIN, INT64_MAX, 0]), np.array([1.0]), 2, FULL64,
               np.empty((1, 1, 3), np.int64)))  # float(INT64_MAX) == 2^63 must clip, not wrap
@example(args=(acc3([-7, 300, 0]), np.array([1.0]), 3, np.array([0, 255]), np.empty((1, 1, 3), np.uint8)))
@example(args=(np.zeros((2, 0, 3), np.int64), np.zeros(0), 0, INT8, np.empty((2, 0, 3), np.int8)))
# Gemm outputs (N, C, 1), the channels-innermost loop: ties per mode, per-channel multipliers
@example(args=(np.array([[5, -5, 3], [-3, 1, 300]], np.int64)[:, :, None], np.array([0.5, 0.5, 1.0]),
               0, INT8, np.empty((2, 3, 1), np.int8)))
@example(args=(np.array([[5, -5, 3], [-3, 1, -300]], np.int64)[:, :, None], np.array([0.5, 0.25, 1.0]),
               1, INT8, np.empty((2, 3, 1), np.int16)))
@example(args=(np.array([[5, -5, 7, -7]], np.int64)[:, :, None], np.array([0.5, 0.5, 0.5, 0.5]),
               2, INT8, np.empty((1, 4, 1), np.int8)))
@example(args=(np.array([[5, -5, 7, -7]], np.int64)[:, :, None], np.array([0.5, 0.5, 0.5, 0.5]),
               3, np.array([0, 255]), np.empty((1, 4, 1), np.uint8)))
def test_requant_float_matches_ref(args):
    run_both(requant_float, requant_float_ref, *args)


def test_requant_float_is_the_plain_float64_product():
    acc = acc3([3, 10 ** 15 + 1, -(2 ** 53) - 1])
    m = np.array([0.1])
    out = requant_float(acc, m, 2, FULL64, np.empty(acc.shape, np.int64))
    np.testing.assert_array_equal(out, np.rint(acc.astype(np.float64) * 0.1).astype(np.int64))


# --- float32 multiplier, float32 product (compat="aidge") ------------------

def float32_oracle(acc, multiplier, mode, bounds):
    """Exact: float32(acc) and the float32 product from Fractions, then `round_fraction`."""
    lo, hi = int(bounds[0]), int(bounds[1])
    res = np.empty(acc.shape, object)
    for (n, c, s), a in np.ndenumerate(acc):
        exact = Fraction(float(np.float32(a))) * Fraction(float(multiplier[c]))
        product = Fraction(float(np.float32(float(exact))))  # float(exact) is exact: 48 bits
        res[n, c, s] = min(max(round_fraction(product, mode), lo), hi)
    return res


@given(args=requant_float32_cases())
@example(args=(acc3([15119, -15119, 15121, -15121]), np.array([0.0026126066], np.float32), 2, INT8,
               np.empty((1, 1, 4), np.int8)))
@example(args=(acc3([2 ** 24 + 1, 2 ** 24 + 3, -(2 ** 24) - 1]), np.array([1.0], np.float32), 0,
               FULL64 >> 10, np.empty((1, 1, 3), np.int64)))
@example(args=(acc3([2 ** 62, -(2 ** 62), INT64_MAX, 7]), np.array([4.0], np.float32), 0, FULL64,
               np.empty((1, 1, 4), np.int64)))  # products past int64 clip, never wrap
@example(args=(np.zeros((2, 0, 3), np.int64), np.zeros(0, np.float32), 0, INT8, np.empty((2, 0, 3), np.int8)))
def test_requant_float32_matches_ref_and_oracle(args):
    got = run_both(requant_float32, requant_float32_ref, *args)
    acc, multiplier, mode, bounds, _ = args
    np.testing.assert_array_equal(got, float32_oracle(acc, multiplier, mode, bounds).astype(got.dtype))


@pytest.mark.parametrize("mode, expected", [(0, [40, -40]), (1, [40, -39]), (2, [40, -40]),
                                            (3, [39, -40])])
def test_requant_float32_rounds_the_float32_product(mode, expected):
    """Aidge's case: 15119 x float32(0.0026126066) is 39.5 in float32 (float64: 39.4999995),
    so each mode rounds a tie; requant_float (float64) sees 39.4999995 and never does."""
    acc, m = acc3([15119, -15119]), np.array([0.0026126066], np.float32)
    got = run_both(requant_float32, requant_float32_ref, acc, m, mode, INT8, np.empty(acc.shape, np.int8))
    assert got.ravel().tolist() == expected
    f64 = requant_float(acc, m.astype(np.float64), mode, INT8, np.empty(acc.shape, np.int8))
    assert f64.ravel().tolist() == ([39, -39] if mode in (0, 1, 2) else [39, -40])


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_requant_float32_ties_match_ref(mode):
    """Products in [2^22, 2^23): float32 steps of 1/2, every other one a tie."""
    rng = np.random.default_rng(mode)
    acc = rng.integers(-(2 ** 24), 2 ** 24, (2, 3, 64), dtype=np.int64)
    m = np.array([0.75, 0.5000001, 0.99999994], np.float32)
    ref = requant_float32_ref(acc, m, mode, FULL64 >> 10, np.empty(acc.shape, np.int64))
    product = acc.astype(np.float32) * m[None, :, None]
    assert np.mean(product % 1 == 0.5) > 0.1  # the case is about ties
    np.testing.assert_array_equal(requant_float32(acc, m, mode, FULL64 >> 10, np.empty(acc.shape, np.int64)), ref)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.float64])
def test_requant_float32_takes_narrow_and_float_accumulators(dtype):
    """A Concat join feeds int8/16 as is; an input quantizer feeds float64 integers."""
    acc = np.arange(0, 120, dtype=np.int64).reshape(1, 2, 60).astype(dtype)
    m = np.array([0.5, 1.0 / 3.0], np.float32)
    for mode in MODES:
        got = run_both(requant_float32, requant_float32_ref, acc, m, mode, INT8, np.empty(acc.shape, np.int8))
        np.testing.assert_array_equal(got, float32_oracle(acc.astype(np.int64), m, mode, INT8).astype(np.int8))


# --- integer multiplier + shift ---------------------------------------------

@given(args=requant_int_cases())
@example(args=(acc3([I32_MIN, I32_MAX]), np.array([2 ** 31 - 1]), np.array([62]), 0, FULL64,
               np.empty((1, 1, 2), np.int64)))
@example(args=(acc3([I32_MIN, I32_MAX, 1, -1]), np.array([3]), np.array([-31]), 0, FULL64,
               np.empty((1, 1, 4), np.int64)))  # left shift, within int64
@example(args=(acc3([I32_MIN, I32_MAX, 1, -1]), np.array([7]), np.array([-31]), 1, INT8,
               np.empty((1, 1, 4), np.int8)))  # left shift saturates
@example(args=(acc3([5, -5, 3, -3]), np.array([1]), np.array([1]), 2, INT8, np.empty((1, 1, 4), np.int8)))
@example(args=(np.zeros((0, 2, 3), np.int64), np.array([1, 1]), np.array([0, 0]), 0, INT8,
               np.empty((0, 2, 3), np.int8)))
def test_requant_int_matches_ref(args):
    run_both(requant_int, requant_int_ref, *args)


def oracle_int(acc, m, shift, mode, lo, hi):
    return [min(max(round_fraction(Fraction(int(a) * m, 2 ** shift) if shift >= 0
                                   else int(a) * m * 2 ** -shift, mode), lo), hi) for a in acc]


@pytest.mark.parametrize("shift", list(range(-31, 32)) + [62])
def test_requant_int_edges_match_oracle(shift):
    acc = acc3(ACC_EDGES)
    for mode, (m, (lo, hi)) in itertools.product(
            MODES, itertools.product((1, 3, 2 ** 30, 2 ** 31 - 1), (INT8, FULL64))):
        mult, sh = np.array([m], np.int64), np.array([shift], np.int64)
        out = run_both(requant_int, requant_int_ref, acc, mult, sh, mode,
                       np.array([lo, hi]), np.empty(acc.shape, np.int64))
        assert out.ravel().tolist() == oracle_int(ACC_EDGES, m, shift, mode, int(lo), int(hi))


ACC_WIDE = sorted({INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 1}
                  | {s * 2 ** k + d for s in (1, -1) for k in (32, 33, 47, 61, 62)
                     for d in (-1, 0, 1, 2 ** 31 + 1)})


@pytest.mark.parametrize("shift", [-31, -1, 0, 1, 2, 15, 31, 32, 33, 34, 47, 61, 62])
def test_requant_int_wide_products_match_oracle(shift):
    # |acc| >= 2**32: acc * m leaves int64 (16-bit models with int64 accumulators get there)
    acc = acc3(ACC_WIDE)
    for mode, (m, (lo, hi)) in itertools.product(
            MODES, itertools.product((1, 3, -16, 2 ** 30, 1635136467, 2 ** 31 - 1), (INT8, FULL64))):
        mult, sh = np.array([m], np.int64), np.array([shift], np.int64)
        out = run_both(requant_int, requant_int_ref, acc, mult, sh, mode,
                       np.array([lo, hi]), np.empty(acc.shape, np.int64))
        assert out.ravel().tolist() == oracle_int(ACC_WIDE, m, shift, mode, int(lo), int(hi)), (m, mode)


# --- quantize_multiplier ------------------------------------------------------

@given(m=st.floats(2.0 ** -60, 2.0 ** 40, exclude_min=False))
@example(m=1.0)
@example(m=0.5)
@example(m=1.0 - 2.0 ** -53)  # mantissa rounds up to 1.0: renormalised
@example(m=2.0 ** -31)
@example(m=0.1)
def test_quantize_multiplier_round_trip(m):
    q, shift = quantize_multiplier(m)
    assert 2 ** 30 <= q < 2 ** 31
    assert abs(Fraction(q) / Fraction(2) ** shift - Fraction(m)) / Fraction(m) < Fraction(1, 2 ** 30)


def test_quantize_multiplier_special_values():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1.0) == (2 ** 30, 30)
    assert quantize_multiplier(3.0)[1] < 31
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)


@given(acc=st.integers(I32_MIN, I32_MAX), m=st.floats(2.0 ** -20, 2.0 ** 10), mode=st.sampled_from(MODES))
def test_requant_int_with_q31_is_single_rounding(acc, m, mode):
    q, shift = quantize_multiplier(m)
    out = requant_int(acc3([acc]), np.array([q]), np.array([shift]), mode, FULL64,
                      np.empty((1, 1, 1), np.int64))
    assert out[0, 0, 0] == round_fraction(Fraction(acc * q, 2 ** shift), mode)
