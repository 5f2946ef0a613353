"""TFLite / gemmlowp integer requantization, bit-exact to TFLite's reference kernels.

TFLite's default (double-rounding) build rescales an int32 value ``x`` by a real
multiplier ``M * 2**(shift - 31)`` in two rounded steps:

1. ``SaturatingRoundingDoublingHighMul(x * 2**max(shift, 0), M)``: ``x * M / 2**31``
   rounded to nearest, ties toward +inf (gemmlowp's sign-dependent nudge with C's
   truncating division gives exactly that), and ``-2**31 * -2**31`` saturated to
   ``2**31 - 1``;
2. ``RoundingDivideByPOT(., max(-shift, 0))``: division by a power of two rounded to
   nearest, ties away from zero.

Every intermediate is an int32 in C; an overflow there is undefined behaviour, so
:func:`check_gemmlowp_args` rejects inputs that would overflow and the kernels
assume validated input. The shift convention is TFLite's: positive = left shift
(the opposite of :func:`kernels.requant.quantize_multiplier`).
"""

import math

import numba
import numpy as np

from .rounding import HALF_AWAY, HALF_UP, round_div_pow2

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
_I32_MIN, _I32_MAX = np.int64(I32_MIN), np.int64(I32_MAX)
OUT_DTYPES = (np.int8, np.uint8, np.int16, np.int32)


def quantize_multiplier(real):
    """TFLite's ``QuantizeMultiplier(double)``: ``real ~= q * 2**(shift - 31)``.

    Parameters
    ----------
    real : float
        Finite, ``real >= 0`` (TFLite computes it as a double; pass that double).

    Returns
    -------
    (q, shift) : (int, int)
        ``q`` is ``real``'s frexp mantissa times ``2**31`` rounded half away from
        zero (``std::round``), in ``[2**30, 2**31)``; a mantissa that rounds up to
        ``2**31`` is halved and ``shift`` (the frexp exponent) incremented.
        ``shift > 0`` is a left shift. ``real == 0`` and ``shift < -31`` (roughly
        ``real < 2**-32``, subnormals included) give ``(0, 0)``.

    Notes
    -----
    ``shift > 30`` (``real >= 2**30``) is returned unchanged, as the default build
    does; only a ``TFLITE_SINGLE_ROUNDING`` build saturates it to
    ``(2**31 - 1, 30)``. :func:`check_gemmlowp_args` rejects ``shift > 30``.
    TFLite also accepts negative reals (giving ``q < 0``); here they raise
    ``ValueError``, like NaN and infinities.
    """
    real = float(real)
    if not math.isfinite(real) or real < 0.0:
        raise ValueError(f"multiplier must be finite and >= 0, got {real!r}")
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)  # real = mantissa * 2**shift, mantissa in [0.5, 1)
    scaled = math.ldexp(mantissa, 31)  # exact: a power-of-two scaling
    q = math.floor(scaled)
    if scaled - q >= 0.5:  # exact fraction; positive, so a tie goes away from zero
        q += 1
    if q == 2 ** 31:
        q, shift = q // 2, shift + 1
    if shift < -31:  # every bit would be shifted out: TFLite flushes to zero
        return 0, 0
    return q, shift


def quantize_multiplier_smaller_than_one_exp(real):
    """TFLite's ``QuantizeMultiplierSmallerThanOneExp``: :func:`quantize_multiplier`
    restricted to ``0 < real < 1`` with a result ``shift <= 0``.

    Returns
    -------
    (q, shift) : (int, int)
        As :func:`quantize_multiplier`; ``ValueError`` where TFLite's checks
        abort, including ``real`` just below 1 whose mantissa rounds up to
        ``2**31`` (``shift`` becomes 1).
    """
    real = float(real)
    if not 0.0 < real < 1.0:
        raise ValueError(f"multiplier must be in (0, 1), got {real!r}")
    q, shift = quantize_multiplier(real)
    if shift > 0:
        raise ValueError(f"multiplier {real!r} rounds to 1.0 (q={q}, shift={shift})")
    return q, shift


def quantize_multiplier_greater_than_one(real):
    """TFLite's ``QuantizeMultiplierGreaterThanOne``: :func:`quantize_multiplier`
    restricted to ``real > 1`` (``shift >= 1`` then always holds).

    Returns
    -------
    (q, shift) : (int, int)
    """
    real = float(real)
    if not real > 1.0 or not math.isfinite(real):
        raise ValueError(f"multiplier must be finite and > 1, got {real!r}")
    return quantize_multiplier(real)


@numba.njit(cache=True)
def saturating_rounding_doubling_high_mul(a, b):
    """gemmlowp's ``SaturatingRoundingDoublingHighMul`` (ARM ``VQRDMULH``).

    Parameters
    ----------
    a, b : int64
        int32-range values.

    Returns
    -------
    int64
        ``a * b / 2**31`` rounded to nearest, ties toward +inf (so ``-0.5 -> 0``,
        ``-1.5 -> -1``); ``a == b == -2**31`` saturates to ``2**31 - 1``.
        Always in int32.
    """
    if a == _I32_MIN and b == _I32_MIN:
        return _I32_MAX
    return round_div_pow2(a * b, 31, HALF_UP)  # |a * b| <= 2**62: exact in int64


@numba.njit(cache=True)
def rounding_divide_by_pot(x, exponent):
    """gemmlowp's ``RoundingDivideByPOT``: a rounding arithmetic right shift.

    Parameters
    ----------
    x : int64
        int32-range value.
    exponent : int64
        In ``[0, 31]``.

    Returns
    -------
    int64
        ``x / 2**exponent`` rounded to nearest, ties away from zero.
    """
    return round_div_pow2(x, exponent, HALF_AWAY)


@numba.njit(cache=True)
def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite's double-rounding ``MultiplyByQuantizedMultiplier(int32, int32, int)``.

    Parameters
    ----------
    x : int64
        int32-range value with ``x * 2**max(shift, 0)`` in int32 too.
    multiplier : int64
        Q31 multiplier in ``[0, 2**31)``.
    shift : int64
        In ``[-31, 30]``; positive = left shift.

    Returns
    -------
    int64
        ``RDBPOT(SRDHM(x * 2**max(shift, 0), multiplier), max(-shift, 0))``, in int32.
    """
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    high = saturating_rounding_doubling_high_mul(x * (np.int64(1) << left), multiplier)
    return rounding_divide_by_pot(high, right)


@numba.njit(cache=True)
def requant_gemmlowp(acc, multiplier, shift, params, out):
    """``out = clamp(MBQM((acc - input_offset) * 2**pre_shift, m[c], s[c]) + output_offset)``.

    Parameters
    ----------
    acc : (R, C) int64, C-contiguous
        Channels last (TFLite's per-channel axis is the last one of NHWC).
    multiplier : (C,) int64
        Q31 multipliers in ``[0, 2**31)``.
    shift : (C,) int64
        In ``[-31, 30]``, TFLite convention (positive = left shift).
    params : (5,) int64
        ``[input_offset, pre_shift, output_offset, lo, hi]``. ``input_offset`` is
        *subtracted* (a zero point: TFLite's ``input_offset`` is its negation);
        ``pre_shift`` is ADD/SUB's ``left_shift`` (20 for int8), 0 for conv outputs.
    out : (R, C) int8, uint8, int16 or int32
        Preallocated, written in place; ``[lo, hi]`` representable in it.

    Returns
    -------
    out

    Notes
    -----
    MBQM is :func:`multiply_by_quantized_multiplier` (double rounding: ties
    toward +inf in the high multiply, then away from zero in the shift).
    Assumes :func:`check_gemmlowp_args` passed: every intermediate is an int32,
    so nothing here can overflow or differ from TFLite.
    """
    if (out.shape != acc.shape or multiplier.shape[0] != acc.shape[1]
            or shift.shape[0] != acc.shape[1] or params.shape[0] != 5):
        raise ValueError("requant_gemmlowp: operand shapes do not fit acc (R, C)")
    in_off, pre, out_off, lo, hi = params[0], params[1], params[2], params[3], params[4]
    n_ch = acc.shape[1]
    # per channel: total left shift, right shift, and RDBPOT's mask
    left = np.empty(n_ch, np.int64)
    right = np.empty(n_ch, np.int64)
    for c in range(n_ch):
        left[c] = pre + (shift[c] if shift[c] > 0 else 0)
        right[c] = -shift[c] if shift[c] < 0 else 0
    one = np.int64(1)
    for r in range(acc.shape[0]):
        for c in range(n_ch):
            x = (acc[r, c] - in_off) << left[c]
            m = multiplier[c]
            # SRDHM inlined (the saturating case needs m == -2**31: never, m >= 0):
            # round(x * m / 2**31), ties toward +inf, as floor((x * m + 2**30) / 2**31)
            high = (x * m + (one << 30)) >> 31
            e = right[c]
            if e > 0:  # RDBPOT: ties away from zero
                mask = (one << e) - 1
                rem = high & mask
                threshold = (mask >> 1) + (1 if high < 0 else 0)
                high = (high >> e) + (1 if rem > threshold else 0)
            y = high + out_off
            out[r, c] = min(max(y, lo), hi)
    return out


def _srdhm_ref(a, b):
    """Vectorised SRDHM in gemmlowp's own terms: sign-dependent nudge, then C's
    truncating division by ``2**31``."""
    ab = a * b
    n = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = np.abs(n) >> 31
    return np.where((a == I32_MIN) & (b == I32_MIN), I32_MAX, np.where(n < 0, -q, q))


def _rdbpot_ref(x, exponent):
    """Vectorised RDBPOT as sign-magnitude: ``sign(x) * ((|x| + half) >> e)``."""
    half = (np.int64(1) << exponent) >> 1  # 0 for exponent 0
    mag = (np.abs(x) + half) >> exponent
    return np.where(x < 0, -mag, mag)


def _mbqm_ref(v, multiplier, shift):
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    return _rdbpot_ref(_srdhm_ref(v << left, multiplier), right)


def requant_gemmlowp_ref(acc, multiplier, shift, params, out):
    """NumPy twin of :func:`requant_gemmlowp` (the spec), in exact int64."""
    in_off, pre, out_off, lo, hi = (int(p) for p in params)
    v = (acc - in_off) << pre
    y = _mbqm_ref(v, multiplier.astype(np.int64)[None, :], shift.astype(np.int64)[None, :])
    out[...] = np.clip(y + out_off, lo, hi)
    return out


def _is_int64_array(a, ndim):
    return isinstance(a, np.ndarray) and a.dtype == np.int64 and a.ndim == ndim


def check_gemmlowp_args(acc, multiplier, shift, params, out=None):
    """Validate :func:`requant_gemmlowp`'s operands; raise ``ValueError`` naming the
    first problem.

    Checks: dtypes and shapes (``out`` too when given: an int8/uint8/int16/int32
    array of ``acc``'s shape holding ``[lo, hi]``); ``multiplier`` in
    ``[0, 2**31)`` and ``shift`` in ``[-31, 30]`` (TFLite's limits);
    ``input_offset``, ``output_offset``, ``lo <= hi`` and ``acc`` in int32;
    ``pre_shift`` in ``[0, 30]``; and every int32 TFLite computes: ``v = (acc -
    input_offset) * 2**pre_shift``, ``v * 2**max(shift[c], 0)`` and the
    requantized value plus ``output_offset`` (C overflow is undefined behaviour).

    Returns
    -------
    None
    """
    if not (_is_int64_array(acc, 2) and acc.flags.c_contiguous):
        raise ValueError("acc must be a C-contiguous 2-D int64 array (rows, channels)")
    n_ch = acc.shape[1]
    for name, a in (("multiplier", multiplier), ("shift", shift)):
        if not (_is_int64_array(a, 1) and a.shape == (n_ch,)):
            raise ValueError(f"{name} must be an int64 array of shape ({n_ch},)")
    if not (_is_int64_array(params, 1) and params.shape == (5,)):
        raise ValueError("params must be int64 [input_offset, pre_shift, output_offset, lo, hi]")
    if n_ch and not (multiplier.min() >= 0 and multiplier.max() <= I32_MAX):
        raise ValueError(f"multiplier out of [0, 2**31): {multiplier.min()}..{multiplier.max()}")
    if n_ch and not (shift.min() >= -31 and shift.max() <= 30):
        raise ValueError(f"shift out of TFLite's [-31, 30]: {shift.min()}..{shift.max()}")
    in_off, pre, out_off, lo, hi = (int(p) for p in params)
    for name, p in (("input_offset", in_off), ("output_offset", out_off), ("lo", lo), ("hi", hi)):
        if not I32_MIN <= p <= I32_MAX:
            raise ValueError(f"{name} = {p} is not an int32")
    if not 0 <= pre <= 30:
        raise ValueError(f"pre_shift = {pre} is not in [0, 30]")
    if lo > hi:
        raise ValueError(f"empty clamp range lo = {lo} > hi = {hi}")
    if out is not None:
        if not (isinstance(out, np.ndarray) and out.dtype in OUT_DTYPES and out.shape == acc.shape):
            raise ValueError(f"out must be an int8/uint8/int16/int32 array of shape {acc.shape}")
        info = np.iinfo(out.dtype)
        if lo < info.min or hi > info.max:
            raise ValueError(f"[lo, hi] = [{lo}, {hi}] does not fit {out.dtype}")
    if acc.size == 0:
        return
    # Fast path: per-channel extremes prove every element safe (the element-wise
    # checks below only run to name the culprit when they cannot).
    cmin, cmax = acc.min(axis=0), acc.max(axis=0)
    if cmin.min() < I32_MIN or cmax.max() > I32_MAX:
        raise ValueError("acc leaves int32 (TFLite's accumulators are int32)")
    total = pre + np.maximum(shift, 0)  # per channel, in [0, 60]
    if total.max() < 32:
        lo_v, hi_v = (cmin - in_off) << total, (cmax - in_off) << total
        if (lo_v.min() >= I32_MIN and hi_v.max() <= I32_MAX
                and np.maximum(hi_v, 0).max() + out_off <= I32_MAX
                and np.minimum(lo_v, 0).min() + out_off >= I32_MIN):
            return
    d = acc - in_off  # |d| < 2**32: exact
    v_lo = np.array([-(2 ** 31 >> int(t)) for t in total], np.int64)
    v_hi = np.array([I32_MAX >> int(t) for t in total], np.int64)
    bad = (d < v_lo) | (d > v_hi)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"(acc - input_offset) * 2**(pre_shift + max(shift, 0)) leaves int32 at row {r}, "
            f"channel {c} (acc = {acc[r, c]}, total left shift {int(total[c])}); TFLite "
            "computes it in int32, where overflow is undefined behaviour")
    vs = d << total  # int32 now; |MBQM(v)| <= |vs| with the same sign
    risky = (np.maximum(vs, 0) + out_off > I32_MAX) | (np.minimum(vs, 0) + out_off < I32_MIN)
    if risky.any():
        rows, chans = np.nonzero(risky)
        v = d[rows, chans] << pre
        y = _mbqm_ref(v, multiplier[chans], shift[chans]) + out_off
        over = (y < I32_MIN) | (y > I32_MAX)
        if over.any():
            i = int(np.argmax(over))
            raise ValueError(
                f"requantized value + output_offset = {int(y[i])} leaves int32 at row "
                f"{rows[i]}, channel {chans[i]}; TFLite adds them in int32")
