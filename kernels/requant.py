"""Requantize an int64 accumulator to an n-bit output, per channel (axis 1).

Three flavours: a float64 multiplier (bit-identical with the NumPy fake-quant
engine), a float32 multiplier with a float32 product (Aidge 0.3.1's float32
tensors: ``requant_float32``) and an integer multiplier + shift (fixed-point
hardware style).
"""

import math

import numba
import numpy as np

from .rounding import (FLOOR, HALF_AWAY, HALF_EVEN, HALF_UP, _resolve, round_div_pow2,
                       round_div_pow2_ref, round_float, round_float_ref)


def quantize_multiplier(m):
    """Q31 representation of a real multiplier, gemmlowp/TFLite style.

    Parameters
    ----------
    m : float
        Finite, ``m >= 0``.

    Returns
    -------
    (M, shift) : (int, int)
        ``m ~= M * 2**-shift`` with ``M`` in ``[2**30, 2**31)`` (``M`` is
        ``m``'s mantissa rounded half away from zero to 31 bits); ``shift`` is
        negative when ``m >= 1``. ``m == 0`` gives ``(0, 0)``. The caller
        checks that ``shift`` is within the range its requant supports.

    Notes
    -----
    :func:`requant_int` then computes ``round(acc * M / 2**shift)`` with a
    *single* rounding of the exact product, not gemmlowp's double rounding
    (SaturatingRoundingDoublingHighMul followed by RoundingDivideByPOT).
    """
    m = float(m)
    if not math.isfinite(m) or m < 0.0:
        raise ValueError(f"multiplier must be finite and >= 0, got {m!r}")
    if m == 0.0:
        return 0, 0
    mantissa, exponent = math.frexp(m)  # m = mantissa * 2**exponent, mantissa in [0.5, 1)
    q = int(math.floor(math.ldexp(mantissa, 31) + 0.5))  # exact: < 2**52
    if q == 1 << 31:  # mantissa rounded up to 1.0
        q //= 2
        exponent += 1
    return q, 31 - exponent


@numba.njit(cache=True)
def _store_clipped_float(out, n, c, s, r, lo, hi):
    """Store an integral float64 ``r`` clipped to [lo, hi]; never casts out of range."""
    if r <= np.float64(lo):
        out[n, c, s] = lo
    elif r >= np.float64(hi):
        out[n, c, s] = hi
    else:
        out[n, c, s] = np.int64(r)


@numba.njit(cache=True)
def _float_operands_fit(acc, multiplier, bounds, out):
    """The operand check of both float requants: acc (N, C, S), out alike, a multiplier
    per channel and bounds ``[lo, hi]`` with ``lo <= hi``."""
    return (acc.ndim == 3 and out.shape == acc.shape and multiplier.shape[0] >= acc.shape[1]
            and bounds.shape[0] == 2 and bounds[0] <= bounds[1])


@numba.njit(cache=True)
def _scaled(a, m, single):
    """``float64(a) * m``, or with ``single`` the float32 product of float32(a) and m
    (formed exactly in float64, then rounded once: IEEE float32 multiplication)."""
    if single:
        return np.float64(np.float32(np.float64(np.float32(a)) * m))
    return np.float64(a) * m


@numba.njit(cache=True)
def _requant_float_loops(acc, multiplier, mode, bounds, out, single):
    """The loops of :func:`requant_float` (``single`` False) and :func:`requant_float32`."""
    lo, hi = bounds[0], bounds[1]
    n_size, c_size, s_size = acc.shape
    if -(2 ** 53) <= lo and hi <= 2 ** 53:  # bounds exact in float64: clamp, then convert
        flo, fhi = np.float64(lo), np.float64(hi)
        if s_size == 1:  # Gemm outputs (N, C, 1): channels innermost, not one-element rows
            for n in range(n_size):
                for c in range(c_size):
                    r = round_float(_scaled(acc[n, c, 0], np.float64(multiplier[c]), single), mode)
                    out[n, c, 0] = np.int64(min(max(r, flo), fhi))
            return out
        for n in range(n_size):
            for c in range(c_size):
                m = np.float64(multiplier[c])
                row = acc[n, c]
                orow = out[n, c]
                for s in range(s_size):  # loop-variable indices: vectorised per mode
                    r = round_float(_scaled(row[s], m, single), mode)
                    orow[s] = np.int64(min(max(r, flo), fhi))
        return out
    for n in range(n_size):
        for c in range(c_size):
            m = np.float64(multiplier[c])
            for s in range(s_size):
                r = round_float(_scaled(acc[n, c, s], m, single), mode)
                _store_clipped_float(out, n, c, s, r, lo, hi)
    return out


@numba.njit(cache=True)
def requant_float(acc, multiplier, mode, bounds, out):
    """``out = clip(round(float64(acc) * multiplier[c]), lo, hi)``.

    Parameters
    ----------
    acc : (N, C, S) int64 (or float64: the input quantizer), C-contiguous
    multiplier : (C,) float64, finite
    mode : int
        Rounding constant from :mod:`kernels.rounding` (applied with
        :func:`~kernels.rounding.round_float`).
    bounds : (2,) int64
        ``[lo, hi]``, both representable in ``out.dtype``.
    out : (N, C, S) int8, uint8, int16, uint16, int32, int64 or float64
        Preallocated, written in place.

    Returns
    -------
    out

    Notes
    -----
    The product is the single float64 multiply ``float64(acc) * multiplier``
    in that order, exactly as the NumPy fake-quant engine does, so the two are
    bit-identical. Clipping compares in float64 before casting, so no
    out-of-range float is ever converted to an integer.
    """
    if not _float_operands_fit(acc, multiplier, bounds, out):
        raise ValueError("requant_float: operand shapes or bounds do not fit acc (N, C, S)")
    return _requant_float_loops(acc, multiplier, mode, bounds, out, False)


@numba.njit(cache=True)
def requant_float32(acc, multiplier, mode, bounds, out):
    """``out = clip(round(float32(float32(acc) * multiplier[c])), lo, hi)``.

    The rescale of a library whose tensors are float32 (Aidge 0.3.1's
    quantizer: ``Mul`` by a float32 scaling factor, ``Round``, ``Clip``, all
    on float32 tensors). Same operands as :func:`requant_float` except:

    Parameters
    ----------
    acc : (N, C, S) int64, int8/uint8/int16/uint16 or float64, C-contiguous
        Integer-valued.
    multiplier : (C,) float32
        Finite (the float64 scale rounded to float32 by the caller).

    Returns
    -------
    out

    Notes
    -----
    Two float32 roundings, both to nearest even: ``acc`` to float32 (exact
    while ``|acc| <= 2**24``), then the product. The product is formed
    exactly in float64 (two 24-bit significands) and rounded once to
    float32, which is IEEE float32 multiplication. The float32 product is
    then rounded to an integer with ``mode`` (the rounding is exact in
    float64) and clipped in float64; a product that overflows float32 is
    +-inf and clips to a bound. E.g. acc = 15119, multiplier =
    float32(0.0026126066): the float32 product is 39.5 exactly (float64:
    39.49999...), so half_even gives 40, not 39.
    """
    if not _float_operands_fit(acc, multiplier, bounds, out):
        raise ValueError("requant_float32: operand shapes or bounds do not fit acc (N, C, S)")
    return _requant_float_loops(acc, multiplier, mode, bounds, out, True)


@numba.njit(cache=True)
def _shift_left_clipped(v, s, lo, hi):
    """``clip(v * 2**s, lo, hi)`` for ``s >= 1`` without ever overflowing."""
    if v > (hi >> s):  # v * 2**s > hi
        return hi
    lo_ceil = (lo >> s) + (1 if (lo & ((np.int64(1) << s) - 1)) != 0 else 0)
    if v < lo_ceil:  # v * 2**s < lo
        return lo
    return v << s


_LOW32 = np.int64(0xFFFFFFFF)
_INT64_MAX = np.int64(np.iinfo(np.int64).max)


@numba.njit(cache=True)
def _wide_requant(a, m, sh, mode, lo, hi):
    """``clip(round(a * m / 2**sh), lo, hi)`` exactly when ``a * m`` may not fit int64.

    ``|m| < 2**31``: the product is formed as ``P = top * 2**32 + low`` with
    ``low`` in [0, 2**32) (``a`` split into its high and low 32 bits, both
    partial products < 2**63), then floor-divided by ``2**sh`` in two words
    and rounded from the exact remainder, as :func:`round_div_pow2` does.
    """
    h_part = (a >> 32) * m
    l_part = (a & _LOW32) * m
    top = h_part + (l_part >> 32)
    low = l_part & _LOW32
    if -(np.int64(1) << 31) <= top < (np.int64(1) << 31):  # P fits int64: the plain path
        v = (top << 32) | low
        if sh < 0:
            return _shift_left_clipped(v, -sh, lo, hi)
        return min(max(round_div_pow2(v, sh, mode), lo), hi)
    # |P| >= 2**63 from here: a left shift (or none) only grows it past the bounds.
    if sh <= 0:
        return lo if top < 0 else hi
    if sh >= 32:
        k = sh - 32
        q = top >> k
        rem = ((top & ((np.int64(1) << k) - 1)) << 32) | low  # < 2**sh <= 2**62
    else:
        k = 32 - sh
        if not -(np.int64(1) << (31 + sh)) <= top < (np.int64(1) << (31 + sh)):
            return lo if top < 0 else hi  # |quotient| >= 2**63: beyond any int64 bound
        q = (top << k) + (low >> sh)
        rem = low & ((np.int64(1) << sh) - 1)
    half = np.int64(1) << (sh - 1)
    cmp = -1 if rem < half else (1 if rem > half else 0)
    if q == _INT64_MAX and mode != FLOOR and cmp >= 0:
        return hi  # rounds up to 2**63
    return min(max(_resolve(q, cmp, (q & 1) != 0, mode), lo), hi)


@numba.njit(cache=True)
def requant_int(acc, multiplier, shift, mode, bounds, out):
    """``out = clip(round(acc * multiplier[c] / 2**shift[c]), lo, hi)``.

    Parameters
    ----------
    acc : (N, C, S) int64, C-contiguous
    multiplier : (C,) int64
        A Q31 multiplier in ``[2**30, 2**31)`` (see
        :func:`quantize_multiplier`), a small compensation integer, or 1.
    shift : (C,) int64
        In ``[-31, 62]``; negative means a left shift.
    mode : int
        Rounding constant (applied with
        :func:`~kernels.rounding.round_div_pow2`).
    bounds : (2,) int64
        ``[lo, hi]``, both representable in ``out.dtype``.
    out : (N, C, S) int8, uint8, int16, uint16, int32, int64 or float64
        Preallocated, written in place.

    Returns
    -------
    out

    Notes
    -----
    Exact for every int64 ``acc`` and ``|multiplier| < 2**31``: the product
    is formed in int64 when ``|acc| < 2**32`` and in two 32-bit words
    otherwise (a 16-bit model's int64 accumulators reach ``2**33`` and more),
    and rounded once, exactly. A left shift (``shift < 0``) saturates at the
    bounds instead of overflowing.
    """
    if (acc.ndim != 3 or out.shape != acc.shape or multiplier.shape[0] < acc.shape[1]
            or shift.shape[0] < acc.shape[1] or bounds.shape[0] != 2 or bounds[0] > bounds[1]):
        raise ValueError("requant_int: operand shapes or bounds do not fit acc (N, C, S)")
    for c in range(acc.shape[1]):
        if shift[c] < -31 or shift[c] > 62 or multiplier[c] <= -(2 ** 31) or multiplier[c] >= 2 ** 31:
            raise ValueError("requant_int: shift outside [-31, 62] or |multiplier| >= 2**31")
    lo, hi = bounds[0], bounds[1]
    n_size, c_size, s_size = acc.shape
    wide = np.int64(1) << 32  # |a| < 2**32 and |m| < 2**31: a * m fits int64
    for n in range(n_size):
        for c in range(c_size):
            m, sh = multiplier[c], shift[c]
            for s in range(s_size):
                a = acc[n, c, s]
                if not -wide < a < wide:
                    out[n, c, s] = _wide_requant(a, m, sh, mode, lo, hi)
                    continue
                v = a * m
                if sh < 0:
                    out[n, c, s] = _shift_left_clipped(v, -sh, lo, hi)
                else:
                    out[n, c, s] = min(max(round_div_pow2(v, sh, mode), lo), hi)
    return out


def requant_float_ref(acc, multiplier, mode, bounds, out):
    """NumPy twin of :func:`requant_float` (the spec)."""
    lo, hi = int(bounds[0]), int(bounds[1])
    r = round_float_ref(acc.astype(np.float64) * multiplier[None, :, None], mode)
    inside = (r > float(lo)) & (r < float(hi))
    res = np.where(inside, np.where(inside, r, 0.0).astype(np.int64),
                   np.where(r <= float(lo), lo, hi))
    out[...] = res
    return out


def requant_float32_ref(acc, multiplier, mode, bounds, out):
    """NumPy twin of :func:`requant_float32` (the spec): NumPy's own float32
    multiply of ``acc.astype(float32)`` by the float32 multiplier."""
    lo, hi = int(bounds[0]), int(bounds[1])
    with np.errstate(over="ignore", invalid="ignore"):
        product = acc.astype(np.float32) * multiplier.astype(np.float32)[None, :, None]
        r = round_float_ref(product.astype(np.float64), mode)
    inside = (r > float(lo)) & (r < float(hi))  # compared in float64, converted only inside
    out[...] = np.where(inside, np.where(inside, r, 0.0).astype(np.int64),
                        np.where(r <= float(lo), lo, hi))
    return out


def _requant_python(acc, m, sh, mode, lo, hi):
    """``clip(round(acc * m / 2**sh), lo, hi)`` elementwise on 1-D int64 arrays, in
    Python ints (object arrays: no width limit); returns int64."""
    v = acc.astype(object) * m.astype(object)
    right = np.maximum(sh, 0).astype(object)
    q = v >> right
    twice_rem = (v - (q << right)) * 2  # compared with 2**sh: 2 * rem vs the divisor
    divisor = np.left_shift(1, right)
    above, tie = twice_rem > divisor, twice_rem == divisor
    up = {FLOOR: np.zeros(v.shape, bool), HALF_UP: above | tie,
          HALF_EVEN: above | (tie & ((q & 1) == 1)), HALF_AWAY: above | (tie & (v >= 0))}[mode]
    res = np.where(sh < 0, v << np.maximum(-sh, 0).astype(object), q + up.astype(int).astype(object))
    return np.minimum(np.maximum(res, lo), hi).astype(np.int64)


def requant_int_ref(acc, multiplier, shift, mode, bounds, out):
    """NumPy twin of :func:`requant_int` (the spec).

    The left-shift saturation thresholds are computed with Python ints, and so
    is every element whose product ``acc * multiplier`` may leave int64.
    """
    lo, hi = int(bounds[0]), int(bounds[1])
    # float64 estimate of |acc * m| with a 2x margin: every product >= 2**63 is flagged
    m_abs = np.abs(multiplier.astype(np.float64))[None, :, None]
    wide = np.abs(acc.astype(np.float64)) * m_abs >= 2.0 ** 62
    v = acc * multiplier.astype(np.int64)[None, :, None]  # wraps where `wide`: replaced below
    shift = shift.astype(np.int64)
    right = round_div_pow2_ref(v, np.maximum(shift, 0)[None, :, None], mode)
    res = np.clip(right, lo, hi)
    for c in np.flatnonzero(shift < 0):
        s = int(-shift[c])
        v_hi, v_lo = hi >> s, -((-lo) >> s)  # floor(hi/2**s), ceil(lo/2**s)
        vc = v[:, c]
        res[:, c] = np.where(vc > v_hi, hi, np.where(vc < v_lo, lo,
                                                     np.clip(vc, v_lo, v_hi) << s))
    if wide.any():
        channel = np.nonzero(wide)[1]
        res[wide] = _requant_python(acc[wide], multiplier.astype(np.int64)[channel],
                                    shift[channel], mode, lo, hi)
    out[...] = res
    return out
