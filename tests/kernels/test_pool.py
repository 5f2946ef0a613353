"""maxpool2d, avgpool2d, global_avgpool against their NumPy twins."""

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from aidge_lite.kernels import (avgpool2d, avgpool2d_ref, global_avgpool, global_avgpool_ref, maxpool2d,
                     maxpool2d_ref, pool2d_output_shape)
from tests.strategies import ACTIVATION_DTYPES, int_tensors, modes, pool_cases


def geom(kernel=(2, 2), stride=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1)):
    return np.array([*kernel, *stride, *pads, *dil], np.int64)


MIN8 = np.full((1, 2, 3, 3), -128, np.int8)
MAX16U = np.full((2, 1, 4, 4), 65535, np.uint16)
TIES = np.array([[[[1, 2], [3, 4]]]], np.int32) * np.array([1, -1]).reshape(1, 2, 1, 1)
POOL_EXAMPLES = [
    (MIN8, geom((3, 3), pads=(1, 1, 1, 1))),  # padding must not win over -128
    (MAX16U, geom((3, 2), (2, 1), (2, 1, 0, 1), (1, 2))),
    (TIES.astype(np.int32), geom((2, 2), pads=(1, 1, 0, 0))),
    (np.zeros((0, 3, 2, 2), np.int8), geom()),  # N = 0
    (np.zeros((1, 0, 2, 2), np.uint8), geom()),  # C = 0
    (np.full((1, 1, 1, 1), -(2 ** 31), np.int32), geom((1, 1))),
    # 2x2 / stride 2 (its own loop): odd sizes drop the last row / column, extremes win
    (np.arange(-60, 60, dtype=np.int8).reshape(2, 2, 5, 6), geom((2, 2), (2, 2))),
    (np.array([[[[0, 255, 3], [7, 1, 9], [2, 2, 2]]]], np.uint8), geom((2, 2), (2, 2))),
    (np.full((1, 3, 4, 4), -(2 ** 15), np.int16), geom((2, 2), (2, 2))),
]


def with_examples(examples, **fixed):
    def decorate(test):
        for x, g in examples:
            test = example(case=(x, g), **fixed)(test)
        return test
    return decorate


@given(case=pool_cases())
@with_examples(POOL_EXAMPLES)
def test_maxpool2d_matches_ref(case):
    x, geometry = case
    got = maxpool2d(x, geometry)
    assert got.dtype == x.dtype and got.shape == pool2d_output_shape(x.shape, geometry)
    np.testing.assert_array_equal(got, maxpool2d_ref(x, geometry))


@given(case=pool_cases(), count_include_pad=st.booleans(), mode=modes)
@with_examples(POOL_EXAMPLES, count_include_pad=False, mode=0)
@with_examples(POOL_EXAMPLES[:3], count_include_pad=True, mode=2)
def test_avgpool2d_matches_ref(case, count_include_pad, mode):
    x, geometry = case
    got = avgpool2d(x, geometry, count_include_pad, mode)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, avgpool2d_ref(x, geometry, count_include_pad, mode))


def test_avgpool2d_hand_computed():
    x = np.array([[[[1, 2], [3, 4]]]], np.int8)
    g = geom(pads=(1, 1, 0, 0))  # windows: {1}, {1,2}, {1,3}, {1,2,3,4}
    np.testing.assert_array_equal(avgpool2d(x, g, False, 0), [[[[1, 2], [2, 3]]]])  # 1.5->2, 2.5->3
    np.testing.assert_array_equal(avgpool2d(x, g, True, 3), [[[[0, 0], [1, 2]]]])  # /4 floor


@st.composite
def global_cases(draw):
    shape = (draw(st.integers(0, 2)), draw(st.integers(0, 3)),
             draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    return draw(int_tensors(draw(st.sampled_from(ACTIVATION_DTYPES)), shape))


@given(x=global_cases(), mode=modes)
@example(x=np.array([[[[1, 2]], [[-1, -2]], [[5, 6]]]], np.int8), mode=0)  # ties: 1.5, -1.5, 5.5
@example(x=np.array([[[[1, 2]], [[-1, -2]], [[5, 6]]]], np.int8), mode=2)
@example(x=np.full((1, 2, 7, 7), -(2 ** 31), np.int32), mode=1)
@example(x=np.full((1, 1, 1, 1), 65535, np.uint16), mode=3)
def test_global_avgpool_matches_ref(x, mode):
    got = global_avgpool(x, mode)
    assert got.dtype == np.int64 and got.shape == x.shape[:2] + (1, 1)
    np.testing.assert_array_equal(got, global_avgpool_ref(x, mode))
