"""Hypothesis strategies shared by the test-suite.

Public, reusable building blocks live in :mod:`aidge_lite.testing.strategies`;
this module composes them into ready-to-run cases. Keep one section per area.
"""

import numpy as np
from hypothesis import strategies as st

from aidge_lite.testing.strategies import (ACTIVATION_DTYPES, WEIGHT_DTYPES, ConvShape,
                                           PoolShape, conv2d_shapes, int_tensors,
                                           pool2d_shapes)

__all__ = [
    "ACTIVATION_DTYPES", "WEIGHT_DTYPES", "ConvShape", "PoolShape", "conv2d_shapes",
    "int_tensors", "pool2d_shapes", "INT64_MIN", "INT64_MAX", "int64s", "modes",
    "MIXED_DTYPES", "conv2d_cases", "gemm_cases", "pool_cases", "accumulators",
    "requant_float_cases", "requant_float32_cases", "requant_int_cases", "activations",
    "same_shape_pairs",
]

# ---------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------

INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
OUT_DTYPES = (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64, np.float64)

int64s = st.integers(INT64_MIN, INT64_MAX)
modes = st.integers(0, 3)

# (activation, weight, bias) dtype combos drawn by default. Every dtype of each
# operand appears once; the full cross product only adds Numba compile time
# (one compilation per signature), not coverage of distinct code.
MIXED_DTYPES = (
    (np.int8, np.int8, np.int32),
    (np.uint8, np.int8, np.int32),
    (np.int16, np.int16, np.int64),
    (np.uint16, np.int8, np.int64),
    (np.int32, np.int32, np.int64),
)


def _bias(dtype, k):
    # int64 biases stay well inside int64 so sums are exact, not wrapped.
    return int_tensors(dtype, (k,), -(2 ** 40), 2 ** 40)


@st.composite
def conv2d_cases(draw, dtypes=MIXED_DTYPES, **shape_kwargs):
    """``(x, w, bias, geometry)`` ready for ``conv2d``."""
    shape = draw(conv2d_shapes(**shape_kwargs))
    x_dtype, w_dtype, b_dtype = draw(st.sampled_from(dtypes))
    x = draw(int_tensors(x_dtype, shape.x_shape))
    w = draw(int_tensors(w_dtype, shape.w_shape))
    bias = draw(_bias(b_dtype, shape.w_shape[0]))
    return x, w, bias, np.array(shape.geometry, np.int64)


@st.composite
def gemm_cases(draw, dtypes=MIXED_DTYPES, max_dim=6):
    """``(a, b, bias)`` ready for ``gemm`` (any dimension may be zero)."""
    m, k, n = (draw(st.integers(0, max_dim)) for _ in range(3))
    a_dtype, b_dtype, bias_dtype = draw(st.sampled_from(dtypes))
    a = draw(int_tensors(a_dtype, (m, k)))
    b = draw(int_tensors(b_dtype, (k, n)))
    return a, b, draw(_bias(bias_dtype, n))


@st.composite
def pool_cases(draw, **shape_kwargs):
    """``(x, geometry)`` ready for ``maxpool2d`` / ``avgpool2d``."""
    shape = draw(pool2d_shapes(**shape_kwargs))
    x = draw(int_tensors(draw(st.sampled_from(ACTIVATION_DTYPES)), shape.x_shape))
    return x, np.array(shape.geometry, np.int64)


def accumulators(max_len=20):
    """1-D int64 accumulators over the full int64 range."""
    return int_tensors(np.int64, st.integers(0, max_len))


@st.composite
def activations(draw, ndims=(2, 4), max_side=4):
    """An activation-dtype tensor of rank in ``ndims`` (rank 2: after gemm, 4: NCHW)."""
    ndim = draw(st.sampled_from(ndims))
    shape = tuple(draw(st.integers(0, max_side)) for _ in range(ndim))
    return draw(int_tensors(draw(st.sampled_from(ACTIVATION_DTYPES)), shape))


@st.composite
def same_shape_pairs(draw, ndims=(2, 4), max_side=4):
    """Two arrays of one shape and dtype, as the interpreter adds them."""
    a = draw(activations(ndims, max_side))
    return a, draw(int_tensors(a.dtype, a.shape))


@st.composite
def _acc_and_out(draw, acc_bound):
    """An (N, C, S) int64 accumulator, an empty output and [lo, hi] bounds."""
    shape = tuple(draw(st.integers(0, 3)) for _ in range(3))
    acc = draw(int_tensors(np.int64, shape, -acc_bound, acc_bound))
    dtype = draw(st.sampled_from(OUT_DTYPES))
    if dtype == np.float64:
        lo_min, hi_max = -(2 ** 40), 2 ** 40
    else:
        lo_min, hi_max = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
    lo = draw(st.one_of(st.just(lo_min), st.integers(lo_min, hi_max)))
    hi = draw(st.one_of(st.just(hi_max), st.integers(lo, hi_max)))
    return acc, np.array([lo, hi], np.int64), np.empty(shape, dtype)


@st.composite
def requant_float_cases(draw):
    """``(acc, multiplier, mode, bounds, out)`` for ``requant_float``."""
    acc, bounds, out = draw(_acc_and_out(INT64_MAX))
    mult = st.one_of(st.floats(-(2.0 ** 20), 2.0 ** 20, allow_nan=False),
                     st.floats(2.0 ** -40, 1.0))
    multiplier = np.array([draw(mult) for _ in range(acc.shape[1])], np.float64)
    return acc, multiplier, draw(modes), bounds, out


@st.composite
def requant_float32_cases(draw):
    """``(acc, multiplier, mode, bounds, out)`` for ``requant_float32``: accumulators past
    2**24 (float32 rounds them), float32 multipliers, and products in [2**22, 2**23) where
    every other float32 is a tie (x.5), or small ones next to a tie."""
    acc, bounds, out = draw(_acc_and_out(draw(st.sampled_from([2 ** 16, 2 ** 24, 2 ** 40]))))
    mult = st.one_of(st.floats(-(2.0 ** 20), 2.0 ** 20, allow_nan=False, width=32),
                     st.floats(2.0 ** -40, 1.0, width=32),
                     st.floats(0.5, 1.0, width=32).map(lambda m: m * 2.0 ** 22 / 2 ** 16))
    multiplier = np.array([draw(mult) for _ in range(acc.shape[1])], np.float32)
    return acc, multiplier, draw(modes), bounds, out


@st.composite
def requant_int_cases(draw):
    """``(acc, multiplier, shift, mode, bounds, out)`` for ``requant_int``.

    Accumulators up to 2**31 (products that fit int64) or over the whole int64
    range (the two-word product path), multipliers below 2**31 in magnitude.
    """
    acc, bounds, out = draw(_acc_and_out(draw(st.sampled_from([2 ** 31, INT64_MAX]))))
    mult = st.one_of(st.integers(2 ** 30, 2 ** 31 - 1), st.integers(-16, 16), st.just(1))
    c = acc.shape[1]
    multiplier = np.array([draw(mult) for _ in range(c)], np.int64)
    shift = np.array([draw(st.integers(-31, 62)) for _ in range(c)], np.int64)
    return acc, multiplier, shift, draw(modes), bounds, out
