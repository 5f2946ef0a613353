"""The exact fast paths of conv2d / gemm (kernels.igemm, kernels.rowconv) and the fused
conv2d_requant.

conv2d and gemm take the int16/int32 implicit-GEMM path only when the actual
operand bounds prove it exact; these tests drive both sides of that bound and
every layout branch (contiguous taps, per-position taps, fused im2col,
grouped, depthwise, narrow/wide panels, tail tiles) against the NumPy twins.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aidge_lite import kernels
from aidge_lite.kernels import (conv2d, conv2d_ref, conv2d_requant, conv2d_requant_ref, gemm, gemm_ref,
                     requant_float, requant_float_ref)
from aidge_lite.kernels.canonical import as_operand
from aidge_lite.kernels.igemm import _panel_split, int32_exact, max_abs
from tests.strategies import conv2d_cases


def geom(stride=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), group=1):
    return np.array([*stride, *pads, *dil, group], np.int64)


LAYERS = [  # (x shape, w shape, geometry): one per layout branch
    ((1, 64, 12, 11), (64, 64, 3, 3), geom(pads=(1, 1, 1, 1))),          # contiguous taps, 16-wide panels
    ((3, 1, 28, 28), (32, 1, 5, 5), geom()),                             # C=1: pixels as lanes
    ((2, 3, 11, 19), (6, 3, 3, 3), geom((2, 1), (1, 1, 0, 2), (2, 1))),  # lanes: stride/dil h, tails
    ((2, 6, 9, 9), (10, 6, 3, 3), geom(pads=(1, 1, 1, 1))),             # short taps: fused im2col
    ((2, 8, 14, 14), (8, 8, 5, 5), geom(pads=(2, 2, 2, 2))),             # 8-wide panel
    ((2, 3, 9, 8), (5, 3, 3, 2), geom((2, 1), (1, 2, 0, 1), (1, 2))),    # dilation: per-position taps
    ((2, 6, 5, 5), (12, 3, 3, 3), geom(pads=(1, 0, 2, 1), group=2)),    # grouped
    ((2, 16, 7, 7), (16, 1, 3, 3), geom((2, 2), (1, 1, 1, 1), group=16)),  # depthwise
    ((2, 24, 9, 10), (24, 1, 3, 3), geom(pads=(1, 1, 1, 1), group=24)),     # depthwise, stride 1
    ((2, 33, 8, 9), (33, 1, 3, 2), geom((2, 1), (0, 1, 2, 0), (2, 1), group=33)),  # dw: dil, pads
    ((1, 40, 5, 5), (24, 40, 1, 1), geom()),                             # 1x1, tail panel
    ((1, 33, 3, 4), (17, 33, 3, 1), geom((1, 2), (0, 0, 2, 0))),         # odd runs, 17 columns
]


@pytest.mark.parametrize("x_dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("layer", LAYERS, ids=range(len(LAYERS)))
def test_conv2d_layouts(layer, x_dtype, rng):
    x_shape, w_shape, g = layer
    info = np.iinfo(x_dtype)
    x = rng.integers(info.min, info.max + 1, x_shape).astype(x_dtype)
    w = rng.integers(-128, 128, w_shape).astype(np.int8)
    bias = rng.integers(-2 ** 31, 2 ** 31, w_shape[0]).astype(np.int32)
    np.testing.assert_array_equal(conv2d(x, w, bias, g), conv2d_ref(x, w, bias, g))


def test_conv2d_extreme_values_at_the_int32_bound():
    # 2 * 128 * 128 * 65536 products would overflow int32: must fall back, still exact.
    x = np.full((1, 4, 8, 8), -128, np.int8)
    w = np.full((3, 4, 3, 3), -128, np.int8)
    bias = np.zeros(3, np.int32)
    np.testing.assert_array_equal(conv2d(x, w, bias, geom(pads=(1, 1, 1, 1))),
                                  conv2d_ref(x, w, bias, geom(pads=(1, 1, 1, 1))))
    x16 = np.full((1, 2, 4, 4), 32767, np.int16)
    w16 = np.full((2, 2, 2, 2), 32767, np.int16)  # 2^30 per product: int32 path refused
    assert not int32_exact(max_abs(x16), max_abs(w16), 8)
    np.testing.assert_array_equal(conv2d(x16, w16, np.zeros(2, np.int64), geom()),
                                  conv2d_ref(x16, w16, np.zeros(2, np.int64), geom()))


def test_int32_exact_bound():
    assert int32_exact(255, 128, 65793)          # 255 * 128 * 65793 = 2147483520
    assert not int32_exact(255, 128, 65794)
    assert not int32_exact(32768, 1, 1)          # -32768 does not fit int16 pairs
    assert int32_exact(32767, 32767, 1)
    assert not int32_exact(32767, 32767, 3)
    assert max_abs(np.array([-128, 5], np.int8)) == 128


@given(st.lists(st.integers(-(2 ** 15), 2 ** 15 - 1), max_size=40),
       st.sampled_from([np.int16, np.int64]))
def test_max_abs_matches_numpy(values, dtype):
    a = np.array(values, dtype)
    assert max_abs(a) == (int(np.abs(a.astype(np.int64)).max()) if a.size else 0)
    assert max_abs(a.reshape(1, -1)[:, ::-1]) == max_abs(a)  # any shape / stride


@pytest.mark.parametrize("mkn", [(1, 1, 1), (7, 5, 3), (97, 33, 20), (64, 64, 64), (13, 1000, 9),
                                 (200, 17, 8)])
def test_gemm_shapes(mkn, rng):
    m, k, n = mkn
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    bias = rng.integers(-2 ** 40, 2 ** 40, n).astype(np.int64)
    np.testing.assert_array_equal(gemm(a, b, bias), gemm_ref(a, b, bias))


def test_gemm_int16_fallback_is_exact(rng):
    a = rng.integers(-32768, 32768, (9, 40)).astype(np.int16)
    b = rng.integers(-32768, 32768, (40, 5)).astype(np.int16)
    bias = np.zeros(5, np.int64)
    np.testing.assert_array_equal(gemm(a, b, bias), gemm_ref(a, b, bias))


def _requant_params(draw_mode, lo, hi):
    return np.array([draw_mode, lo, hi], np.int64)


@given(args=conv2d_cases(dtypes=((np.int8, np.int8, np.int32), (np.uint8, np.int8, np.int32),
                                 (np.int16, np.int8, np.int64))),
       mode=st.integers(0, 3), scale=st.floats(1e-6, 0.05), signed=st.booleans())
def test_conv2d_requant_matches_ref(args, mode, scale, signed):
    x, w, bias, g = args
    multiplier = np.linspace(scale, 2 * scale, w.shape[0])
    params = _requant_params(mode, -128 if signed else 0, 127 if signed else 255)
    got, got_mm = conv2d_requant(x, w, bias, g, multiplier, params)
    want, want_mm = conv2d_requant_ref(x, w, bias, g, multiplier, params)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_mm, want_mm)


@pytest.mark.parametrize("layer", LAYERS, ids=range(len(LAYERS)))
def test_conv2d_requant_layouts_and_ties(layer, rng):
    x_shape, w_shape, g = layer
    x = rng.integers(-128, 128, x_shape).astype(np.int8)
    w = rng.integers(-128, 128, w_shape).astype(np.int8)
    bias = rng.integers(-1000, 1000, w_shape[0]).astype(np.int32)
    multiplier = np.full(w_shape[0], 1 / 256)  # many exact ties
    for mode in range(4):
        params = _requant_params(mode, -128, 127)
        got = conv2d_requant(x, w, bias, g, multiplier, params)
        want = conv2d_requant_ref(x, w, bias, g, multiplier, params)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        acc = conv2d_ref(x, w, bias, g)
        out = np.empty(acc.shape[:2] + (acc.shape[2] * acc.shape[3],), np.int16)
        np.testing.assert_array_equal(
            got[0].reshape(out.shape),
            requant_float_ref(acc.reshape(out.shape), multiplier, mode, params[1:], out))


def test_requant_float_accepts_float_input(rng):
    x = rng.normal(0, 300, (2, 3, 50))
    x[0, 0, :6] = [0.5, -0.5, 1.5, -2.5, 0.49999999999999994, -0.49999999999999994]
    m = np.array([1.0, 0.25, 3.0])
    for mode in range(4):
        bounds = np.array([-128, 127], np.int64)
        got = requant_float(x, m, mode, bounds, np.empty(x.shape, np.int8))
        np.testing.assert_array_equal(got, requant_float_ref(x, m, mode, bounds, np.empty(x.shape, np.int8)))


def test_set_threads_round_trip():
    previous = kernels.get_threads()
    assert kernels.set_threads(1) == previous
    assert kernels.get_threads() == 1
    with kernels.with_threads(kernels.max_threads()):
        assert kernels.get_threads() == kernels.max_threads()
    assert kernels.get_threads() == 1
    kernels.set_threads(previous)
    x = np.ones((2, 4, 6, 6), np.uint8)
    w = np.ones((16, 4, 3, 3), np.int8)
    b = np.zeros(16, np.int32)
    for n in (1, kernels.max_threads()):
        with kernels.with_threads(n):
            np.testing.assert_array_equal(conv2d(x, w, b, geom()), conv2d_ref(x, w, b, geom()))


def test_panel_split_balances_few_blocks():
    split = _panel_split.py_func
    assert split(11, 64, 1) == 1            # one thread: nothing to balance
    assert split(11, 64, 2) == 2            # 1024-row GEMM: 22 equal parts
    assert split(12, 64, 2) == 1            # already even
    assert split(33, 4, 2) == 1             # many blocks balance by themselves
    assert split(11, 64, 4) == 4
    assert split(3, 1, 2) == 1              # one panel cannot be split


@pytest.mark.parametrize("m, n", [(11 * 96 - 5, 40), (1, 33), (97, 16), (3 * 96, 48)])
def test_gemm_split_by_panels_matches_ref(m, n, rng):
    # The split depends only on the thread count the entry point passes down,
    # so every split is exercised here whatever the machine's core count.
    a = rng.integers(0, 256, (m, 70)).astype(np.uint8)
    b = rng.integers(-128, 128, (70, n)).astype(np.int8)
    bias = rng.integers(-10_000, 10_000, n).astype(np.int32)
    want = gemm_ref(a, b, bias)
    for threads in (1, 2, 3, 4):
        got = gemm.jitted(as_operand(a), as_operand(b), bias.astype(np.int64), threads)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("layer", LAYERS[:5], ids=range(5))
def test_conv_split_by_panels_matches_ref(layer, rng):
    x_shape, w_shape, g = layer
    x = rng.integers(0, 256, (1,) + x_shape[1:]).astype(np.uint8)  # one image: few blocks
    w = rng.integers(-128, 128, w_shape).astype(np.int8)
    bias = rng.integers(-1000, 1000, w_shape[0]).astype(np.int32)
    want = conv2d_ref(x, w, bias, g)
    for threads in (2, 3):
        got = conv2d.jitted(as_operand(x), as_operand(w), bias.astype(np.int64),
                            np.asarray(g, np.int64), threads)
        np.testing.assert_array_equal(got, want)
