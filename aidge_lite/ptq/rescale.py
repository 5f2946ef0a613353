"""How a quantizer's real multiplier s is encoded for the integer target.

- "float": the float64 multiplier itself (the reference library's mode).
- "fixed_point": M in [2^30, 2^31) and a right shift, s ~= M * 2^-shift
  (TFLite / gemmlowp Q31 form, computed with a single rounding).
- "shift": the nearest power of two, s ~= 2^-shift (no compensation; the
  `single_shift` pass compensates instead).
- "double_shift": N2D2's (1 + 2^-a) * 2^-b, i.e. multiplier 2^a + 1 and shift
  a + b, the best pair over a in 1..8 (or a plain shift when that is closer).
These three ("int" quantizers) evaluate round(acc * multiplier / 2^shift) with one rounding.
- "gemmlowp": TFLite's own form and arithmetic (a "gemmlowp" quantizer):
  s ~= M * 2^(shift - 31) with M in [2^30, 2^31) and a *signed* shift (positive =
  left, TFLite's convention) from `kernels.gemmlowp.quantize_multiplier`, applied
  with TFLite's double rounding (SaturatingRoundingDoublingHighMul, then
  RoundingDivideByPOT) on int32 accumulators; the quantizer's `rounding` is not used.
"""
from __future__ import annotations

import math

import numpy as np

from aidge_lite.kernels.gemmlowp import quantize_multiplier as tflite_quantize_multiplier
from aidge_lite.kernels.requant import quantize_multiplier

from ..errors import QuantizationError

MAX_DOUBLE_SHIFT_A = 8


def power_of_two(scale: float, mode: str = "nearest") -> int:
    """k with 2^k the nearest power of two to `scale` (or the ceiling one)."""
    if scale <= 0 or not math.isfinite(scale):
        raise QuantizationError(f"cannot encode rescale {scale!r} as a shift")
    exponent = math.log2(scale)
    return math.ceil(exponent) if mode == "ceil" else round(exponent)


def double_shift(scale: float) -> tuple[int, int]:
    """(multiplier, shift) = (2^a + 1, a + b) closest to `scale`, or (1, b)."""
    k = power_of_two(scale)
    best = (1, -k, abs(scale - 2.0 ** k))
    for a in range(1, MAX_DOUBLE_SHIFT_A + 1):
        b = -power_of_two(scale / (1 + 2.0 ** -a))
        error = abs(scale - (1 + 2.0 ** -a) * 2.0 ** -b)
        if error < best[2]:
            best = ((1 << a) + 1, a + b, error)
    return best[0], best[1]


def encode_rescale(scale, mode: str, node: str = "?") -> dict:
    """The QUANTIZER attrs (mode and its parameters) encoding `scale` in `mode`;
    `node` names the quantizer in errors."""
    scales = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    if mode == "float":
        return {"mode": "float"}
    if mode == "gemmlowp":
        return gemmlowp_rescale(scales, node)
    if mode == "fixed_point":
        pairs = [quantize_multiplier(float(s)) for s in scales]
    elif mode == "shift":
        pairs = [(1, -power_of_two(float(s))) for s in scales]
    elif mode == "double_shift":
        pairs = [double_shift(float(s)) for s in scales]
    else:
        raise QuantizationError(f"unknown rescale mode '{mode}'")
    return int_rescale([m for m, _ in pairs], [s for _, s in pairs])


MAX_SHIFT = 62


def int_rescale(multipliers, shifts) -> dict:
    """The integer rescale attrs; a shift beyond 62 (a multiplier below ~2^-31) is
    brought back to 62 by dividing the multiplier by the excess power of two, rounded
    half away from zero (it may become 0: the layer's output then always rounds to 0)."""
    multipliers = np.asarray(multipliers, dtype=np.int64).copy()
    shifts = np.asarray(shifts, dtype=np.int64).copy()
    if shifts.min() < -31:
        raise QuantizationError(f"rescale multiplier too large: shift {shifts.min()} < -31")
    excess = np.maximum(shifts - MAX_SHIFT, 0)
    for i in np.flatnonzero(excess):
        multipliers[i] = _shift_right_rounded(int(multipliers[i]), int(excess[i]))
        shifts[i] = MAX_SHIFT
    return {"mode": "int", "multiplier": multipliers, "shift": shifts}


GEMMLOWP_MAX_SHIFT = 30  # TFLite: a left shift of at most 30 (real < 2^30)
GEMMLOWP_DTYPES = ("int8", "uint8", "int16")  # outputs requant_gemmlowp writes (uint16: none)


def gemmlowp_rescale(scales, node: str = "?") -> dict:
    """The attrs of a "gemmlowp" quantizer for real multipliers `scales` (one, or one per
    channel of axis 1: NCHW conv outputs and (N, C) Gemm outputs alike): TFLite's
    `QuantizeMultiplier` of each as exact Python ints (Q31 `multiplier`, signed `shift`),
    no zero points (our activations are symmetric) and no pre-shift.

    Refuses (QuantizationError naming `node`) a multiplier TFLite cannot represent:
    non-finite or negative, or 2^30 or more (its shift would exceed 30: the Q31 value
    would need 2^31 or more). A multiplier below ~2^-32 becomes (0, 0), as in TFLite:
    every int32 accumulator then rounds to 0."""
    multipliers, shifts = [], []
    for s in np.atleast_1d(np.asarray(scales, dtype=np.float64)).ravel():
        try:
            m, shift = tflite_quantize_multiplier(float(s))
        except ValueError as exc:
            raise QuantizationError(f"node '{node}': cannot encode rescale {float(s)!r} for "
                                    f"gemmlowp: {exc}") from None
        if shift > GEMMLOWP_MAX_SHIFT:
            raise QuantizationError(
                f"node '{node}': rescale {float(s)!r} needs a left shift of {shift} > "
                f"{GEMMLOWP_MAX_SHIFT}: gemmlowp cannot represent a multiplier of 2^30 or more "
                f"(its Q31 form would need 2^31 or more)")
        multipliers.append(int(m))
        shifts.append(int(shift))
    # no zero_point / input_zero_point / pre_shift keys: 0 by default, and their presence
    # marks a zero-point (TFLite-spec) quantizer elsewhere (graph_text, report_zp)
    return {"mode": "gemmlowp", "multiplier": multipliers, "shift": shifts, "axis": 1}


def _shift_right_rounded(value: int, bits: int) -> int:
    """round(value / 2^bits), half away from zero, in Python ints (exact)."""
    magnitude = (abs(value) + (1 << (bits - 1))) >> bits
    return magnitude if value >= 0 else -magnitude


def effective_multiplier(attrs: dict):
    """The real multiplier a quantizer applies: `scale`, multiplier / 2^shift ("int"),
    or multiplier * 2^(shift - 31) ("gemmlowp", TFLite's convention; exact in float64)."""
    mode = attrs.get("mode", "float")
    if mode == "gemmlowp":
        return (np.asarray(attrs["multiplier"], dtype=np.float64)
                * np.exp2(np.asarray(attrs["shift"], dtype=np.float64) - 31))
    if mode != "int":
        return np.asarray(attrs["scale"], dtype=np.float64)
    return attrs["multiplier"] / np.exp2(np.asarray(attrs["shift"]).astype(np.float64))
