"""gemm against its NumPy twin."""

import numpy as np
from hypothesis import example, given

from aidge_lite.kernels import gemm, gemm_ref
from tests.strategies import gemm_cases


def full(shape, value, dtype):
    return np.full(shape, value, dtype)


@given(args=gemm_cases())
@example(args=(full((2, 3), -128, np.int8), full((3, 4), -128, np.int8), full(4, 2 ** 31 - 1, np.int32)))
@example(args=(full((1, 2), -(2 ** 31), np.int32), full((2, 1), -(2 ** 31), np.int32),
               full(1, -(2 ** 40), np.int64)))  # 2 * 2^62 - 2^40: exact
@example(args=(full((0, 3), 1, np.int8), full((3, 2), 1, np.int8), full(2, 1, np.int32)))  # M = 0
@example(args=(full((2, 0), 1, np.uint8), full((0, 2), 1, np.int8), full(2, 9, np.int32)))  # K = 0
@example(args=(full((2, 3), 65535, np.uint16), full((3, 0), 1, np.int16), full(0, 0, np.int64)))  # N = 0
def test_gemm_matches_ref(args):
    got = gemm(*args)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, gemm_ref(*args))


def test_gemm_hand_computed():
    a = np.array([[1, 2], [3, 4]], np.int8)
    b = np.array([[5, 6], [7, 8]], np.int8)
    np.testing.assert_array_equal(gemm(a, b, np.array([1, -1], np.int32)), [[20, 21], [44, 49]])
