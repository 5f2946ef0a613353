"""The one-call kernel checkers: correct kernels pass for every rescale mode, rounding,
layout and convention; the boundary strategies really land on the boundaries; a
mismatch is reported shrunk and readable; bad kernels give a clear message."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from aidge_lite.target import Target
from aidge_lite.testing import (KernelMismatch, KernelOutputError, check_add, check_avgpool2d,
                                check_conv2d, check_depthwise_conv2d, check_fully_connected,
                                check_maxpool2d, check_requant)
from aidge_lite.testing.kernel_cases import INT32_MIN, requant_cases

from .test_buggy_kernels import (CATALOGUE, avgpool_ok, conv_nchw, conv_nhwc, fc_tflite_ok,
                                 maxpool_ok, mbqm, rdbpot, requant_tflite_ok, round_half_away, run,
                                 srdhm)

CI = 30  # examples per correct-kernel check in CI; the slow test runs 2,000


def requant_exact(rounding):
    """Our convention (real = multiplier / 2**shift), any rounding, exact Python ints."""
    def fn(acc, multiplier, shift, zero_point, lo, hi):
        out = []
        for a in acc.tolist():
            v = a * multiplier
            if shift > 0:
                q, r, half = v >> shift, v & ((1 << shift) - 1), 1 << (shift - 1)
                up = {"floor": False, "half_up": r >= half, "half_even": r > half or
                      (r == half and q & 1 == 1), "half_away": r > half or (r == half and q >= 0)}
                v = q + up[rounding]
            else:
                v <<= -shift
            out.append(min(max(v + zero_point, lo), hi))
        return np.array(out, np.int64)
    return fn


def requant_float(rounding, dtype=np.int8):
    def fn(acc, multiplier, shift, zero_point, lo, hi):
        y = acc * multiplier
        r = {"half_away": round_half_away(y), "half_even": np.rint(y), "floor": np.floor(y),
             "half_up": np.floor(y) + (y - np.floor(y) >= 0.5)}[rounding]
        return np.clip(r + zero_point, lo, hi).astype(dtype)
    return fn


def _as(dtype, fn):
    return lambda *a: fn(*a).astype(dtype)


@pytest.mark.parametrize("rescale", ["fixed_point", "shift", "double_shift", "float"])
@pytest.mark.parametrize("rounding", ["half_away", "half_up", "half_even", "floor"])
def test_correct_requant_passes_every_mode_and_rounding(rescale, rounding):
    t = Target(rescale=rescale, rounding=rounding)
    fn = requant_float(rounding) if rescale == "float" else _as(np.int8, requant_exact(rounding))
    assert check_requant(fn, t, max_examples=CI, seed=1) == CI


def test_gemmlowp_in_both_shift_conventions_and_output_dtypes():
    assert check_requant(requant_tflite_ok, "tflite", max_examples=CI, seed=2) == CI

    def ours(acc, multiplier, shift, zero_point, lo, hi):  # real = multiplier / 2**shift
        return requant_tflite_ok(acc, multiplier, 31 - shift, zero_point, lo, hi)
    assert check_requant(ours, "tflite", convention="aidge", max_examples=CI, seed=2) == CI
    for dtype in (np.uint8, np.int16):
        fn = _as(dtype, lambda *a: np.clip(mbqm(a[0], a[1], a[2]) + a[3], a[4], a[5]))
        assert check_requant(fn, "tflite", dtype=dtype, max_examples=CI, seed=3) == CI


def test_elementwise_scalar_kernel():
    def one(acc, multiplier, shift, zero_point, lo, hi):  # ints in, int out, like C
        y = int(rdbpot(srdhm(np.int64(acc) << max(shift, 0), multiplier), max(-shift, 0)))
        return min(max(y + zero_point, lo), hi)
    assert check_requant(one, "tflite", elementwise=True, max_examples=CI, seed=4) == CI


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("target", ["tflite", "default", Target(rescale="fixed_point")])
def test_correct_conv_and_depthwise_pass_both_layouts(layout, target):
    def requant(acc, p, axis):
        shape = [1] * acc.ndim
        shape[axis] = -1
        m, s = p.multiplier.reshape(shape), p.shift.reshape(shape)
        if p.multiplier.dtype.kind == "f":
            y = round_half_away(acc * m)
        elif isinstance(target, Target):  # our convention, half away, int64 is exact here
            v = acc * m
            y = np.where(v >= 0, 1, -1) * ((np.abs(v) + (np.int64(1) << (s - 1))) >> s)
        else:
            y = mbqm(acc, m, s)
        return np.clip(y + p.output_offset, p.act_min, p.act_max).astype(np.int8)

    def conv(x, w, bias, p):
        if layout == "NHWC":
            return requant(conv_nhwc(x, w, bias, p) + bias, p, 3)
        return requant(conv_nchw(x, w, bias, p) + bias[None, :, None, None], p, 1)

    def depthwise(x, w, bias, p):
        if layout == "NHWC":
            return requant(conv_nhwc(x, w, bias, p, depthwise=True) + bias, p, 3)
        xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        wh = np.ascontiguousarray(w.transpose(1, 2, 3, 0))  # (K, 1, KH, KW) -> 1HWO
        acc = conv_nhwc(xh, wh, bias, p, depthwise=True) + bias
        return np.ascontiguousarray(requant(acc, p, 3).transpose(0, 3, 1, 2))

    assert check_conv2d(conv, target, layout=layout, max_examples=CI, seed=5) == CI
    assert check_depthwise_conv2d(depthwise, target, layout=layout, max_examples=CI, seed=6) == CI


def test_fully_connected_pools_and_add_pass():
    assert check_fully_connected(fc_tflite_ok, "tflite", max_examples=CI, seed=7) == CI
    assert check_fully_connected(fc_tflite_ok, "tflite", per_channel=False, max_examples=CI) == CI
    assert check_avgpool2d(avgpool_ok, "tflite", max_examples=CI, seed=8) == CI
    for layout in ("NHWC", "NCHW"):
        def maxpool(x, p):
            xs = x if layout == "NHWC" else x.transpose(0, 2, 3, 1)
            y = maxpool_ok(np.ascontiguousarray(xs), p)
            return y if layout == "NHWC" else np.ascontiguousarray(y.transpose(0, 3, 1, 2))
        assert check_maxpool2d(maxpool, layout=layout, max_examples=CI, seed=9) == CI

    def add_tflite(a, b, p):  # TFLite's reference ADD
        a2 = mbqm((a.astype(np.int64) + p.input1_offset) << p.left_shift, p.input1_multiplier,
                  p.input1_shift)
        b2 = mbqm((b.astype(np.int64) + p.input2_offset) << p.left_shift, p.input2_multiplier,
                  p.input2_shift)
        y = mbqm(a2 + b2, p.multiplier, p.shift) + p.output_offset
        return np.clip(y, p.act_min, p.act_max).astype(np.int8)

    def add_ours(a, b, p):  # one rescale of the exact sum, our convention, half away
        v = ((a.astype(np.int64) + p.input1_offset) + (b.astype(np.int64) + p.input2_offset))
        y = requant_exact("half_away")(v, p.multiplier, p.shift, p.output_offset, p.act_min,
                                       p.act_max)
        return y.astype(np.int8)

    assert check_add(add_tflite, "tflite", max_examples=CI, seed=10) == CI
    assert check_add(add_ours, Target(rescale="fixed_point"), max_examples=CI, seed=11) == CI


def test_requant_cases_sit_on_the_boundaries():
    """Of 1,000+ gemmlowp accumulators: >= 25 % exact ties of the final rounding,
    >= 20 % one step off a tie or at a bound; INT32_MIN, shift 0 and -31, multipliers
    2**30 and 2**31 - 1, zero points -128 and 127 all drawn."""
    seen = dict(n=0, tie=0, acc=set(), shift=set(), m=set(), zp=set())

    @settings(max_examples=200, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(requant_cases("tflite"))
    def collect(case):
        r = case.rescale
        m, s = r.multiplier[0], r.shift[0]
        seen["shift"].add(s), seen["m"].add(m), seen["zp"].add(r.zero_point)
        for a in case.acc.tolist():
            seen["n"] += 1
            seen["acc"].add(a)
            e = max(-s, 0)
            x = a << max(s, 0)
            if e:
                seen["tie"] += ((x * m + (1 << 30)) >> 31) % (1 << e) == 1 << (e - 1)
            else:
                seen["tie"] += (x * m) % (1 << 31) == 1 << 30

    collect()
    print("requant ties:", seen["tie"], "of", seen["n"])
    assert seen["n"] > 500 and seen["tie"] / seen["n"] >= 0.25, seen["tie"] / seen["n"]
    assert INT32_MIN in seen["acc"] and {0, -31} <= seen["shift"]
    assert {1 << 30, 2 ** 31 - 1} <= seen["m"] and {-128, 127} <= seen["zp"]


def test_conv_cases_steer_accumulators_onto_ties_and_int32_ends():
    """Per output channel of drawn TFLite conv cases: >= 30 % hold an exact tie of
    RoundingDivideByPOT; INT32_MIN and INT32_MAX accumulators both occur."""
    from aidge_lite.testing.kernel_op_cases import conv2d_cases

    seen = dict(channels=0, tie=0, ends=set())

    @settings(max_examples=100, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(conv2d_cases("tflite", "NHWC"))
    def collect(case):
        r = case.rescale
        acc = case.acc.reshape(-1, len(r.multiplier))
        for c in range(acc.shape[1]):
            m, e = r.multiplier[c], -r.shift[c]  # conv rescales only shift right
            column = acc[:, c].tolist()
            seen["channels"] += 1
            seen["tie"] += e > 0 and any(((a * m + (1 << 30)) >> 31) % (1 << e) == 1 << (e - 1)
                                         for a in column)
            seen["ends"] |= {a for a in column if a in (INT32_MIN, 2 ** 31 - 1)}

    collect()
    print("conv channels with a tie:", seen["tie"], "of", seen["channels"])
    assert seen["tie"] / seen["channels"] >= 0.3, seen
    assert seen["ends"] == {INT32_MIN, 2 ** 31 - 1}


def test_float_ties_are_exact():
    ties = []

    @settings(max_examples=100, derandomize=True, database=None, deadline=None)
    @given(requant_cases("default"))
    def collect(case):
        real = Fraction(case.rescale.multiplier[0])
        ties.extend((a * real).denominator == 2 for a in case.acc.tolist())

    collect()
    assert sum(ties) / len(ties) >= 0.15


def test_mismatch_message_is_the_shrunk_case_without_numpy_noise():
    def tie_down(acc, multiplier, shift, zero_point, lo, hi):
        e = max(-shift, 0)
        high = srdhm(acc.astype(np.int64) << max(shift, 0), multiplier)
        y = (high + ((1 << e >> 1) - (e > 0))) >> e  # ties rounded down
        return np.clip(y + zero_point, lo, hi).astype(np.int8)

    with pytest.raises(AssertionError) as info:
        check_requant(tie_down, "tflite", seed=0)
    err = info.value
    assert isinstance(err, KernelMismatch)
    text = str(err)
    assert "minimal case: acc=" in text and "multiplier=" in text and "shift=" in text
    assert "expected" in text and ", got" in text and "1 of 1 outputs differ" in text
    assert "array(" not in text and "dtype=" not in text and "np." not in text
    assert "rounding tie" in text or "exact acc * multiplier" in text


@pytest.mark.parametrize("bad, words", [
    (lambda acc, *a: np.zeros(acc.size + 1, np.int8), "returned shape"),
    (lambda acc, *a: np.zeros(acc.shape, np.int32),
     "returned dtype int32; expected an array of shape"),
    (lambda acc, *a: acc * 0.5, "returned float64 values; expected integer codes"),
    (lambda acc, *a: None, "returned None; expected an array"),
    # correct, except that the rounding constant 1 << (e - 1) breaks for a right shift e = 0
    (lambda acc, m, s, *a: requant_tflite_ok(acc, m, s, *a) if 1 << (-s - 1) else None,
     "your kernel raised ValueError: negative shift count"),
])
def test_bad_kernel_output_names_what_was_expected(bad, words):
    with pytest.raises(KernelOutputError) as info:
        check_requant(bad, "tflite", max_examples=20, seed=0)
    assert words in str(info.value)
    assert "int8" in str(info.value) or "raised" in str(info.value)


def test_bad_scalar_and_op_outputs():
    with pytest.raises(KernelOutputError, match=r"returned 0\.5 \(float\) for acc="):
        check_requant(lambda *a: 0.5, "tflite", elementwise=True, max_examples=5)
    with pytest.raises(KernelOutputError, match=r"expected an array of shape \(\d+(, \d+){3}\)"):
        check_conv2d(lambda x, w, b, p: x[:, :0], "tflite", max_examples=5)
    with pytest.raises(KernelOutputError, match="your kernel raised KeyError"):
        check_fully_connected(lambda x, w, b, p: {}["x"], "tflite", max_examples=5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="profile names"):
        check_requant(requant_tflite_ok, "tfl")
    with pytest.raises(ValueError, match="layout"):
        check_conv2d(conv_nhwc, "tflite", layout="HWC")
    with pytest.raises(ValueError, match="convention"):
        check_requant(requant_tflite_ok, "tflite", convention="arm")
    with pytest.raises(ValueError, match="dtype"):
        check_requant(requant_tflite_ok, "tflite", dtype=np.int32)


@pytest.mark.slow
@pytest.mark.parametrize("bug", list(CATALOGUE))
def test_correct_twins_pass_2000_examples(bug):
    assert run(bug, CATALOGUE[bug][1], 0, max_examples=2000) == 2000
