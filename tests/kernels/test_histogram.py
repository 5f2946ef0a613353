"""kernels.histogram (magnitude histogram of calibration) against its NumPy twin."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aidge_lite.kernels.histogram import histogram, histogram_ref

finite = st.floats(allow_nan=False, allow_infinity=True, width=64)
ranges = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False)


@st.composite
def histogram_cases(draw):
    """Values, range and bin count; a third of the values sit exactly on bin edges and ties."""
    rng = draw(ranges)
    bins = draw(st.integers(1, 4096))
    edges = draw(st.lists(st.integers(-2 * bins, 2 * bins), max_size=20))
    on_grid = [k / 2 * rng / bins for k in edges]  # edges (k even) and bin midpoints (k odd)
    values = draw(st.lists(finite, max_size=60)) + on_grid
    return np.array(values, np.float64), rng, bins


@given(case=histogram_cases(), unsigned=st.booleans(), ties_away=st.booleans())
@example(case=(np.array([0.0, -0.0, 0.125, 0.5, 1.0, 7.0, -np.inf, np.inf]), 1.0, 4),
         unsigned=False, ties_away=True)
@example(case=(np.array([0.49999999999999994]), 1.0, 8), unsigned=False, ties_away=True)
@example(case=(np.array([-3.0, -0.0, 2.5]), 3.0, 1), unsigned=True, ties_away=False)
@example(case=(np.array([1e-320, 5e-324]), 1e-300, 4096), unsigned=False, ties_away=False)
def test_histogram_matches_ref(case, unsigned, ties_away):
    values, rng, bins = case
    got = histogram(values, rng, bins, unsigned, ties_away)
    assert got.dtype == np.int64 and got.shape == (bins,) and got.sum() == values.size
    np.testing.assert_array_equal(got, histogram_ref(values, rng, bins, unsigned, ties_away))


def test_histogram_by_hand():
    m = np.array([0.0, 0.1, 0.125, 0.24, 0.25, 0.375, 0.99, 1.0, 3.0])
    # t = 4m = 0, 0.4, 0.5, 0.96, 1, 1.5, 3.96, 4, 12
    assert histogram(m, 1.0, 4).tolist() == [4, 2, 0, 3]
    assert histogram(m, 1.0, 4, ties_away=True).tolist() == [2, 3, 1, 3]
    assert histogram(-m, 1.0, 4, unsigned=True).tolist() == [9, 0, 0, 0]


def test_zero_range_and_any_shape():
    x = np.arange(12.0).reshape(3, 2, 2)
    assert histogram(x, 0.0, 8).tolist() == [12] + [0] * 7
    np.testing.assert_array_equal(histogram(x, 11.0, 11), histogram(x.ravel(), 11.0, 11))
    assert histogram(np.empty(0), 1.0, 3).tolist() == [0, 0, 0]


@pytest.mark.parametrize("fn", [histogram, histogram_ref])
def test_nan_and_no_bins_are_refused(fn):
    with pytest.raises(ValueError, match="2 NaN"):
        fn(np.array([1.0, np.nan, 0.5, np.nan]), 1.0, 4)
    with pytest.raises(ValueError, match="at least one bin"):
        fn(np.ones(3), 1.0, 0)
