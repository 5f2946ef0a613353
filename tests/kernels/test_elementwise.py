"""add, concat2, relu, clip against their NumPy twins."""

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from aidge_lite.kernels import add, add_ref, clip, clip_ref, concat2, concat2_ref, relu, relu_ref
from tests.strategies import ACTIVATION_DTYPES, activations, int_tensors, same_shape_pairs

I32 = np.iinfo(np.int32)
EXTREMES = np.array([I32.min, I32.max, -1, 0, 1], np.int32)


@given(pair=same_shape_pairs())
@example(pair=(EXTREMES, EXTREMES))
@example(pair=(np.full((2, 2), 65535, np.uint16), np.full((2, 2), -128, np.int8)))  # mixed
@example(pair=(np.zeros((0, 3), np.int8), np.zeros((0, 3), np.int8)))
def test_add_matches_ref(pair):
    got = add(*pair)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, add_ref(*pair))


@st.composite
def concat_pairs(draw):
    n, h = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    dtype = draw(st.sampled_from(ACTIVATION_DTYPES))
    a = draw(int_tensors(dtype, (n, draw(st.integers(0, 4)), h)))
    b = draw(int_tensors(dtype, (n, draw(st.integers(0, 4)), h)))
    return a, b


@given(pair=concat_pairs())
@example(pair=(np.ones((2, 0, 3, 3), np.int8), np.full((2, 2, 3, 3), -128, np.int8)))
@example(pair=(np.ones((1, 3), np.uint8), np.zeros((1, 0), np.uint8)))
def test_concat2_matches_ref(pair):
    got = concat2(*pair)
    assert got.dtype == pair[0].dtype
    np.testing.assert_array_equal(got, concat2_ref(*pair))


def test_concat2_folds_for_more_inputs():
    xs = [np.full((1, i + 1, 2, 2), i, np.int8) for i in range(3)]
    np.testing.assert_array_equal(concat2(concat2(xs[0], xs[1]), xs[2]),
                                  np.concatenate(xs, axis=1))


@given(x=activations())
@example(x=EXTREMES)
@example(x=np.array([0, 255], np.uint8))
def test_relu_matches_ref(x):
    got = relu(x)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, relu_ref(x))


@given(x=activations(), data=st.data())
@example(x=EXTREMES, data=None)
def test_clip_matches_ref(x, data):
    info = np.iinfo(x.dtype)
    if data is None:
        lo, hi = int(info.min), int(info.max)
    else:
        lo = data.draw(st.integers(int(info.min), int(info.max)))
        hi = data.draw(st.integers(lo, int(info.max)))
    got = clip(x, lo, hi)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, clip_ref(x, lo, hi))
