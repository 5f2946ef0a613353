"""TFLite's int8 LOGISTIC, TANH and HARD_SWISH as 256-entry tables, plus SOFTMAX's parameters.

An int8 elementwise op is a function of the input code alone, so a table
computed once with TFLite's own arithmetic *is* the op. Entry ``i`` of every
table is the output for the input code ``i - 128``.

What LiteRT's BUILTIN_REF kernels (``activations.cc``, ``kReference``) run:

* LOGISTIC: ``SigmoidPrepare<kReference>`` fills a table with
  ``LUTPopulate<int8_t>`` (``internal/common.h``) in **float32**, with
  ``1.0f / (1.0f + expf(-x))``; ``SigmoidEval`` is a gather
  (``optimized_integer_ops::LookupTable``). The gemmlowp fixed-point logistic
  (``reference_integer_ops::Logistic``) is TFLite Micro's, not LiteRT's.
* TANH: the same with ``tanhf(x)``.
* HARD_SWISH: ``reference_ops::HardSwish`` (``internal/reference/hard_swish.h``),
  an int16 fixed-point algorithm; tabulated here.

The float32 tables call the C library's ``expf`` / ``tanhf`` through ctypes:
LiteRT's wheel imports exactly those symbols from libm, and neither is
correctly rounded, so NumPy's own float32 ``exp`` (a different approximation)
would flip some entries that sit next to a rounding tie.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np

from ..kernels.gemmlowp import quantize_multiplier

F32 = np.float32
I8_MIN, I8_MAX = -128, 127
I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
SCALED_DIFF_INTEGER_BITS = 5  # SOFTMAX's Q5.26 input to exp_on_negative_values

__all__ = ["logistic_table", "tanh_table", "hard_swish_table", "hard_swish_params",
           "softmax_params"]


def _load_libm():
    for name in (ctypes.util.find_library("m"), "libm.so.6", None):
        try:
            lib = ctypes.CDLL(name)
            funcs = lib.expf, lib.tanhf
        except (OSError, AttributeError):
            continue
        for f in funcs:
            f.restype, f.argtypes = ctypes.c_float, [ctypes.c_float]
        return funcs
    return None


_LIBM = _load_libm()


def _expf(x):
    """C ``expf``; without a loadable libm, exp in double rounded once to float32."""
    return F32(_LIBM[0](float(x))) if _LIBM else F32(np.exp(np.float64(x)))


def _tanhf(x):
    return F32(_LIBM[1](float(x))) if _LIBM else F32(np.tanh(np.float64(x)))


def _roundf(y) -> float:
    """C ``roundf`` (half away from zero) of a float32, exactly."""
    a = abs(float(y))
    r = math.floor(a)
    r += 1.0 if a - r >= 0.5 else 0.0  # a - floor(a) is exact
    return math.copysign(r, float(y))


def _check_scale(name, scale):
    s = F32(scale)
    if not (math.isfinite(float(s)) and s > 0):
        raise ValueError(f"{name} must be a finite float32 > 0, got {scale!r}")
    return s


def _check_zero_point(name, zp):
    if int(zp) != zp or not I32_MIN <= int(zp) <= I32_MAX:
        raise ValueError(f"{name} must be an int32, got {zp!r}")
    return int(zp)


def _float_table(in_scale, in_zp, out_scale, out_zp, fn, op):
    """``LUTPopulateInt8``: every step a float32 operation, then clamped to int8."""
    s_in, s_out = _check_scale("input scale", in_scale), _check_scale("output scale", out_scale)
    z_in = _check_zero_point("input zero point", in_zp)
    z_out = _check_zero_point("output zero point", out_zp)
    inverse = F32(1) / s_out
    table = np.empty(256, np.int8)
    with np.errstate(over="ignore"):  # s_in * (v - z_in) or exp may overflow to inf, as in C
        for i in range(256):
            d = i - 128 - z_in
            if not I32_MIN <= d <= I32_MAX:
                raise ValueError(f"{op}: code {i - 128} minus zero point {z_in} leaves int32")
            y = fn(s_in * F32(d))
            q = float(F32(_roundf(y * inverse)) + F32(z_out))  # roundf + zero point, float32
            # The int8 clamp; LiteRT saturates values beyond int32 too (seen with output
            # scales below 2**-31), so clamping the float is the same thing.
            table[i] = int(min(max(q, I8_MIN), I8_MAX))
    return table


def _logistic(x):
    return F32(1) / (F32(1) + _expf(-x))


def logistic_table(in_scale, in_zp, out_scale, out_zp) -> np.ndarray:
    """LOGISTIC int8 -> int8 as TFLite's BUILTIN_REF computes it.

    Parameters
    ----------
    in_scale, out_scale : float
        The tensors' float32 scales (finite, > 0). TFLite's ``SigmoidPrepare``
        rejects any output scale but exactly ``1/256``; so does this function.
    in_zp, out_zp : int
        Zero points (``out_zp`` is not checked by TFLite; -128 by convention).

    Returns
    -------
    (256,) int8
        Entry ``i``: ``clamp(int(roundf(y * f32(1/s_out)) + z_out), -128, 127)``
        with ``y = 1 / (1 + expf(-(s_in * (i - 128 - z_in))))``, all float32.

    Raises
    ------
    ValueError
        Output scale other than 1/256, bad scales or zero points.
    """
    if F32(out_scale) != F32(1 / 256):
        raise ValueError(f"LOGISTIC: int8 output scale must be exactly 1/256 (TFLite's "
                         f"SigmoidPrepare rejects {float(F32(out_scale))!r})")
    return _float_table(in_scale, in_zp, out_scale, out_zp, _logistic, "LOGISTIC")


def tanh_table(in_scale, in_zp, out_scale, out_zp) -> np.ndarray:
    """TANH int8 -> int8 as TFLite's BUILTIN_REF computes it.

    Same float32 formula as :func:`logistic_table` with ``y = tanhf(x)``.
    TFLite's ``TanhPrepare`` checks no int8 quantization (1/128 and 0 are
    conventional).
    """
    return _float_table(in_scale, in_zp, out_scale, out_zp, _tanhf, "TANH")


# --- HARD_SWISH: int16 fixed point (reference_ops::HardSwish) ------------------------

def _wrap32(v: int) -> int:
    return ((v + 2 ** 31) & 0xFFFFFFFF) - 2 ** 31


def _wrap16(v: int) -> int:
    return ((v + 2 ** 15) & 0xFFFF) - 2 ** 15


def _sat16(v: int) -> int:
    return min(max(v, -(2 ** 15)), 2 ** 15 - 1)


def _trunc_div(a: int, b: int) -> int:
    """C integer division (toward zero), ``b > 0``."""
    return a // b if a >= 0 else -((-a) // b)


def _srdhm16(a: int, b: int) -> int:
    """gemmlowp's int16 SaturatingRoundingDoublingHighMul."""
    if a == b == -(2 ** 15):
        return 2 ** 15 - 1
    p = a * b
    return _wrap16(_trunc_div(p + (2 ** 14 if p >= 0 else 1 - 2 ** 14), 2 ** 15))


def _sdhm16(a: int, b: int) -> int:
    """TFLite's SaturatingDoublingHighMul: ``a * b / 2**15`` truncated, no rounding."""
    if a == b == -(2 ** 15):
        return 2 ** 15 - 1
    return _wrap16(_trunc_div(a * b, 2 ** 15))


def _rdbpot16(x: int, e: int) -> int:
    """gemmlowp's RoundingDivideByPOT on int16, including its exponent >= 16 quirk.

    The mask ``2**e - 1`` is narrowed to int16 (all ones once ``e >= 16``), so
    there the result is 1 for ``x >= 0`` and -1 for ``x < 0``.
    """
    mask = _wrap16((1 << e) - 1)
    threshold = _wrap16((mask >> 1) + (1 if x < 0 else 0))
    return _wrap16((x >> e) + (1 if _wrap16(x & mask) > threshold else 0))


def _downscale_to_int16(m: int) -> int:
    """DownScaleInt32ToInt16Multiplier."""
    return 2 ** 15 - 1 if m >= I32_MAX - 2 ** 15 else (m + 2 ** 15) >> 16


def hard_swish_params(in_scale, out_scale) -> dict:
    """``HardSwishPrepare`` (int8): float32 ratios, then QuantizeMultiplier and an int16 multiplier.

    Returns
    -------
    dict
        ``output_multiplier`` / ``reluish_multiplier`` (int16 Q15) and their
        exponents (positive = left shift).

    Raises
    ------
    ValueError
        ``output_multiplier_exponent > 0`` (TFLite rejects: roughly
        ``s_out < s_in / 128``), or a reluish exponent above 32 (an undefined
        ``1 << 32`` in TFLite, ``s_in`` above ~5e7), or bad scales.
    """
    s_in, s_out = _check_scale("input scale", in_scale), _check_scale("output scale", out_scale)
    hires = F32(1 / 128) * s_in
    out_mult = hires / s_out
    relu_mult = hires / (F32(3) / F32(32768))
    m_out, e_out = quantize_multiplier(float(out_mult))
    m_relu, e_relu = quantize_multiplier(float(relu_mult))
    if e_out > 0:
        raise ValueError(f"HARD_SWISH: output multiplier s_in/(128*s_out) = {float(out_mult)!r} "
                         f"has exponent {e_out} > 0, which TFLite's HardSwishPrepare rejects")
    if e_relu > 32:
        raise ValueError(f"HARD_SWISH: input scale {float(s_in)!r} is too large (reluish "
                         f"exponent {e_relu}: TFLite shifts an int by {e_relu - 1}, undefined)")
    return {"output_multiplier": _downscale_to_int16(m_out), "output_exponent": e_out,
            "reluish_multiplier": _downscale_to_int16(m_relu), "reluish_exponent": e_relu}


def hard_swish_table(in_scale, in_zp, out_scale, out_zp) -> np.ndarray:
    """HARD_SWISH int8 -> int8: TFLite's int16 fixed-point algorithm, tabulated.

    Every intermediate is an int16 in TFLite and wraps or saturates as there:
    ``v = x - z_in``; ``hi = 128 v``; ``pre = SRDHM16(hi, M_out)``; the
    "reluish" factor ``r`` rescales ``hi`` by ``M_relu * 2**e_relu`` (saturating
    left shifts, or a rounding right shift), then ``r = (r + 2**15) >> 1``
    maps [-1, 1] to [0, 1]; ``y = RDBPOT16(SDHM16(r, pre), -e_out) + z_out``
    (SDHM16 truncates), clamped to int8.

    Returns
    -------
    (256,) int8
    """
    p = hard_swish_params(in_scale, out_scale)
    z_in = _check_zero_point("input zero point", in_zp)
    z_out = _check_zero_point("output zero point", out_zp)
    for name, z in (("input", z_in), ("output", z_out)):
        if not -(2 ** 15) <= z < 2 ** 15:  # LiteRT 2.3's HardSwishPrepare checks this
            raise ValueError(f"HARD_SWISH: {name} zero point {z} is outside int16, which "
                             "TFLite's HardSwishPrepare rejects")
    m_out, e_out = p["output_multiplier"], p["output_exponent"]
    m_relu, e_relu = p["reluish_multiplier"], p["reluish_exponent"]
    table = np.empty(256, np.int8)
    for i in range(256):
        hi = _wrap16(_wrap16(i - 128 - z_in) * 128)
        pre = _srdhm16(hi, m_out)
        r = hi
        if e_relu > 0:  # C's int `1 << 31` is -2**31: e_relu == 32 flips the sign, as in LiteRT
            r = _sat16(r * _wrap32(1 << (e_relu - 1)))
        r = _srdhm16(r, m_relu)
        if e_relu > 0:
            r = _sat16(r * 2)
        elif e_relu < 0:
            r = _rdbpot16(r, -e_relu)
        r = (r + 2 ** 15) >> 1
        y = _wrap16(_rdbpot16(_sdhm16(r, pre), -e_out) + z_out)
        table[i] = min(max(y, I8_MIN), I8_MAX)
    return table


# --- SOFTMAX (reference_ops::Softmax, gemmlowp fixed point, no table) ---------------

def softmax_params(in_scale, beta=1.0) -> dict:
    """``SoftmaxPrepare<kReference>`` (int8): PreprocessSoftmaxScaling, CalculateInputRadius.

    Parameters
    ----------
    in_scale : float
        The input's float32 scale.
    beta : float
        SoftmaxOptions.beta (a float32 in the flatbuffer).

    Returns
    -------
    dict
        ``input_multiplier`` (Q31, int), ``input_left_shift`` (>= 0) and
        ``diff_min`` (<= 0): the kernel parameters of
        :func:`aidge_lite.kernels.softmax.softmax_int8`.

    Notes
    -----
    ``real = min(f64(beta) * f64(s_in) * 2**26, 2**31 - 1)`` in double, then
    ``QuantizeMultiplierGreaterThanOne(real)``;
    ``diff_min = -floor(31 * 2**26 / 2**input_left_shift)`` (double). The
    output quantization (scale ~1/256, zero point -128, which TFLite requires)
    is the caller's to check; the kernel hard-codes it.

    Raises
    ------
    ValueError
        ``real <= 1`` (``beta * s_in <= 2**-26``), NaN: TFLite aborts the process.
    """
    real = float(F32(beta)) * float(F32(in_scale)) * float(1 << (31 - SCALED_DIFF_INTEGER_BITS))
    real = min(real, float(I32_MAX)) if not math.isnan(real) else real
    if not real > 1.0:
        raise ValueError(f"SOFTMAX: beta * input scale * 2**26 = {real!r} must be > 1 "
                         "(TFLite's QuantizeMultiplierGreaterThanOne aborts otherwise)")
    multiplier, shift = quantize_multiplier(real)
    radius = math.floor(float((1 << SCALED_DIFF_INTEGER_BITS) - 1)
                        * float(1 << (31 - SCALED_DIFF_INTEGER_BITS)) / float(1 << shift))
    return {"input_multiplier": multiplier, "input_left_shift": shift, "diff_min": -radius}
