"""TFLite's int8 SOFTMAX over the last axis, bit-exact to its reference kernel.

LiteRT's BUILTIN_REF runs ``reference_ops::Softmax`` (``internal/reference/softmax.h``)
for int8 -> int8; unlike the optimized kernels it uses no table but gemmlowp's
fixed-point arithmetic. Per row:

1. ``d = x - max(row)``; an element with ``d < diff_min`` contributes nothing and
   outputs -128;
2. ``a = SRDHM(d * 2**input_left_shift, input_multiplier)``: ``beta * s_in * d``
   in Q5.26; ``e = exp_on_negative_values(a)`` in Q0.31;
3. ``sum = sum(RDBPOT(e, 12))`` in Q12.19; its reciprocal is normalised with a
   count of leading zeros ``h`` and ``one_over_one_plus_x_for_x_in_0_1``;
4. ``y = RDBPOT(SRDHM(recip, e), 35 - h) - 128``, clamped to int8 (the output
   quantization 1/256, -128 is hard-coded).

Every intermediate is an int32 in C; here an int64 holding it (additions wrap
to int32 as the C code would, though no valid input gets there). TFLite aborts
(``TFLITE_CHECK``) when the exponent ``35 - h`` exceeds 31, i.e. when a row's
sum of exponentials reaches ``2**28`` (512 in real terms: 512 or more elements
equal to the row maximum, for instance); both kernels raise ``ValueError`` then.
"""

import numba
import numpy as np

from .gemmlowp import (I32_MAX, I32_MIN, _rdbpot_ref, _srdhm_ref, rounding_divide_by_pot,
                       saturating_rounding_doubling_high_mul)

ACCUMULATION_INTEGER_BITS = 12
SUM_LIMIT = 1 << 28  # a Q12.19 sum this large makes TFLite's CHECK(exponent <= 31) fail

# Raw int32 constants of gemmlowp's fixedpoint.h.
EXP_MINUS_ONE_EIGHTH = 1895147668   # exp(-1/8), Q0.31
ONE_THIRD = 715827883               # 1/3, Q0.31
# exp(-2**k) in Q0.31, applied when bit (26 + k) of the Q5.26 remainder is set.
EXP_BARREL = ((24, 1672461947), (25, 1302514674), (26, 790015084), (27, 290630308),
              (28, 39332535), (29, 720401), (30, 242))
FORTY_EIGHT_OVER_17 = 1515870810    # Q2.29
NEG_THIRTY_TWO_OVER_17 = -1010580540  # Q2.29
_OVERFLOW_MSG = ("softmax: a row's sum of exponentials reaches 2**28 (Q12.19); TFLite's "
                 "reference kernel aborts there (CHECK exponent <= 31)")

_srdhm = saturating_rounding_doubling_high_mul
_rdbpot = rounding_divide_by_pot


def pack_softmax_params(attrs):
    """``[input_multiplier, input_left_shift, diff_min]`` (int64) from a dict such as
    :func:`aidge_lite.tflite.luts.softmax_params` returns."""
    return np.array([int(attrs["input_multiplier"]), int(attrs["input_left_shift"]),
                     int(attrs["diff_min"])], np.int64)


# --- scalar gemmlowp pieces (int64 holding int32) ----------------------------------

@numba.njit(cache=True)
def _wrap32(v):
    return ((v + np.int64(2 ** 31)) & np.int64(0xFFFFFFFF)) - np.int64(2 ** 31)


@numba.njit(cache=True)
def _sat_shift_left(x, e):
    """SaturatingRoundingMultiplyByPOT<e> for e > 0: ``x * 2**e`` saturated to int32."""
    threshold = (np.int64(1) << (31 - e)) - 1
    if x > threshold:
        return np.int64(I32_MAX)
    if x < -threshold:
        return np.int64(I32_MIN)
    return x << e


@numba.njit(cache=True)
def _rounding_half_sum(a, b):
    """``(a + b + sign) / 2`` with C's truncating division."""
    s = a + b
    s += 1 if s >= 0 else -1
    return s // 2 if s >= 0 else -((-s) // 2)


@numba.njit(cache=True)
def exp_on_negative_values(a):
    """gemmlowp ``exp_on_negative_values`` for Q5.26 input ``a <= 0``; Q0.31 result."""
    quarter = np.int64(1) << 24
    a_mod = (a & (quarter - 1)) - quarter  # in [-1/4, 0)
    x = _sat_shift_left(a_mod, 5) + (np.int64(1) << 28)  # Q0.31, Taylor around -1/8
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    poly = _rdbpot(_wrap32(_srdhm(_wrap32(_rdbpot(x4, 2) + x3), ONE_THIRD) + x2), 1)
    result = _wrap32(EXP_MINUS_ONE_EIGHTH + _srdhm(EXP_MINUS_ONE_EIGHTH, _wrap32(x + poly)))
    remainder = _wrap32(a_mod - a)
    for bit, multiplier in EXP_BARREL:
        if remainder & (np.int64(1) << bit):
            result = _srdhm(result, multiplier)
    return np.int64(I32_MAX) if a == 0 else result


@numba.njit(cache=True)
def one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp's Newton-Raphson ``1 / (1 + a)``, Q0.31 in and out."""
    half_denominator = _rounding_half_sum(a, np.int64(I32_MAX))
    x = _wrap32(FORTY_EIGHT_OVER_17 + _srdhm(half_denominator, NEG_THIRTY_TWO_OVER_17))
    for _ in range(3):
        one_minus = _wrap32((np.int64(1) << 29) - _srdhm(half_denominator, x))
        x = _wrap32(x + _sat_shift_left(_srdhm(x, one_minus), 2))
    return _sat_shift_left(x, 1)


@numba.njit(cache=True)
def count_leading_zeros32(u):
    """Leading zeros of ``u`` in ``[0, 2**32)`` as a uint32 (32 for 0)."""
    if u == 0:
        return 32
    n = 0
    while u < (np.int64(1) << 31):
        u <<= 1
        n += 1
    return n


@numba.njit(cache=True)
def softmax_int8(x, params, out):
    """TFLite int8 SOFTMAX (reference kernel) of every row of ``x``.

    Parameters
    ----------
    x : (R, C) int8
        Rows are the softmax axis (TFLite's last axis, other axes flattened).
    params : (3,) int64
        ``[input_multiplier, input_left_shift, diff_min]`` from
        :func:`aidge_lite.tflite.luts.softmax_params` (see
        :func:`pack_softmax_params`); :func:`check_softmax_args` validates them.
    out : (R, C) int8
        Written in place: probabilities with scale 1/256 and zero point -128.

    Returns
    -------
    out

    Raises
    ------
    ValueError
        A row's sum of exponentials reaches ``2**28``, where TFLite aborts.

    Notes
    -----
    Roundings: SRDHM (to nearest, ties toward +inf) for every fixed-point
    product, RDBPOT (to nearest, ties away from zero) for every right shift,
    saturation where gemmlowp saturates (its left shifts). Exact integers
    throughout; the module docstring gives the algorithm.
    """
    if params.shape[0] != 3 or out.shape != x.shape:
        raise ValueError("softmax_int8: params must be (3,) and out shaped like x")
    multiplier, left_shift, diff_min = params[0], params[1], params[2]
    rows, cols = x.shape
    exps = np.empty(cols, np.int64)
    for r in range(rows):
        row_max = np.int64(-128)
        for c in range(cols):
            row_max = max(row_max, np.int64(x[r, c]))
        total = np.int64(0)
        for c in range(cols):
            d = np.int64(x[r, c]) - row_max
            if d >= diff_min:
                exps[c] = exp_on_negative_values(_srdhm(d << left_shift, multiplier))
                total += _rdbpot(exps[c], ACCUMULATION_INTEGER_BITS)
        if cols == 0:
            continue
        if total >= SUM_LIMIT:
            raise ValueError(_OVERFLOW_MSG)
        headroom = count_leading_zeros32(total)  # total >= 2**19: the maximum's exp(0)
        recip = one_over_one_plus_x_for_x_in_0_1(_wrap32((total << headroom) - (np.int64(1) << 31)))
        exponent = ACCUMULATION_INTEGER_BITS - headroom + 31 - 8
        for c in range(cols):
            d = np.int64(x[r, c]) - row_max
            if d >= diff_min:
                y = _rdbpot(_srdhm(recip, exps[c]), exponent) - 128
                out[r, c] = min(max(y, -128), 127)
            else:
                out[r, c] = -128
    return out


# --- NumPy twin (the spec), vectorised over the whole array ------------------------

def _wrap32_ref(v):
    return ((v + 2 ** 31) & 0xFFFFFFFF) - 2 ** 31


def _sat_shift_left_ref(x, e):
    threshold = (1 << (31 - e)) - 1
    return np.where(x > threshold, I32_MAX, np.where(x < -threshold, I32_MIN, x << e))


def _exp_on_negative_values_ref(a):
    a_mod = (a & ((1 << 24) - 1)) - (1 << 24)
    x = _sat_shift_left_ref(a_mod, 5) + (1 << 28)
    x2 = _srdhm_ref(x, x)
    x3, x4 = _srdhm_ref(x2, x), _srdhm_ref(x2, x2)
    inner = _wrap32_ref(_srdhm_ref(_wrap32_ref(_rdbpot_ref(x4, 2) + x3), ONE_THIRD) + x2)
    t = _wrap32_ref(x + _rdbpot_ref(inner, 1))
    result = _wrap32_ref(EXP_MINUS_ONE_EIGHTH + _srdhm_ref(EXP_MINUS_ONE_EIGHTH, t))
    remainder = _wrap32_ref(a_mod - a)
    for bit, multiplier in EXP_BARREL:
        result = np.where((remainder >> bit) & 1 == 1, _srdhm_ref(result, multiplier), result)
    return np.where(a == 0, I32_MAX, result)


def _one_over_one_plus_x_ref(a):
    s = a + I32_MAX
    s = s + np.where(s >= 0, 1, -1)
    half = np.where(s >= 0, s // 2, -((-s) // 2))
    x = _wrap32_ref(FORTY_EIGHT_OVER_17 + _srdhm_ref(half, NEG_THIRTY_TWO_OVER_17))
    for _ in range(3):
        one_minus = _wrap32_ref((1 << 29) - _srdhm_ref(half, x))
        x = _wrap32_ref(x + _sat_shift_left_ref(_srdhm_ref(x, one_minus), 2))
    return _sat_shift_left_ref(x, 1)


def softmax_int8_ref(x, params, out):
    """NumPy twin of :func:`softmax_int8` (same signature, same results)."""
    multiplier, left_shift, diff_min = (int(p) for p in params)
    if x.shape[1] == 0:
        return out
    v = x.astype(np.int64)
    d = v - np.maximum(v.max(axis=1, keepdims=True), -128)
    keep = d >= diff_min
    e = _exp_on_negative_values_ref(_srdhm_ref(np.where(keep, d, 0) << left_shift, multiplier))
    total = np.where(keep, _rdbpot_ref(e, ACCUMULATION_INTEGER_BITS), 0).sum(axis=1)
    if (total >= SUM_LIMIT).any():
        raise ValueError(_OVERFLOW_MSG)
    headroom = 32 - np.frexp(total.astype(np.float64))[1]  # exact: total < 2**28
    recip = _one_over_one_plus_x_ref((total << headroom) - (1 << 31))
    exponent = ACCUMULATION_INTEGER_BITS - headroom + 23
    y = _rdbpot_ref(_srdhm_ref(recip[:, None], e), exponent[:, None]) - 128
    out[...] = np.where(keep, np.clip(y, -128, 127), -128)
    return out


def check_softmax_args(x, params, out=None):
    """Validate :func:`softmax_int8`'s operands; raise ``ValueError`` naming the problem.

    ``x`` (and ``out``) 2-D int8 of one shape; ``params`` int64 ``(3,)`` with the
    multiplier in ``[0, 2**31)``, the shift in ``[0, 31]``, ``diff_min <= 0`` and
    ``-diff_min * 2**shift < 2**31`` (TFLite computes ``d * 2**shift`` in int32).
    """
    if not (isinstance(x, np.ndarray) and x.dtype == np.int8 and x.ndim == 2):
        raise ValueError("x must be a 2-D int8 array (rows, softmax axis)")
    if out is not None and not (isinstance(out, np.ndarray) and out.dtype == np.int8
                                and out.shape == x.shape):
        raise ValueError(f"out must be an int8 array of shape {x.shape}")
    if not (isinstance(params, np.ndarray) and params.dtype == np.int64 and params.shape == (3,)):
        raise ValueError("params must be int64 [input_multiplier, input_left_shift, diff_min]")
    multiplier, shift, diff_min = (int(p) for p in params)
    if not 0 <= multiplier <= I32_MAX:
        raise ValueError(f"input_multiplier {multiplier} is not in [0, 2**31)")
    if not 0 <= shift <= 31:
        raise ValueError(f"input_left_shift {shift} is not in [0, 31]")
    if diff_min > 0 or -diff_min * 2 ** shift > I32_MAX:
        raise ValueError(f"diff_min {diff_min} with shift {shift}: d * 2**shift leaves int32")
