"""The float reference's BLAS paths against exact integer arithmetic.

`float_ops.compute_dtype` picks float32 / float64 BLAS only below the bound that
makes them exact (2^24 / 2^53 for max|x| * max|w| * K) and int64 beyond it; every
path is compared with the exact int64 NumPy twin of the integer kernels.
"""
import numpy as np
import pytest

from aidge_lite import kernels
from aidge_lite.interp import float_ops


def _geometry(pads=(1, 1, 1, 1), group=1):
    return np.array([1, 1, *pads, 1, 1, group], np.int64)


def _conv(x, w, b, pads=(1, 1, 1, 1), group=1):
    h, wd = x.shape[2:]
    kh, kw = w.shape[2:]
    out_hw = (h + pads[0] + pads[2] - kh + 1, wd + pads[1] + pads[3] - kw + 1)
    return float_ops.conv2d(x, w, b, (1, 1), (1, 1), pads, out_hw, group)


def _operands(rng, x_mag, w_mag, shape=(2, 3, 7, 6), w_shape=(5, 3, 3, 3)):
    x = rng.integers(-x_mag, x_mag + 1, shape, dtype=np.int64)
    w = rng.integers(-w_mag, w_mag + 1, w_shape, dtype=np.int64)
    b = rng.integers(-1000, 1001, w_shape[0], dtype=np.int64)
    return x, w, b


@pytest.mark.parametrize("x_mag, w_mag, expected", [
    (127, 127, np.float32),          # 8-bit operands: 127 * 127 * 27 < 2^24
    (2 ** 20, 2 ** 10, np.float64),  # between 2^24 and 2^53
    (2 ** 45, 127, np.int64),        # beyond 2^53: exact integers
])
def test_compute_dtype_follows_the_bound(x_mag, w_mag, expected):
    x, w, _ = _operands(np.random.default_rng(0), x_mag, w_mag)
    x[0, 0, 0, 0], w[0, 0, 0, 0] = x_mag, w_mag  # the bound is reached
    assert float_ops.compute_dtype(x.astype(np.float64), w.astype(np.float64), 27) == expected


def test_compute_dtype_keeps_float_operands():
    x = np.full((1, 3, 4, 4), 0.5)
    w = np.ones((2, 3, 3, 3))
    assert float_ops.compute_dtype(x, w, 27) == np.float64  # not integers: float64 is the spec
    assert float_ops.compute_dtype(x.astype(np.float32), w.astype(np.float32), 27) == np.float32
    big = np.full((1, 3, 4, 4), 2.0 ** 50 + 0.5)
    assert float_ops.compute_dtype(big, w, 27) == np.float64


@pytest.mark.parametrize("x_mag, w_mag", [(127, 127), (2 ** 20, 2 ** 10), (2 ** 45, 127)])
@pytest.mark.parametrize("group", [1, 3])
def test_conv_equals_the_exact_integer_conv(x_mag, w_mag, group):
    rng = np.random.default_rng(x_mag + group)
    x, w, b = _operands(rng, x_mag, w_mag, w_shape=(6, 3 // group, 3, 3))
    exact = kernels.conv2d_ref(x, w, b, _geometry(group=group))  # int64, exact
    got = _conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), group=group)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, exact.astype(np.float64))  # exact, then rounded once


def test_float64_blas_would_round_where_the_fallback_does_not():
    # the case the int64 fallback exists for: float64 partial sums beyond 2^53 lose bits
    rng = np.random.default_rng(5)
    x, w, b = _operands(rng, 2 ** 45, 127)
    x |= 1  # odd values: the low bits matter
    exact = kernels.conv2d_ref(x, w, b, _geometry()).astype(np.float64)
    cols = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3),
                                                    axis=(2, 3))
    naive = np.einsum("kcij,nchwij->nkhw", w.astype(np.float64), cols.astype(np.float64)) \
        + b.reshape(1, -1, 1, 1)
    assert not np.array_equal(naive, exact)
    np.testing.assert_array_equal(_conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)),
                                  exact)


@pytest.mark.parametrize("a_mag, b_mag", [(127, 127), (2 ** 20, 2 ** 12), (2 ** 46, 255)])
def test_matmul_equals_the_exact_integer_product(a_mag, b_mag):
    rng = np.random.default_rng(a_mag % 97)
    a = rng.integers(-a_mag, a_mag + 1, (9, 40), dtype=np.int64) | 1
    b = rng.integers(-b_mag, b_mag + 1, (40, 7), dtype=np.int64)
    exact = kernels.gemm_ref(a, b, np.zeros(7, np.int64))
    got = float_ops.matmul(a.astype(np.float64), b.astype(np.float64))
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, exact.astype(np.float64))


def test_float_graph_matmul_unchanged():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 8)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)
    np.testing.assert_array_equal(float_ops.matmul(a, b), a @ b)


@pytest.mark.parametrize("c, h, wd, k, stride, pads, dilation", [
    (5, 9, 11, 3, 1, (1, 1, 1, 1), 1),
    (4, 12, 13, 3, 2, (1, 1, 1, 1), 1),     # stride 2: four phases
    (3, 10, 10, 5, 2, (2, 1, 2, 0), 1),     # uneven pads
    (6, 8, 9, 3, 3, (0, 0, 2, 1), 1),       # stride 3: taps of one phase only
    (2, 7, 7, 1, 2, (0, 0, 0, 0), 1),       # 1x1
    (3, 9, 8, 2, 1, (0, 1, 0, 0), 1),       # even kernel
    (4, 11, 10, 3, 1, (2, 2, 2, 2), 2),     # dilation: window views
])
@pytest.mark.parametrize("magnitude", [127, 2 ** 45])
def test_depthwise_equals_the_exact_integer_conv(c, h, wd, k, stride, pads, dilation, magnitude):
    rng = np.random.default_rng(c * h + k)
    x = rng.integers(-magnitude, magnitude + 1, (2, c, h, wd), dtype=np.int64)
    w = rng.integers(-100, 101, (c, 1, k, k), dtype=np.int64)
    b = rng.integers(-9, 10, c, dtype=np.int64)
    extent = dilation * (k - 1) + 1
    out_hw = ((h + pads[0] + pads[2] - extent) // stride + 1, (wd + pads[1] + pads[3] - extent) // stride + 1)
    got = float_ops.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (stride, stride),
                           (dilation, dilation), pads, out_hw, c)
    geometry = np.array([stride, stride, *pads, dilation, dilation, c], np.int64)
    np.testing.assert_array_equal(got, kernels.conv2d_ref(x, w, b, geometry).astype(np.float64))
