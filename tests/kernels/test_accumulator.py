"""fit_accumulator against its twin and a Python-int oracle."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aidge_lite.kernels import fit_accumulator, fit_accumulator_ref
from tests.strategies import INT64_MAX, INT64_MIN, accumulators

EDGES = np.array([INT64_MIN, INT64_MIN + 1, -(2 ** 31) - 1, -(2 ** 31), -(2 ** 31) + 1, -1, 0, 1,
                  2 ** 31 - 2, 2 ** 31 - 1, 2 ** 31, 2 ** 32, INT64_MAX - 1, INT64_MAX], np.int64)


def oracle(acc, bits, wrap):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    vals = [int(v) for v in acc.ravel()]
    if wrap:
        out = [((v + 2 ** (bits - 1)) % 2 ** bits) - 2 ** (bits - 1) for v in vals]
    else:
        out = [min(max(v, lo), hi) for v in vals]
    return np.array(out, np.int64).reshape(acc.shape), sum(not lo <= v <= hi for v in vals)


@given(acc=accumulators(), bits=st.integers(1, 64), wrap=st.booleans())
@example(acc=EDGES, bits=32, wrap=True)
@example(acc=EDGES, bits=32, wrap=False)
@example(acc=EDGES, bits=63, wrap=True)
@example(acc=EDGES, bits=1, wrap=True)
@example(acc=EDGES, bits=64, wrap=False)
@example(acc=EDGES[:0], bits=16, wrap=True)
def test_fit_accumulator_matches_ref_and_oracle(acc, bits, wrap):
    got, n_got = fit_accumulator(acc, bits, wrap)
    ref, n_ref = fit_accumulator_ref(acc, bits, wrap)
    expected, n_expected = oracle(acc, bits, wrap)
    assert got.dtype == np.int64 and got.shape == acc.shape
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(ref, expected)
    assert n_got == n_ref == n_expected


@pytest.mark.parametrize("wrap", [True, False])
def test_fit_accumulator_keeps_shape_of_contiguous_nd(wrap):
    acc = np.arange(-12, 12, dtype=np.int64).reshape(2, 3, 4) * 1000
    got, n = fit_accumulator(acc, 12, wrap)
    ref, n_ref = fit_accumulator_ref(acc, 12, wrap)
    np.testing.assert_array_equal(got, ref)
    assert got.shape == acc.shape and n == n_ref == 19
