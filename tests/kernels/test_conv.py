"""conv2d against its NumPy twin, plus shape and cross-kernel checks."""

import numpy as np
import pytest
from hypothesis import example, given

from aidge_lite.kernels import conv2d, conv2d_output_shape, conv2d_ref, conv2d_requant, conv2d_requant_ref, gemm_ref
from aidge_lite.kernels.canonical import as_operand
from aidge_lite.kernels.conv import _byte_limbs, _limb_terms
from tests.strategies import conv2d_cases

I8_MIN, I8_MAX = -128, 127
I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1


def geom(stride=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), group=1):
    return np.array([*stride, *pads, *dil, group], np.int64)


def case(x_shape, w_shape, x_fill, w_fill, x_dtype=np.int8, w_dtype=np.int8,
         bias_fill=0, bias_dtype=np.int32, **geometry):
    """A constant-filled conv case (edge values)."""
    return (np.full(x_shape, x_fill, x_dtype), np.full(w_shape, w_fill, w_dtype),
            np.full(w_shape[0], bias_fill, bias_dtype), geom(**geometry))


@given(args=conv2d_cases())
@example(args=case((1, 3, 5, 5), (2, 3, 3, 3), I8_MIN, I8_MIN, bias_fill=I32_MAX,
                   pads=(1, 2, 0, 1)))
@example(args=case((2, 2, 4, 4), (3, 2, 3, 3), I8_MAX, I8_MIN, bias_fill=I32_MIN,
                   stride=(2, 1), dil=(1, 2), pads=(2, 2, 2, 2)))
@example(args=case((1, 1, 1, 1), (1, 1, 1, 1), I32_MIN, I32_MIN, np.int32, np.int32,
                   bias_fill=I32_MIN))  # 2^62 product, 1x1
@example(args=case((1, 4, 3, 3), (4, 1, 3, 3), 65535, I8_MIN, np.uint16, group=4))  # depthwise
@example(args=case((1, 2, 3, 3), (6, 1, 2, 2), 255, I8_MAX, np.uint8, group=2))  # multiplier 3
@example(args=case((2, 3, 4, 5), (2, 3, 4, 5), -32768, 32767, np.int16, np.int16,
                   bias_fill=-(2 ** 40), bias_dtype=np.int64))  # kernel == input
@example(args=case((2, 6, 3, 3), (4, 3, 1, 1), I8_MAX, I8_MAX, group=2))  # grouped 1x1
@example(args=case((1, 0, 3, 3), (2, 0, 2, 2), 0, 0, bias_fill=7))  # C = 0: bias only
@example(args=case((1, 3, 3, 3), (0, 3, 2, 2), 1, 1))  # K = 0
@example(args=case((0, 3, 3, 3), (2, 3, 2, 2), 1, 1))  # N = 0
@example(args=case((1, 1, 2, 2), (1, 1, 2, 2), 5, 5, pads=(3, 3, 3, 3), bias_fill=-1))  # all-pad windows
def test_conv2d_matches_ref(args):
    got, expected = conv2d(*args), conv2d_ref(*args)
    assert got.dtype == np.int64
    assert got.shape == conv2d_output_shape(args[0].shape, args[1].shape, args[3])
    np.testing.assert_array_equal(got, expected)


def test_conv2d_ref_1x1_equals_gemm(rng):
    x = rng.integers(-128, 128, (2, 5, 3, 4)).astype(np.int8)
    w = rng.integers(-128, 128, (6, 5, 1, 1)).astype(np.int8)
    bias = rng.integers(-1000, 1000, 6).astype(np.int32)
    as_rows = x.transpose(0, 2, 3, 1).reshape(-1, 5)
    expected = gemm_ref(as_rows, w[:, :, 0, 0].T, bias).reshape(2, 3, 4, 6).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(conv2d_ref(x, w, bias, geom()), expected)


def test_conv2d_against_hand_computed():
    """1 channel, 2x2 kernel, pad top/left 1: checks tap order and padding side."""
    x = np.array([[[[1, 2], [3, 4]]]], np.int8)
    w = np.array([[[[1, 10], [100, 1000]]]], np.int16)
    args = (x, w, np.array([5], np.int32), geom(pads=(1, 1, 0, 0)))
    expected = [[[[1005, 2105], [3015, 4326]]]]
    np.testing.assert_array_equal(conv2d_ref(*args), expected)
    np.testing.assert_array_equal(conv2d(*args), expected)


# ------------------------------------------------ 16-bit operands: byte limbs
def _random_case(rng, x_shape, w_shape, x_range, w_range, x_dtype, w_dtype=np.int16, **geometry):
    x = rng.integers(x_range[0], x_range[1], x_shape, endpoint=True).astype(x_dtype)
    w = rng.integers(w_range[0], w_range[1], w_shape, endpoint=True).astype(w_dtype)
    x.flat[0], w.flat[0] = x_range[0], w_range[0]  # the extremes always present
    x.flat[-1], w.flat[-1] = x_range[1], w_range[1]
    bias = rng.integers(-2 ** 40, 2 ** 40, w_shape[0]).astype(np.int64)
    return x, w, bias, geom(**geometry)


S16 = (-32768, 32767)
SYM16 = (-32767, 32767)  # symmetric weights; -32768 is beyond the int16 path's bound (32767)
LIMB_CASES = {  # name: (x shape, w shape, x range, w range, x dtype, geometry, partial convs)
    "split x (C*KH*KW = 72)": ((2, 8, 9, 9), (5, 8, 3, 3), S16, SYM16, np.int16, {}, 2),
    "split x and w (C*KH*KW = 288)":
        ((1, 32, 6, 6), (4, 32, 3, 3), S16, SYM16, np.int16, {"pads": (1, 1, 1, 1)}, 4),
    "w = -32768: split both": ((1, 2, 5, 5), (3, 2, 2, 2), S16, S16, np.int16, {}, 4),
    "uint16 activations": ((2, 4, 7, 7), (6, 4, 3, 3), (0, 65535), SYM16, np.uint16, {"stride": (2, 2)}, 2),
    "depthwise": ((2, 6, 8, 8), (6, 1, 3, 3), S16, SYM16, np.int16, {"group": 6, "pads": (1, 1, 1, 1)}, 2),
    "grouped, dilated": ((1, 8, 9, 9), (4, 4, 3, 3), S16, SYM16, np.int16, {"group": 2, "dil": (2, 2)}, 2),
}


@pytest.mark.parametrize("name", LIMB_CASES)
def test_16_bit_operands_run_as_exact_byte_limbs(name, rng):
    x_shape, w_shape, x_range, w_range, x_dtype, geometry, partials = LIMB_CASES[name]
    x, w, bias, g = _random_case(rng, x_shape, w_shape, x_range, w_range, x_dtype, **geometry)
    terms = _limb_terms(as_operand(x), as_operand(w), g)
    assert terms is not None and len(terms) == partials  # the int16 path alone would not be exact
    np.testing.assert_array_equal(conv2d(x, w, bias, g), conv2d_ref(x, w, bias, g))
    multiplier = rng.uniform(1e-9, 1e-6, w_shape[0])
    params = np.array([0, -32768, 32767], np.int64)
    for got, expected in zip(conv2d_requant(x, w, bias, g, multiplier, params),
                             conv2d_requant_ref(x, w, bias, g, multiplier, params)):
        np.testing.assert_array_equal(got, expected)


def test_operands_beyond_16_bits_take_the_direct_loops(rng):
    x, w, bias, g = _random_case(rng, (1, 3, 5, 5), (2, 3, 3, 3), (-70000, 70000), S16, np.int32)
    assert _limb_terms(as_operand(x), as_operand(w), g) is None
    np.testing.assert_array_equal(conv2d(x, w, bias, g), conv2d_ref(x, w, bias, g))


def test_byte_limbs_recombine(rng):
    a = np.concatenate([np.arange(-65535, 65536, 257), [-65535, -1, 0, 1, 255, 256, 65535]]).astype(np.int64)
    hi, lo = _byte_limbs(a)
    assert hi.dtype == lo.dtype == np.int16 and lo.min() >= 0 and lo.max() <= 255
    np.testing.assert_array_equal(256 * hi.astype(np.int64) + lo, a)
