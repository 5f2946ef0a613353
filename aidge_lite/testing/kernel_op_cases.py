"""Hypothesis strategies for whole-op kernel cases: conv, depthwise, fully connected,
pools and add, with their accumulators steered onto the rescale's boundaries.

Every case is built in our layout (NCHW, OIHW weights) and handed out in the
layout the user asks for; the expected values come from the kernels' NumPy
twins (``conv2d_ref``, ``gemm_ref``, ``avgpool2d_ref``, ``maxpool2d_ref``,
``add_ref``) followed by :func:`~aidge_lite.testing.kernel_cases.requantize_ref`.
Shapes stay small so a shrunk failure can be printed in full.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from aidge_lite import kernels

from .kernel_cases import (INT32_MAX, INT32_MIN, KINDS, Rescale, gemmlowp_ok, int8_tensor,
                           requantize_ref, rescales, resolve_target, steer_biases, steered_acc,
                           zero_point)

LAYOUTS = ("NHWC", "NCHW")


@dataclass(frozen=True)
class OpCase:
    """One drawn problem of an op family, in the user's layout.

    ``inputs`` are the arrays the user's function receives first; ``params`` the
    geometry, offsets and clamp range (the checker adds the rescale in the user's
    shift convention); ``acc`` the int64 accumulators (None for pools); ``expected``
    the reference outputs, int64, in the output layout.
    """

    op: str
    layout: str
    inputs: tuple
    params: dict
    rescale: Rescale | None
    acc: np.ndarray | None
    expected: np.ndarray
    extra: dict = field(default_factory=dict)  # further rescales (TFLite ADD's inputs)


def _axis(draw, max_kernel=3, dilate=True):
    """(kernel, stride, dilation, pad_begin, pad_end, size) with an output >= 1;
    pads below the dilated kernel extent (TFLite's SAME pads always are)."""
    k = draw(st.integers(1, max_kernel))
    s = draw(st.integers(1, 2))
    d = draw(st.sampled_from([1, 1, 1, 2])) if dilate else 1
    ext = d * (k - 1) + 1
    pb, pe = draw(st.integers(0, min(2, ext - 1))), draw(st.integers(0, min(2, ext - 1)))
    low = max(1, ext - pb - pe)
    return k, s, d, pb, pe, draw(st.integers(low, low + 4))


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _check_layout(layout):
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {LAYOUTS}")


@st.composite
def conv2d_cases(draw, target, layout="NHWC", *, depthwise=False, per_channel=True):
    """Conv (or depthwise conv, channel multiplier 1 or 2) cases with an input zero
    point, int8 weights in [-127, 127], int32 biases steered so each output channel
    has one accumulator on a tie, next to a tie, on a clamp bound or at an int32
    extreme. Weights: OHWI (NHWC; depthwise 1HWO, TFLite's) or OIHW (NCHW)."""
    _check_layout(layout)
    t = resolve_target(target)
    n = draw(st.integers(1, 2))
    kh, sh, dh, pt, pb, h = _axis(draw)
    kw, sw, dw, pl, pr, w = _axis(draw)
    c = draw(st.integers(1, 4))
    mult = draw(st.integers(1, 2)) if depthwise else 0
    k = c * mult if depthwise else draw(st.integers(1, 4))
    zp_in = zero_point(draw, -128, 127)
    x = int8_tensor(draw, (n, c, h, w))
    wt = int8_tensor(draw, (k, 1 if depthwise else c, kh, kw), lo=-127)
    geometry = np.array([sh, sw, pt, pl, pb, pr, dh, dw, c if depthwise else 1], np.int64)
    # padding holds the zero point: an offset input of 0, as TFLite pads
    partial = kernels.conv2d_ref(x.astype(np.int64) - zp_in, wt, np.zeros(k, np.int64), geometry)
    r = draw(rescales(t, k, conv=True, per_channel=per_channel))
    bias = steer_biases(draw, _nhwc(partial).reshape(-1, k), r)
    acc = partial + bias.astype(np.int64)[None, :, None, None]
    flat = _nhwc(acc).reshape(-1, k)
    assume(gemmlowp_ok(flat, r))
    expected = requantize_ref(flat, r).reshape(_nhwc(acc).shape)
    params = dict(stride=(sh, sw), padding=(pt, pl, pb, pr), dilation=(dh, dw),
                  input_zero_point=zp_in)
    if depthwise:
        params["depth_multiplier"] = mult
    if layout == "NHWC":
        wl = wt.transpose(1, 2, 3, 0) if depthwise else wt.transpose(0, 2, 3, 1)
        inputs = (_nhwc(x), np.ascontiguousarray(wl), bias)
        return OpCase("depthwise_conv2d" if depthwise else "conv2d", layout, inputs, params, r,
                      _nhwc(acc), expected)
    inputs = (x, wt, bias)
    return OpCase("depthwise_conv2d" if depthwise else "conv2d", layout, inputs, params, r,
                  acc, np.ascontiguousarray(expected.transpose(0, 3, 1, 2)))


@st.composite
def fully_connected_cases(draw, target, *, per_channel=True):
    """Fully connected: x (M, K) int8 with a zero point, weights (N, K) int8 in
    [-127, 127] (TFLite / CMSIS-NN row-major "OI"), int32 bias (N,), output (M, N)."""
    t = resolve_target(target)
    m, kk, nout = draw(st.integers(1, 3)), draw(st.integers(1, 16)), draw(st.integers(1, 4))
    zp_in = zero_point(draw, -128, 127)
    x = int8_tensor(draw, (m, kk))
    wt = int8_tensor(draw, (nout, kk), lo=-127)
    partial = kernels.gemm_ref(x.astype(np.int64) - zp_in, wt.T, np.zeros(nout, np.int64))
    r = draw(rescales(t, nout, conv=True, per_channel=per_channel))
    bias = steer_biases(draw, partial, r)
    acc = partial + bias.astype(np.int64)
    assume(gemmlowp_ok(acc, r))
    return OpCase("fully_connected", "NC", (x, wt, bias), dict(input_zero_point=zp_in), r, acc,
                  requantize_ref(acc, r))


def _window(geometry, h, w, oh, ow):
    """In-bounds (i, j) of output (oh, ow)'s pooling window."""
    kh, kw, sh, sw, pt, pl = (int(g) for g in geometry[:6])
    return [(i, j) for i in range(oh * sh - pt, oh * sh - pt + kh)
            for j in range(ow * sw - pl, ow * sw - pl + kw) if 0 <= i < h and 0 <= j < w]


def _steer_average(draw, x, geometry, count_include_pad):
    """Move values inside one window per channel so its sum is a rounding tie of the
    average (or one off it)."""
    n, c, h, w = x.shape
    _, _, oh_size, ow_size = kernels.pool2d_output_shape(x.shape, geometry)
    for ch in range(c):
        b = draw(st.integers(0, n - 1))
        cells = _window(geometry, h, w, draw(st.integers(0, oh_size - 1)),
                        draw(st.integers(0, ow_size - 1)))
        count = int(geometry[0] * geometry[1]) if count_include_pad else len(cells)
        q = draw(st.integers(-128, 127))
        target = q * count + count // 2 + draw(st.sampled_from([0, 0, 0, 1, -1]))
        diff = target - sum(int(x[b, ch, i, j]) for i, j in cells)
        for i, j in cells:
            new = min(max(int(x[b, ch, i, j]) + diff, -128), 127)
            diff -= new - int(x[b, ch, i, j])
            x[b, ch, i, j] = new


@st.composite
def pool2d_cases(draw, target, layout="NHWC", *, average=True, count_include_pad=False):
    """Average (rounded by ``target.rounding``, window sums steered onto ties) or max
    pooling of int8 values, then a clamp to [act_min, act_max]. Pads stay below the
    kernel, so every window holds at least one input value."""
    _check_layout(layout)
    t = resolve_target(target)
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, sh, _, pt, pb, h = _axis(draw, dilate=False)
    kw, sw, _, pl, pr, w = _axis(draw, dilate=False)
    geometry = np.array([kh, kw, sh, sw, pt, pl, pb, pr, 1, 1], np.int64)
    x = int8_tensor(draw, (n, c, h, w))
    act_min = draw(st.sampled_from([-128, -128, 0, draw(st.integers(-128, 127))]))
    act_max = draw(st.sampled_from([127, 127, draw(st.integers(act_min, 127))]))
    if average:
        _steer_average(draw, x, geometry, count_include_pad)
        mode = kernels.ROUNDING_NAMES[t.rounding]
        raw = kernels.avgpool2d_ref(x, geometry, count_include_pad, mode)
    else:
        raw = kernels.maxpool2d_ref(x, geometry).astype(np.int64)
    expected = np.clip(raw, act_min, act_max)
    params = dict(kernel=(kh, kw), stride=(sh, sw), padding=(pt, pl, pb, pr),
                  act_min=act_min, act_max=act_max)
    if average:
        params["count_include_pad"] = bool(count_include_pad)
    op = "avgpool2d" if average else "maxpool2d"
    if layout == "NHWC":
        return OpCase(op, layout, (_nhwc(x),), params, None, None, _nhwc(expected))
    return OpCase(op, layout, (x,), params, None, None, expected)


def _tflite_add_rescales(draw, zo, lo, hi):
    """TFLite ADD's three gemmlowp rescales from drawn float scales (its Prepare)."""
    scale = st.integers(-12, -2).map(lambda e: 2.0 ** e) | st.floats(2.0 ** -12, 0.25)
    s_a, s_b, s_o = draw(scale), draw(scale), draw(scale)
    twice_max = 2.0 * max(s_a, s_b)
    out = []
    for real in (s_a / twice_max, s_b / twice_max, twice_max / ((1 << 20) * s_o)):
        q, sh = kernels.quantize_multiplier_smaller_than_one_exp(real)
        out.append((q, sh))
    (ma, sa), (mb, sb), (mo, so) = out
    wide = dict(mode="gemmlowp", rounding="half_away", zero_point=0, lo=INT32_MIN, hi=INT32_MAX)
    return (Rescale(multiplier=(ma,), shift=(sa,), **wide),
            Rescale(multiplier=(mb,), shift=(sb,), **wide),
            Rescale("gemmlowp", "half_away", (mo,), (so,), zo, lo, hi))


def _add_ref(a, b, za, zb, ra, rb, ro):
    """TFLite ADD from the references: both operands rescaled (left shift 20), summed,
    rescaled to the output."""
    a2 = requantize_ref(a.astype(np.int64)[:, None], ra, input_offset=za, pre_shift=20)
    b2 = requantize_ref(b.astype(np.int64)[:, None], rb, input_offset=zb, pre_shift=20)
    total = kernels.add_ref(a2, b2)
    return total[:, 0], requantize_ref(total, ro)[:, 0]


@st.composite
def add_cases(draw, target, *, max_size: int = 12):
    """Element-wise add of two int8 vectors with zero points. gemmlowp: TFLite's ADD
    (left shift 20, three rescales), with ``b`` chosen so outputs land on ties of the
    final rounding; other rescales: ``rescale((a - za) + (b - zb))`` with one output
    rescale, ``b`` steered onto the rescale's boundaries."""
    t = resolve_target(target)
    size = draw(st.integers(1, max_size))
    za, zb = zero_point(draw, -128, 127), zero_point(draw, -128, 127)
    a = int8_tensor(draw, (size,))
    b = int8_tensor(draw, (size,))
    params = dict(input1_zero_point=za, input2_zero_point=zb)
    if t.rescale == "gemmlowp":
        base = draw(rescales(t, 1))
        ra, rb, ro = _tflite_add_rescales(draw, base.zero_point, base.lo, base.hi)
        every = np.arange(-128, 128, dtype=np.int64)
        b_all = requantize_ref(every[:, None], rb, input_offset=zb, pre_shift=20)[:, 0]
        a_all = requantize_ref(a.astype(np.int64)[:, None], ra, input_offset=za, pre_shift=20)
        e = -ro.shift[0]
        for i in range(size):
            if e >= 1 and draw(st.sampled_from(KINDS)) in ("tie", "near_tie"):
                high = ((a_all[i, 0] + b_all) * ro.multiplier[0] + (1 << 30)) >> 31
                ties = np.flatnonzero((high & ((1 << e) - 1)) == 1 << (e - 1))
                if ties.size:
                    b[i] = every[ties[draw(st.integers(0, ties.size - 1))]]
        acc, expected = _add_ref(a, b, za, zb, ra, rb, ro)
        params["left_shift"] = 20
        return OpCase("add", "flat", (a, b), params, ro, acc, expected,
                      extra=dict(input1=ra, input2=rb))
    r = draw(rescales(t, 1))
    for i in range(size):
        if draw(st.booleans()):
            want = steered_acc(draw, r) - (int(a[i]) - za) + zb
            if -128 <= want <= 127:
                b[i] = want
    acc = kernels.add_ref(a.astype(np.int64) - za, b.astype(np.int64) - zb)
    return OpCase("add", "flat", (a, b), params, r, acc, requantize_ref(acc[:, None], r)[:, 0])
