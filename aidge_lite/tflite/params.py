"""TFLite's Prepare-time arithmetic: integer parameters from float32 scales.

Bit-exactness depends as much on these derivations as on the kernels: which
product is float32 and which double, and which QuantizeMultiplier variant.
The facts (from TFLite's kernel_util.cc, add.cc, sub.cc, mul.cc, conv.cc,
fully_connected.cc) are written out in docs/tflite_arithmetic.md.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import UnsupportedOperatorError
from ..kernels.gemmlowp import quantize_multiplier

F32 = np.float32
INT8_MIN, INT8_MAX = -128, 127
ADD_LEFT_SHIFT = 20  # int8 ADD/SUB: inputs are scaled by 2^20 before their rescale


def round_half_away(value: float) -> int:
    """C's round() on a double (or a float32 held exactly in a double)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def f32_round_div(numerator: float, scale) -> int:
    """TfLiteRound(f / scale) evaluated in float32 (activation bounds, QUANTIZE)."""
    quotient = F32(numerator) / F32(scale)
    # float32 round(): |q| + 0.5 is exact in double for every float32 q, so the
    # double floor gives roundf's result.
    return round_half_away(float(quotient))


def activation_range(activation: str, scale, zero_point: int, node: str,
                     qmin: int = INT8_MIN, qmax: int = INT8_MAX) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: the clamp a fused activation leaves."""
    if activation in ("NONE", "TANH", "SIGN_BIT"):  # TFLite clamps to the type range only
        return qmin, qmax
    bounds = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}
    if activation not in bounds:
        raise UnsupportedOperatorError(node, "fused activation", activation)
    low, high = bounds[activation]
    steps = [f32_round_div(v, scale) for v in (low, high) if v is not None]
    if any(not -(1 << 31) <= q <= (1 << 31) - 1 for q in steps):  # TFLite's Prepare refuses it too
        raise UnsupportedOperatorError(node, "fused activation", f"{activation} bounds / scale "
                                       f"{scale} overflow int32")
    lo = max(qmin, zero_point + f32_round_div(low, scale))
    hi = qmax if high is None else min(qmax, zero_point + f32_round_div(high, scale))
    return lo, hi


def _multipliers(reals) -> tuple[list[int], list[int]]:
    pairs = [quantize_multiplier(float(r)) for r in reals]
    return [m for m, _ in pairs], [s for _, s in pairs]


def conv_multipliers(input_scale, weight_scales, output_scale, channels: int):
    """Per-channel (M, shift): double(s_in) * double(s_w[c]) / double(s_out)."""
    w = np.broadcast_to(np.asarray(weight_scales, F32), (channels,))
    reals = [float(F32(input_scale)) * float(s) / float(F32(output_scale)) for s in w]
    return _multipliers(reals)


def fc_multiplier_per_tensor(input_scale, weight_scale, output_scale):
    """GetQuantizedConvolutionMultipler: the s_in * s_w product in float32 first."""
    real = float(F32(input_scale) * F32(weight_scale)) / float(F32(output_scale))
    return _multipliers([real])


def fc_real_multipliers(input_scale, weight_scales, output_scale, channels: int) -> list[float]:
    """FULLY_CONNECTED's double rescale: double(s_in) * double(s_w[c]) / double(s_out)."""
    w = np.asarray(weight_scales, F32).ravel()[:channels]
    return [float(F32(input_scale)) * float(s) / float(F32(output_scale)) for s in w]


def add_sub_multipliers(s1, s2, s_out, op: str):
    """ADD/SUB int8: (M1, sh1), (M2, sh2), (Mo, sho); every shift <= 0 (smaller than one)."""
    s1, s2, s_out = F32(s1), F32(s2), F32(s_out)
    twice_max = float(F32(2) * max(s1, s2))
    r1, r2 = float(s1) / twice_max, float(s2) / twice_max
    if op == "SUB":
        r_out = twice_max / float(F32(1 << ADD_LEFT_SHIFT) * s_out)
    else:
        r_out = twice_max / (float(1 << ADD_LEFT_SHIFT) * float(s_out))
    return _multipliers([r1]), _multipliers([r2]), _multipliers([r_out]), r_out


def mul_multiplier(s1, s2, s_out):
    """MUL int8: s1 * s2 / s_out, all in float32."""
    return _multipliers([float(F32(s1) * F32(s2) / F32(s_out))])


def requantize_multiplier(s_in, s_out):
    """QUANTIZE int8 -> int8: double(s_in) / double(s_out)."""
    return _multipliers([float(F32(s_in)) / float(F32(s_out))])


def mean_multiplier(s_in, s_out, count: int):
    """MEAN int8 (QuantizedMeanOrSum): 1/count folded into s_in/s_out's multiplier by a
    truncating division, after a left shift k = min(floor(log2 count), 32, 31 + shift)."""
    (m,), (s,) = _multipliers([float(F32(s_in)) / float(F32(s_out))])
    k = min(count.bit_length() - 1, 32, 31 + s)
    return [(m << k) // count], [s - k]  # k >= 0: shift >= -31
