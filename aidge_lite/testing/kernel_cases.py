"""Hypothesis strategies for integer-kernel cases that sit on the boundaries.

Uniform sampling almost never lands on the values where hand-written kernels go
wrong: exact rounding ties, one step off a tie, an output exactly at a clamp
bound, an accumulator at INT32_MIN, a shift of 0 or 31, a multiplier at 2^30 or
just below 2^31, a zero point at an end of its range. Every strategy here draws
the rescale first, then *solves* for accumulators (requant) or biases and
window values (conv, depthwise, fully connected, pools, add) that land on those
values, for every rescale mode of :class:`aidge_lite.target.Target`.

The expected output of every case comes from the kernels' NumPy twins
(``requant_int_ref``, ``requant_float_ref``, ``requant_gemmlowp_ref``,
``conv2d_ref``, ``gemm_ref``, ``avgpool2d_ref``, ``maxpool2d_ref``,
``add_ref``); the steering arithmetic below only decides *which* inputs to try.

Shift conventions: "aidge" (ours) is ``real = multiplier / 2**shift`` (a
positive shift divides); "tflite" is ``real = multiplier * 2**(shift - 31)``
(TFLite's ``QuantizeMultiplier``: a positive shift is a left shift). The two
differ by ``tflite_shift = 31 - shift``. A "float" rescale has a float64
multiplier and shift 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from aidge_lite import kernels
from aidge_lite.target import PROFILES, Target

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
CONVENTIONS = ("aidge", "tflite")
OUT_DTYPES = (np.int8, np.uint8, np.int16)


def resolve_target(target) -> Target:
    """A :class:`Target`, or the name of one of ``aidge_lite.target.PROFILES``."""
    if isinstance(target, Target):
        return target
    if isinstance(target, str) and target in PROFILES:
        return PROFILES[target]
    raise ValueError(f"target={target!r}: expected an aidge_lite.Target or one of the "
                     f"profile names {sorted(PROFILES)}")


def default_convention(target: Target) -> str:
    """TFLite's shift convention for the gemmlowp rescale, ours for the others."""
    return "tflite" if target.rescale == "gemmlowp" else "aidge"


@dataclass(frozen=True)
class Rescale:
    """Per-channel requantization: ``clamp(rescale(acc) + zero_point, lo, hi)``.

    ``shift`` is stored in the mode's native convention: TFLite's (positive =
    left) for "gemmlowp", ours (positive = right) for "fixed_point", "shift"
    and "double_shift", 0 for "float" (``multiplier`` then holds the float64
    scale). Use :meth:`shifts` for a given convention.
    """

    mode: str
    rounding: str
    multiplier: tuple
    shift: tuple
    zero_point: int
    lo: int
    hi: int

    @property
    def native(self) -> str:
        return "tflite" if self.mode == "gemmlowp" else "aidge"

    def multipliers(self) -> np.ndarray:
        return np.array(self.multiplier, np.float64 if self.mode == "float" else np.int64)

    def shifts(self, convention: str) -> np.ndarray:
        s = np.array(self.shift, np.int64)
        if self.mode == "float" or convention == self.native:
            return s
        return 31 - s

    def real(self, c: int) -> Fraction:
        """The exact real multiplier of channel ``c``."""
        m, s = self.multiplier[c], int(self.shift[c])
        if self.mode == "float":
            return Fraction(m)
        if self.mode == "gemmlowp":
            s -= 31
            return Fraction(m) * (Fraction(2) ** s)
        return Fraction(m) / (Fraction(2) ** s)

    def channel(self, c: int) -> "Rescale":
        return Rescale(self.mode, self.rounding, (self.multiplier[c],), (self.shift[c],),
                       self.zero_point, self.lo, self.hi)


def requantize_ref(acc, rescale: Rescale, *, input_offset: int = 0, pre_shift: int = 0):
    """Reference outputs (int64) of accumulators ``acc`` (R, C), channel ``c`` on axis 1.

    ``input_offset`` (subtracted) and ``pre_shift`` are TFLite ADD's, gemmlowp only.
    """
    acc = np.ascontiguousarray(acc, np.int64)
    m = rescale.multipliers()
    s = np.array(rescale.shift, np.int64)
    if rescale.mode == "gemmlowp":
        params = np.array([input_offset, pre_shift, rescale.zero_point, rescale.lo, rescale.hi],
                          np.int64)
        return kernels.requant_gemmlowp_ref(acc, m, s, params, np.empty(acc.shape, np.int64))
    zp = rescale.zero_point
    bounds = np.array([rescale.lo - zp, rescale.hi - zp], np.int64)
    a3 = np.ascontiguousarray((acc - input_offset)[:, :, None])
    out = np.empty(a3.shape, np.int64)
    mode = kernels.ROUNDING_NAMES[rescale.rounding]
    if rescale.mode == "float":
        kernels.requant_float_ref(a3, m, mode, bounds, out)
    else:
        kernels.requant_int_ref(a3, m, s, mode, bounds, out)
    return out[:, :, 0] + zp


# ----------------------------------------------------------------------- rescale params
def _q31(draw):
    """A Q31 multiplier in [2**30, 2**31): the ends, a small odd times a power of two
    (exact ties reachable), or a realistic arbitrary mantissa."""
    kind = draw(st.sampled_from(["low", "high", "near_low", "near_high", "odd", "odd",
                                 "any", "any"]))
    if kind == "low":
        return 1 << 30
    if kind == "high":
        return INT32_MAX
    if kind == "near_low":
        return (1 << 30) + draw(st.integers(1, 64))
    if kind == "near_high":
        return INT32_MAX - draw(st.integers(1, 64))
    if kind == "odd":  # u * 2**t with u odd and small: the scale is a short fraction
        u = draw(st.sampled_from([1, 3, 5, 7, 9, 11, 13, 15]))
        return u << (30 - (u.bit_length() - 1))
    return draw(st.integers(1 << 30, INT32_MAX))


def _float_scale(draw):
    kind = draw(st.sampled_from(["dyadic", "dyadic", "any", "one", "near_pow2"]))
    if kind == "dyadic":  # exact ties reachable
        return float(draw(st.sampled_from([1, 3, 5, 7, 9, 11, 13, 15]))
                     * 2.0 ** -draw(st.integers(1, 20)))
    if kind == "one":
        return 1.0
    if kind == "near_pow2":
        p = 2.0 ** -draw(st.integers(0, 16))
        return float(np.nextafter(p, draw(st.sampled_from([0.0, 1.0e9]))))
    return draw(st.floats(2.0 ** -16, 2.0, allow_nan=False, allow_infinity=False))


def _channel_rescale(draw, mode: str, conv: bool) -> tuple:
    """(multiplier, native shift) of one channel. ``conv``: a scale below 1, as a
    conv/fc output rescale has (TFLite shift <= 0); otherwise left shifts too."""
    if mode == "float":
        return _float_scale(draw), 0
    if mode == "gemmlowp":
        if not conv and draw(st.integers(0, 9)) == 0:
            return 0, 0  # QuantizeMultiplier(0.0)
        m = _q31(draw)
        edges = [0, -31, -1] + ([] if conv else [1, 30])
        shift = draw(st.one_of(st.sampled_from(edges), st.integers(-16, 0)))
        return m, shift
    if mode == "fixed_point":
        m = _q31(draw)
        edges = [31, 62] + ([] if conv else [0, 30, -1, -31])
        return m, draw(st.one_of(st.sampled_from(edges), st.integers(31, 47)))
    if mode == "shift":
        edges = [0, 1, 31] + ([] if conv else [-1, -8])
        return 1, draw(st.one_of(st.sampled_from(edges), st.integers(1, 20)))
    # double_shift: (2**a + 1) / 2**(a + b), or a plain shift
    a = draw(st.integers(0, 8))
    m = (1 << a) + 1 if a else 1
    b = draw(st.integers(0 if conv else -2, 16))
    return m, a + b


def zero_point(draw, lo: int, hi: int) -> int:
    """0 (or ``lo`` for an unsigned range), an end of [lo, hi], or anything in it."""
    kind = draw(st.sampled_from(["zero", "zero", "low", "high", "any"]))
    if kind == "any":
        return draw(st.integers(lo, hi))
    return {"zero": 0 if lo <= 0 <= hi else lo, "low": lo, "high": hi}[kind]


@st.composite
def rescales(draw, target, channels: int = 1, *, dtype=np.int8, conv: bool = False,
             per_channel: bool = True):
    """A :class:`Rescale` for ``target`` with ``channels`` channels: zero point
    at the ends of the ``dtype`` range or 0, clamp bounds the full range, a ReLU
    range or a random sub-range."""
    t = resolve_target(target)
    info = np.iinfo(dtype)
    zp = zero_point(draw, int(info.min), int(info.max))
    bounds = draw(st.sampled_from(["full", "full", "relu", "sub"]))
    lo, hi = int(info.min), int(info.max)
    if bounds == "relu":
        lo = zp
    elif bounds == "sub":
        lo = draw(st.integers(int(info.min), int(info.max)))
        hi = draw(st.integers(lo, int(info.max)))
    first = _channel_rescale(draw, t.rescale, conv)
    pairs = [first] + [_channel_rescale(draw, t.rescale, conv) if per_channel else first
                       for _ in range(channels - 1)]
    return Rescale(t.rescale, t.rounding, tuple(m for m, _ in pairs),
                   tuple(s for _, s in pairs), zp, lo, hi)


# ---------------------------------------------------------------- accumulator steering
KINDS = ("tie", "tie", "tie", "near_tie", "near_tie", "bound", "bound", "extreme", "random")


def acc_range(rescale: Rescale, c: int) -> tuple:
    """Accumulators a C kernel can hold (int32), and for gemmlowp also shift left
    without leaving int32 (TFLite's undefined behaviour)."""
    lo, hi = INT32_MIN, INT32_MAX
    if rescale.mode == "gemmlowp" and rescale.shift[c] > 0:
        lo, hi = -(1 << 31 >> rescale.shift[c]), INT32_MAX >> rescale.shift[c]
    return lo, hi


def _nearest(y: Fraction, real: Fraction) -> int:
    """The integer acc with ``acc * real`` closest to ``y``."""
    if real == 0:
        return 0
    a0 = (y / real).__floor__()
    return min(range(a0 - 1, a0 + 3), key=lambda a: abs(a * real - y))


def _exact_tie(q: int, real: Fraction, window: tuple):
    """An acc with ``acc * real == q' + 1/2`` exactly for the q' nearest to q (within
    ``window`` of output values), or None when the multiplier makes it unreachable."""
    if real <= 0:
        return None
    num, den = real.numerator, real.denominator  # real = u * 2**e, u odd
    e = 0
    while num % 2 == 0:
        num //= 2
        e += 1
    while den % 2 == 0:
        den //= 2
        e -= 1
    if den != 1 or -e - 1 < 0:
        return None
    u = num
    j = round((2 * q + 1) / u)
    j = j + 1 if j % 2 == 0 else j  # odd: 2q' + 1 = u * j
    q2 = (u * j - 1) // 2
    if not window[0] <= q2 <= window[1]:
        return None
    return j << (-e - 1)


def _srdhm(a: int, b: int) -> int:
    """gemmlowp's high multiply, round half up (steering only: the expected value
    always comes from requant_gemmlowp_ref)."""
    return (a * b + (1 << 30)) >> 31


def _gemmlowp_tie(h: int, m: int, left: int, inner: bool):
    """x with SRDHM(x << left, m) == h; ``inner`` prefers an x whose exact product
    lies on the zero side of h (the first rounding moved it onto the tie)."""
    if m == 0:
        return None
    scale = m << left
    x0 = (h << 31) // scale
    found = [x for x in range(x0 - 2, x0 + 4) if _srdhm(x << left, m) == h]
    if inner:
        found.sort(key=lambda x: abs(x * scale) >= abs(h) << 31)
    return found[0] if found else None


def steered_acc(draw, rescale: Rescale, c: int = 0, kind: str | None = None) -> int:
    """One accumulator for channel ``c`` of ``rescale`` of a drawn (or given) kind:
    an exact rounding tie, one off a tie, an output at or one past a clamp bound,
    an int32 extreme, or anything."""
    kind = kind or draw(st.sampled_from(KINDS))
    lo_acc, hi_acc = acc_range(rescale, c)
    zp, lo, hi = rescale.zero_point, rescale.lo, rescale.hi
    window = (lo - zp - 2, hi - zp + 1)
    real = rescale.real(c)
    if kind == "extreme":
        acc = draw(st.sampled_from([lo_acc, lo_acc + 1, hi_acc, hi_acc - 1, 0, 1, -1]))
        return min(max(acc, lo_acc), hi_acc)
    if kind == "random":
        if draw(st.booleans()):
            return draw(st.integers(lo_acc, hi_acc))
        acc = draw(st.integers(-(1 << 16), 1 << 16))
        return min(max(acc, lo_acc), hi_acc)
    q = draw(st.one_of(st.integers(-3, 3), st.integers(*window),
                       st.sampled_from([window[0], window[0] + 1, window[0] + 2,
                                        window[1] - 2, window[1] - 1, window[1]])))
    acc = None
    if kind == "bound":
        y = Fraction(q) + draw(st.sampled_from([Fraction(0), Fraction(1, 2), Fraction(-1, 2)]))
        acc = _nearest(y, real)
    else:
        e = max(-int(rescale.shift[c]), 0) if rescale.mode == "gemmlowp" else 0
        if e >= 1:  # TFLite: the tie that matters is RoundingDivideByPOT's, on the high mul
            h = (2 * q + 1) << (e - 1)
            if kind == "near_tie":
                h += draw(st.sampled_from([-1, 1]))
            acc = _gemmlowp_tie(h, rescale.multiplier[c], max(int(rescale.shift[c]), 0),
                                inner=draw(st.sampled_from([True, True, False])))
        else:
            acc = _exact_tie(q, real, window)
            if acc is None:
                acc = _nearest(Fraction(2 * q + 1, 2), real)
            if kind == "near_tie":
                acc += draw(st.sampled_from([-1, 1]))
        if acc is None:
            acc = _nearest(Fraction(2 * q + 1, 2), real)
    return min(max(acc, lo_acc), hi_acc)


@dataclass(frozen=True)
class RequantCase:
    """Accumulators (one channel) with their rescale and the reference outputs."""

    acc: np.ndarray  # (n,) int64, all in int32
    rescale: Rescale
    dtype: np.dtype
    expected: np.ndarray  # (n,) int64


def gemmlowp_ok(acc2d, rescale: Rescale) -> bool:
    """Whether TFLite computes every intermediate in int32 (no undefined behaviour)."""
    if rescale.mode != "gemmlowp":
        return True
    params = np.array([0, 0, rescale.zero_point, rescale.lo, rescale.hi], np.int64)
    try:
        kernels.check_gemmlowp_args(np.ascontiguousarray(acc2d, np.int64), rescale.multipliers(),
                                    np.array(rescale.shift, np.int64), params)
    except ValueError:
        return False
    return True


@st.composite
def requant_cases(draw, target, *, dtype=np.int8, max_size: int = 8):
    """:class:`RequantCase` s: 1..``max_size`` accumulators sharing one drawn rescale,
    most of them steered to a tie, one off a tie, a clamp bound or an int32 extreme."""
    r = draw(rescales(target, 1, dtype=dtype))
    n = draw(st.integers(1, max_size))
    acc = np.array([steered_acc(draw, r) for _ in range(n)], np.int64)
    assume(gemmlowp_ok(acc[:, None], r))
    expected = requantize_ref(acc[:, None], r)[:, 0]
    return RequantCase(acc, r, np.dtype(dtype), expected)


# ------------------------------------------------------------------- tensors and biases
def int8_tensor(draw, shape, lo=-128, hi=127):
    """int8 values: one constant, extremes only (large accumulators), small, all
    negative, or anything. Few choices per tensor (a fill kind and a seed), so a
    failing case shrinks fast; the constant fill is what it shrinks towards."""
    fill = draw(st.sampled_from(["constant", "extreme", "small", "negative", "any", "any"]))
    if fill == "constant":
        return np.full(shape, draw(st.sampled_from([0, 1, -1, lo, hi])), np.int8)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if fill == "extreme":
        values = rng.choice(np.array([lo, hi, lo + 1, hi - 1]), shape)
    elif fill == "small":
        values = rng.integers(max(lo, -3), min(hi, 3) + 1, shape)
    elif fill == "negative":
        values = rng.integers(lo, min(hi, -1) + 1, shape)
    else:
        values = rng.integers(lo, hi + 1, shape)
    return values.astype(np.int8)


def steer_biases(draw, partial, rescale: Rescale):
    """int32 biases ``(C,)`` for int64 partial accumulators ``(R, C)`` (channels last):
    per channel, one drawn row is steered onto a boundary value of the rescale; every
    accumulator stays in int32."""
    bias = np.zeros(partial.shape[1], np.int64)
    for c in range(partial.shape[1]):
        col = partial[:, c]
        if not col.size or draw(st.integers(0, 5)) == 0:
            bias[c] = draw(st.integers(-1000, 1000))
        else:
            kind = draw(st.sampled_from(KINDS))
            want = steered_acc(draw, rescale, c, kind)
            # an int32 extreme is reached by the row nearest to it: the others stay inside
            row = (int(np.argmin(col)) if want < 0 else int(np.argmax(col))) \
                if kind == "extreme" else draw(st.integers(0, col.size - 1))
            bias[c] = want - int(col[row])
        lo_acc, hi_acc = acc_range(rescale, c)
        if col.size:
            bias[c] = min(max(bias[c], lo_acc - int(col.min())), hi_acc - int(col.max()))
        bias[c] = min(max(bias[c], INT32_MIN), INT32_MAX)
    return bias.astype(np.int32)
