"""A catalogue of integer kernels with the bugs people actually write, each caught by the
default settings of its checker (100 examples) for every one of 20 seeds.

The kernels are written the way a user writes them (NumPy, TFLite-style C
arithmetic transcribed); the correct twins at the bottom pass the same checkers
(and ``test_kernel_check.py`` imports them).
"""
import numpy as np
import pytest

from aidge_lite.target import Target
from aidge_lite.testing import (KernelMismatch, check_avgpool2d, check_conv2d,
                                check_depthwise_conv2d, check_fully_connected, check_maxpool2d,
                                check_requant)

SEEDS = range(20)


# ------------------------------------------------------------ building blocks (correct)
def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul on int64 arrays (b >= 0)."""
    ab = np.asarray(a, np.int64) * np.asarray(b, np.int64)
    nudged = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = np.abs(nudged) >> 31  # C's truncating division by 2^31
    return np.where(nudged < 0, -q, q)


def rdbpot(x, exponent):
    """gemmlowp RoundingDivideByPOT: ties away from zero."""
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def mbqm(x, multiplier, shift, divide=rdbpot):
    """TFLite MultiplyByQuantizedMultiplier (per channel: multiplier/shift broadcast)."""
    left, right = np.maximum(shift, 0), np.maximum(-np.asarray(shift), 0)
    return divide(srdhm(np.asarray(x, np.int64) << left, multiplier), right)


def conv_nhwc(x, w, bias, p, depthwise=False):
    """Int32-style accumulation of an NHWC conv (OHWI weights, or 1HWO depthwise)."""
    n, h, wd, c = x.shape
    sh, sw = p.stride
    pt, pl, pb, pr = p.padding
    dh, dw = p.dilation
    kh, kw = w.shape[1:3]
    xp = np.pad(x.astype(np.int64) + p.input_offset, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    k = w.shape[3] if depthwise else w.shape[0]
    acc = np.zeros((n, oh, ow, k), np.int64)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
            patch = xp[:, rows, j * dw: j * dw + sw * (ow - 1) + 1: sw]
            if depthwise:  # output channel o reads input channel o // depth_multiplier
                acc += patch[..., np.arange(k) // p.depth_multiplier] * w[0, i, j].astype(np.int64)
            else:
                acc += patch @ w[:, i, j, :].T.astype(np.int64)
    return acc


def conv_nchw(x, w, bias, p):
    """Direct NCHW conv (OIHW weights), int64 partial sums; bias added by the caller."""
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    w_ohwi = np.ascontiguousarray(w.transpose(0, 2, 3, 1))
    return conv_nhwc(x_nhwc, w_ohwi, bias, p).transpose(0, 3, 1, 2)


def round_half_away(y):
    t = np.trunc(y)
    d = y - t
    return t + (d >= 0.5) - (d <= -0.5)


# -------------------------------------------------------------------------- the bugs
def conv_tie_rounds_down(x, w, bias, p):
    """TFLite NHWC conv whose RoundingDivideByPOT uses the off-by-one constant."""
    def divide(v, e):
        e = np.asarray(e)
        return (v + np.where(e > 0, (np.int64(1) << np.maximum(e - 1, 0)) - 1, 0)) >> e
    acc = conv_nhwc(x, w, bias, p) + bias
    y = mbqm(acc, p.multiplier, p.shift, divide) + p.output_offset
    return np.clip(y, p.act_min, p.act_max).astype(np.int8)


def requant_floor(acc, multiplier, shift, zero_point, lo, hi):
    y = np.floor(acc * multiplier) + zero_point  # floor, not round
    return np.clip(y, lo, hi).astype(np.int8)


def requant_half_even(acc, multiplier, shift, zero_point, lo, hi):
    y = np.round(acc * multiplier) + zero_point  # NumPy rounds half to even
    return np.clip(y, lo, hi).astype(np.int8)


def requant_single_rounding(acc, multiplier, shift, zero_point, lo, hi):
    """acc * M * 2^(shift - 31) rounded once (exact Python ints), not gemmlowp's twice."""
    out = []
    for a in acc.tolist():
        total = 31 - shift
        v = a * multiplier
        mag = (abs(v) + (1 << (total - 1))) >> total
        out.append(min(max((mag if v >= 0 else -mag) + zero_point, lo), hi))
    return np.array(out, np.int8)


def fc_no_saturation(x, w, bias, p):
    acc = (x.astype(np.int64) + p.input_offset) @ w.T.astype(np.int64) + bias
    y = mbqm(acc, p.multiplier, p.shift) + p.output_offset
    return y.astype(np.int8)  # wraps instead of clamping to [act_min, act_max]


def depthwise_clamp_127(x, w, bias, p):
    acc = conv_nhwc(x, w, bias, p, depthwise=True) + bias
    y = mbqm(acc, p.multiplier, p.shift) + p.output_offset
    return np.clip(y, -127, 127).astype(np.int8)  # symmetric clamp: -128 never produced


def requant_zero_point_first(acc, multiplier, shift, zero_point, lo, hi):
    """Q31 fixed point (our convention) with the zero point added to the accumulator."""
    out = []
    for a in acc.tolist():
        v = (a + zero_point) * multiplier  # zero point before the rescale
        if shift > 0:
            mag = (abs(v) + (1 << (shift - 1))) >> shift
            v = mag if v >= 0 else -mag
        else:
            v <<= -shift
        out.append(min(max(v, lo), hi))
    return np.array(out, np.int8)


def conv_acc16(x, w, bias, p):
    """NCHW conv, float rescale; the partial sum is kept in an int16 register."""
    acc = conv_nchw(x, w, bias, p).astype(np.int16).astype(np.int64) + bias[None, :, None, None]
    y = round_half_away(acc * p.multiplier[None, :, None, None]) + p.output_offset
    return np.clip(y, p.act_min, p.act_max).astype(np.int8)


def requant_shift_wrong_direction(acc, multiplier, shift, zero_point, lo, hi):
    """Power-of-two rescale, half up; a negative shift is taken as a right shift too."""
    v = acc.astype(np.int64) * multiplier
    if shift > 0:
        v = (v + (1 << (shift - 1))) >> shift
    else:
        v = v >> -shift  # should be v << -shift
    return np.clip(v + zero_point, lo, hi).astype(np.int8)


def avgpool_truncating(x, p):
    """NHWC average pool dividing with C's truncation instead of rounding."""
    return _avgpool(x, p, lambda total, count: np.trunc(total / count))


def maxpool_pads_zero(x, p):
    """Max pool that pads with 0 and lets the padding win."""
    return _maxpool(x, p, pad_value=0)


# ----------------------------------------------------------------- correct twins
def _windows(x, p, pad_value):
    n, h, w, c = x.shape
    kh, kw = p.kernel
    sh, sw = p.stride
    pt, pl, pb, pr = p.padding
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    xp = np.pad(x.astype(np.int64), ((0, 0), (pt, pb), (pl, pr), (0, 0)),
                constant_values=pad_value)
    inside = np.pad(np.ones((1, h, w, 1), np.int64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    taps = [(xp[:, i: i + sh * (oh - 1) + 1: sh, j: j + sw * (ow - 1) + 1: sw],
             inside[:, i: i + sh * (oh - 1) + 1: sh, j: j + sw * (ow - 1) + 1: sw])
            for i in range(kh) for j in range(kw)]
    return taps


def _avgpool(x, p, divide):
    taps = _windows(x, p, 0)
    total = sum(t for t, _ in taps)
    count = sum(m for _, m in taps) if not p.count_include_pad else len(taps)
    y = divide(total, count)
    return np.clip(y, p.act_min, p.act_max).astype(np.int8)


def _maxpool(x, p, pad_value=-(1 << 20)):
    y = np.maximum.reduce([t for t, _ in _windows(x, p, pad_value)])
    return np.clip(y, p.act_min, p.act_max).astype(np.int8)


def avgpool_ok(x, p):
    """TFLite: (sum +- count / 2) / count with C's truncation: half away from zero."""
    def divide(total, count):
        half = count // 2
        num = np.where(total >= 0, total + half, total - half)
        return np.sign(num) * (np.abs(num) // count)
    return _avgpool(x, p, divide)


def maxpool_ok(x, p):
    return _maxpool(x, p)


def conv_tflite_ok(x, w, bias, p):
    acc = conv_nhwc(x, w, bias, p) + bias
    y = mbqm(acc, p.multiplier, p.shift) + p.output_offset
    return np.clip(y, p.act_min, p.act_max).astype(np.int8)


def depthwise_tflite_ok(x, w, bias, p):
    acc = conv_nhwc(x, w, bias, p, depthwise=True) + bias
    y = mbqm(acc, p.multiplier, p.shift) + p.output_offset
    return np.clip(y, p.act_min, p.act_max).astype(np.int8)


def fc_tflite_ok(x, w, bias, p):
    acc = (x.astype(np.int64) + p.input_offset) @ w.T.astype(np.int64) + bias
    y = mbqm(acc, p.multiplier, p.shift) + p.output_offset
    return np.clip(y, p.act_min, p.act_max).astype(np.int8)


def conv_nchw_float_ok(x, w, bias, p):
    acc = conv_nchw(x, w, bias, p) + bias[None, :, None, None]
    y = round_half_away(acc * p.multiplier[None, :, None, None]) + p.output_offset
    return np.clip(y, p.act_min, p.act_max).astype(np.int8)


def requant_tflite_ok(acc, multiplier, shift, zero_point, lo, hi):
    y = mbqm(acc, multiplier, shift) + zero_point
    return np.clip(y, lo, hi).astype(np.int8)


def requant_float_ok(acc, multiplier, shift, zero_point, lo, hi):
    y = round_half_away(acc * multiplier) + zero_point
    return np.clip(y, lo, hi).astype(np.int8)


def requant_fixed_point_ok(acc, multiplier, shift, zero_point, lo, hi):
    """Our convention, half away, exact in Python ints (left shifts saturate by clamping)."""
    out = []
    for a in acc.tolist():
        v = a * multiplier
        if shift > 0:
            mag = (abs(v) + (1 << (shift - 1))) >> shift
            v = mag if v >= 0 else -mag
        else:
            v <<= -shift
        out.append(min(max(v + zero_point, lo), hi))
    return np.array(out, np.int8)


def requant_shift_half_up_ok(acc, multiplier, shift, zero_point, lo, hi):
    v = acc.astype(np.int64) * multiplier
    if shift > 0:
        v = (v + (1 << (shift - 1))) >> shift
    else:  # clamped first so the left shift cannot overflow int64
        v = np.clip(v, -(1 << 40), 1 << 40) << -shift
    return np.clip(v + zero_point, lo, hi).astype(np.int8)


# -------------------------------------------------------------------- the catalogue
# bug -> (buggy kernel, its correct twin, checker, target, checker options)
CATALOGUE = {
    "tie rounds down ((1 << (e-1)) - 1), tflite conv NHWC":
        (conv_tie_rounds_down, conv_tflite_ok, check_conv2d, "tflite", {"layout": "NHWC"}),
    "floor instead of round, float rescale":
        (requant_floor, requant_float_ok, check_requant, "default", {}),
    "half even instead of half away":
        (requant_half_even, requant_float_ok, check_requant, "default", {}),
    "single instead of double rounding (gemmlowp)":
        (requant_single_rounding, requant_tflite_ok, check_requant, "tflite", {}),
    "no saturation, tflite fully connected":
        (fc_no_saturation, fc_tflite_ok, check_fully_connected, "tflite", {}),
    "clamp at -127, tflite depthwise":
        (depthwise_clamp_127, depthwise_tflite_ok, check_depthwise_conv2d, "tflite", {}),
    "zero point before the rescale, fixed point":
        (requant_zero_point_first, requant_fixed_point_ok, check_requant,
         Target(rescale="fixed_point"), {}),
    "int16 accumulator before the bias, NCHW conv":
        (conv_acc16, conv_nchw_float_ok, check_conv2d, "default", {"layout": "NCHW"}),
    "negative shift taken as a right shift, mcu-shift":
        (requant_shift_wrong_direction, requant_shift_half_up_ok, check_requant, "mcu-shift", {}),
    "average pool truncates": (avgpool_truncating, avgpool_ok, check_avgpool2d, "tflite", {}),
    "max pool padding wins": (maxpool_pads_zero, maxpool_ok, check_maxpool2d, "default", {}),
}


def run(bug, fn, seed, **settings):
    """The bug's checker, with its default settings unless overridden, on ``fn``."""
    _, _, checker, target, options = CATALOGUE[bug]
    return checker(fn, target, seed=seed, **options, **settings)


@pytest.mark.parametrize("bug", list(CATALOGUE))
def test_buggy_kernel_is_caught_for_every_seed(bug):
    # default settings (100 examples); no shrinking: being caught is decided before it
    for seed in SEEDS:
        with pytest.raises(KernelMismatch):
            run(bug, CATALOGUE[bug][0], seed, shrink=False)


@pytest.mark.parametrize("bug", list(CATALOGUE))
def test_correct_twin_passes_the_same_checker(bug):
    # CI size; test_kernel_check.py::test_correct_twins_pass_2000_examples (slow) runs 2,000
    assert run(bug, CATALOGUE[bug][1], 0, max_examples=40) == 40
