"""Exact rounding rules shared by every kernel and by the NumPy fake-quant engine.

A rounding mode is a small int so it can be passed into jitted kernels:

============  =====  ==================================================
name          value  rule for a real quotient ``q``
============  =====  ==================================================
``half_away``   0    nearest, ties away from zero (embedded default)
``half_up``     1    nearest, ties toward +inf
``half_even``   2    nearest, ties to even (ONNX, ``numpy.rint``)
``floor``       3    toward -inf (a plain arithmetic right shift)
============  =====  ==================================================

Every rule is computed from the exact floor of the quotient and the sign of
(remainder - 1/2), never by adding a rounding half first: that addition can
overflow int64 and is inexact in float64 (``0.49999999999999994 + 0.5 == 1``).

The scalar functions are ``numba.njit`` so kernels can inline them; the
``*_ref`` functions are independent vectorised NumPy twins used as the spec.
"""

import numba
import numpy as np

HALF_AWAY = 0
HALF_UP = 1
HALF_EVEN = 2
FLOOR = 3
ROUNDING_NAMES = {"half_away": HALF_AWAY, "half_up": HALF_UP,
                  "half_even": HALF_EVEN, "floor": FLOOR}

_INT64_MIN = np.int64(np.iinfo(np.int64).min)


@numba.njit(cache=True)
def _resolve(q, cmp, q_is_odd, mode):
    """Round ``q + f`` where ``q`` is the exact floor and ``f`` in [0, 1).

    ``cmp`` is the sign of ``f - 1/2`` (-1, 0 or +1); a zero fraction must be
    passed as ``cmp = -1``. Works for int64 and float64 ``q``.
    """
    if mode == FLOOR or cmp < 0:
        return q
    if cmp > 0:
        return q + 1
    # Exact tie at q + 1/2.
    if mode == HALF_UP:
        return q + 1
    if mode == HALF_EVEN:
        return q + 1 if q_is_odd else q
    # HALF_AWAY: q + 1/2 is positive iff q >= 0.
    return q + 1 if q >= 0 else q


@numba.njit(cache=True)
def round_div_pow2(v, shift, mode):
    """Round ``v / 2**shift`` to an integer with ``mode``.

    Parameters
    ----------
    v : int64
        Any int64 value; the result is exact for the whole int64 range.
    shift : int64
        ``shift > 0`` divides; ``shift == 0`` returns ``v``; ``shift < 0``
        returns ``v << -shift`` (the caller guarantees it does not overflow).
    mode : int
        One of the rounding constants of this module.

    Returns
    -------
    int64

    Notes
    -----
    Computed as floor ``v >> shift`` plus the low bits ``v & (2**shift - 1)``
    compared with ``2**(shift - 1)``: no intermediate can overflow.
    Shifts >= 64 are handled explicitly (the quotient is in [-1/2, 1/2)).
    """
    if shift == 0:
        return v
    if shift < 0:
        return v << -shift
    if shift >= 64:
        # |v| <= 2**63 <= 2**(shift-1): only v == INT64_MIN, shift == 64 ties.
        if v >= 0:
            return _resolve(np.int64(0), -1, False, mode)
        cmp = 0 if (shift == 64 and v == _INT64_MIN) else 1
        return _resolve(np.int64(-1), cmp, True, mode)
    q = v >> shift
    rem = v & ((np.int64(1) << shift) - 1)
    half = np.int64(1) << (shift - 1)
    cmp = -1 if rem < half else (1 if rem > half else 0)
    return _resolve(q, cmp, (q & 1) != 0, mode)


@numba.njit(cache=True)
def round_div(num, den, mode):
    """Round ``num / den`` to an integer with ``mode``, for ``den > 0``.

    Parameters
    ----------
    num : int64
        Any int64 value; exact for the whole range.
    den : int64
        Strictly positive divisor (caller guarantees it).
    mode : int
        Rounding constant.

    Returns
    -------
    int64

    Notes
    -----
    Uses floor division and the non-negative remainder ``r``; the tie test
    compares ``r`` with ``den - r`` so ``2 * r`` never overflows.
    """
    q = num // den
    rem = num % den
    other = den - rem
    cmp = -1 if rem < other else (1 if rem > other else 0)
    return _resolve(q, cmp, (q & 1) != 0, mode)


@numba.njit(cache=True)
def round_float(y, mode):
    """Round a float64 to an integral float64 with ``mode``.

    Parameters
    ----------
    y : float64
        Finite value.
    mode : int
        Rounding constant.

    Returns
    -------
    float64
        Integral value; never ``-0.0``.

    Notes
    -----
    half_even is ``rint`` and floor is ``floor`` (both exact). The two other
    modes work on ``a = |y|``: ``f = a - floor(a)`` is exact (Sterbenz),
    whereas ``y - floor(y)`` is not for y in (-1/2, 0) (e.g.
    -0.49999999999999994 would look like a tie); the magnitude is rounded up
    when ``f > 1/2`` or on a tie going away from zero (half_away) or toward
    +inf (half_up, i.e. ``y >= 0``), then the sign is restored.
    ``floor(|y| + 0.5)`` is wrong and is not used. Branch-free per mode, so
    loops calling it vectorise once the mode is hoisted.
    """
    if mode == HALF_EVEN:
        return np.rint(y) + 0.0  # + 0.0 turns -0.0 into 0.0
    if mode == FLOOR:
        return np.floor(y) + 0.0
    a = abs(y)
    r = np.floor(a)
    f = a - r
    if mode == HALF_AWAY:
        up = f >= 0.5
    else:  # HALF_UP
        up = (f > 0.5) | ((f == 0.5) & (y >= 0.0))
    mag = r + (1.0 if up else 0.0)
    return (-mag if y < 0.0 else mag) + 0.0


# ---------------------------------------------------------------------------
# Vectorised NumPy twins (the spec). Written independently of the scalars.
# ---------------------------------------------------------------------------

def _round_up_mask(q, rem_vs_half, mode):
    """Boolean mask: add one to the floor ``q`` given sign(rem - half)."""
    if mode == FLOOR:
        return np.zeros(q.shape, bool)
    tie = rem_vs_half == 0
    if mode == HALF_UP:
        tie_up = tie
    elif mode == HALF_EVEN:
        tie_up = tie & (q % 2 != 0)
    elif mode == HALF_AWAY:
        tie_up = tie & (q >= 0)
    else:
        raise ValueError(f"unknown rounding mode {mode}")
    return (rem_vs_half > 0) | tie_up


def round_div_pow2_ref(v, shift, mode):
    """Vectorised :func:`round_div_pow2`; ``shift`` broadcasts against ``v``.

    Works in the offset-binary domain ``u = v + 2**63`` (uint64), where the
    floor and remainder of a division by ``2**s`` (1 <= s <= 63) are a plain
    logical shift and mask. Returns int64 with the shape of ``v``.
    """
    v = np.asarray(v, np.int64)
    v, shift = np.broadcast_arrays(v, np.asarray(shift, np.int64))
    u = v.view(np.uint64) ^ np.uint64(1 << 63)
    s = np.clip(shift, 1, 63).astype(np.uint64)
    q = ((u >> s) - (np.uint64(1 << 63) >> s)).view(np.int64)
    rem = u & ((np.uint64(1) << s) - np.uint64(1))
    half = np.uint64(1) << (s - np.uint64(1))
    cmp = np.where(rem > half, 1, np.where(rem < half, -1, 0))
    out = q + _round_up_mask(q, cmp, mode)

    # shift >= 64: quotient in [-1/2, 1/2); only INT64_MIN / 2**64 ties.
    big = shift >= 64
    if big.any():
        tie = (shift == 64) & (v == _INT64_MIN)
        q_big = np.where(v < 0, -1, 0)
        cmp_big = np.where(v < 0, np.where(tie, 0, 1), -1)
        out = np.where(big, q_big + _round_up_mask(q_big, cmp_big, mode), out)
    out = np.where(shift == 0, v, out)
    out = np.where(shift < 0, v << np.maximum(-shift, 0), out)
    return out.astype(np.int64)


def round_div_ref(num, den, mode):
    """Vectorised :func:`round_div` (``den > 0``, broadcasts)."""
    num = np.asarray(num, np.int64)
    den = np.asarray(den, np.int64)
    q = np.floor_divide(num, den)
    rem = np.remainder(num, den)
    cmp = np.sign(rem - (den - rem))
    return (q + _round_up_mask(q, cmp, mode)).astype(np.int64)


def round_float_ref(y, mode):
    """Vectorised :func:`round_float`: float64 array in, integral float64 out.

    half_even is ``numpy.rint`` and floor is ``numpy.floor``; the other two
    round ``|y|`` (exact fraction) and restore the sign.
    """
    y = np.asarray(y, np.float64)
    if mode == HALF_EVEN:
        out = np.rint(y)
    elif mode == FLOOR:
        out = np.floor(y)
    elif mode == HALF_AWAY:
        # trunc(y) and d = y - trunc(y) are exact (same sign, Sterbenz for |y| >= 1);
        # |d| >= 1/2 (exact tie test) moves one step away from zero.
        out = np.trunc(y)
        d = y - out
        out += d >= 0.5
        out -= d <= -0.5
    elif mode == HALF_UP:  # ties go up for y >= 0, toward zero for y < 0
        a = np.abs(y)
        r = np.floor(a)
        f = a - r
        mag = r + np.where(y >= 0, f >= 0.5, f > 0.5)
        out = np.where(y < 0, -mag, mag)
    else:
        raise ValueError(f"unknown rounding mode {mode}")
    out += 0.0
    return out
