"""One-call checkers of a user's integer kernel against aidge_lite's reference.

Each ``check_<op>(my_fn, target=..., ...)`` draws boundary-heavy cases from
:mod:`aidge_lite.testing.kernel_cases` / :mod:`~aidge_lite.testing.kernel_op_cases`,
calls ``my_fn`` on each and compares every output exactly. On the first
mismatch Hypothesis shrinks the case and the checker raises
:class:`KernelMismatch` (an ``AssertionError``, so it fails a pytest test as
is) with the minimal case: accumulator, parameters, expected and actual value.
A function that raises, or returns the wrong shape / dtype / floats, gives
:class:`KernelOutputError` naming what was expected. On success the checker
returns the number of cases it ran. Every checker takes ``max_examples=100``,
``seed=None`` (Hypothesis' random seed; an int reproduces a run) and
``shrink=True`` (False reports the first failing case as found: faster, same
verdict); a raised error's ``examples`` attribute counts the cases it ran.

Calling conventions (``p`` is a :class:`Params`, printed without numpy noise):

- requant: ``my_fn(acc, multiplier, shift, zero_point, lo, hi) -> out``, ``acc``
  an int32 vector of one channel, the rest Python ints (``multiplier`` a float
  for the "float" rescale); ``elementwise=True`` calls ``my_fn`` once per
  accumulator with ints instead (a ctypes function ``int8_t f(int32_t, ...)``).
- conv / depthwise: ``my_fn(x, w, bias, p)``; NHWC: x (N, H, W, C), weights OHWI
  (depthwise: TFLite's 1HWO), out (N, OH, OW, K); NCHW: x (N, C, H, W), weights
  OIHW (depthwise (K, 1, KH, KW)), out (N, K, OH, OW). Bias int32 (K,).
- fully connected: ``my_fn(x, w, bias, p)``, x (M, K), w (N, K), out (M, N).
- pools: ``my_fn(x, p)``; add: ``my_fn(a, b, p)`` on int8 vectors.

``p`` holds the geometry (``stride``, ``padding`` as (top, left, bottom,
right), ``dilation``), the zero points both ways (``input_zero_point`` and
TFLite's ``input_offset = -input_zero_point``; ``output_offset`` is the output
zero point), ``multiplier`` / ``shift`` per output channel and ``act_min`` /
``act_max``. ``convention`` picks the shift convention: "tflite" (real =
multiplier * 2**(shift - 31), positive = left shift; the default for the
gemmlowp rescale) or "aidge" (real = multiplier / 2**shift; the default
otherwise). Accumulators stay in int32.
"""
from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import numpy as np


class KernelCheckError(AssertionError):
    """A user kernel failed a ``check_*`` call."""


class KernelMismatch(KernelCheckError):
    """The kernel returned a value that differs from the reference."""


class KernelOutputError(KernelCheckError):
    """The kernel raised, or returned something of the wrong shape, dtype or kind."""


class Params(SimpleNamespace):
    """The parameters handed to a user kernel, as attributes (``p.stride``...)."""

    def __repr__(self):
        return "Params(" + ", ".join(f"{k}={_plain(v)}" for k, v in vars(self).items()) + ")"


class _Found(Exception):
    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def _plain(v):
    """Numbers and lists as Python prints them (no dtype, no array(...))."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    return v


def _hypothesis():
    try:
        import hypothesis
    except ImportError:
        raise ImportError("aidge_lite.testing's kernel checkers need Hypothesis: "
                          "pip install hypothesis") from None
    return hypothesis


def _run(strategy, body, max_examples, seed, shrink):
    """Run ``body`` on up to ``max_examples`` cases; raise the (shrunk) failure."""
    hyp = _hypothesis()
    phases = [hyp.Phase.generate] + ([hyp.Phase.shrink] if shrink else [])
    calls = [0]

    @hyp.settings(max_examples=max_examples, deadline=None, database=None, derandomize=False,
                  report_multiple_bugs=False, verbosity=hyp.Verbosity.quiet, print_blob=False,
                  suppress_health_check=list(hyp.HealthCheck), phases=phases)
    @hyp.given(case=strategy)
    def run(case):
        calls[0] += 1
        error = body(case)
        if error is not None:
            raise _Found(error)

    if seed is not None:
        run = hyp.seed(seed)(run)
    try:
        run()
    except _Found as found:
        found.error.examples = calls[0]  # cases run, the shrinking passes included
        raise found.error from None
    return calls[0]


def _describe_target(t, convention):
    return (f"target rescale={t.rescale!r} rounding={t.rounding!r}, shift convention "
            f"{convention!r}")


def _output(got, shape, dtype, call):
    """``got`` as an array, or a KernelOutputError naming what was expected."""
    want = f"an array of shape {shape} and dtype {np.dtype(dtype).name}"
    if got is None:
        return KernelOutputError(f"{call} returned None; expected {want}")
    arr = np.asarray(got)
    if arr.dtype.kind in "fc":
        return KernelOutputError(f"{call} returned {arr.dtype.name} values; expected integer "
                                 f"codes: {want} (round and clamp inside the kernel)")
    if arr.dtype.kind not in "iu":
        return KernelOutputError(f"{call} returned {type(got).__name__} of dtype "
                                 f"{arr.dtype}; expected {want}")
    if arr.shape != tuple(shape):
        return KernelOutputError(f"{call} returned shape {arr.shape}; expected {want}")
    if arr.dtype != np.dtype(dtype):
        return KernelOutputError(f"{call} returned dtype {arr.dtype.name}; expected {want} "
                                 f"(a C kernel writes {np.dtype(dtype).name}: clamp, then cast)")
    return arr


def _safe_call(fn, args, describe):
    try:
        return fn(*args), None
    except Exception as exc:  # the user's bug, reported with the case that triggered it
        return None, KernelOutputError(f"your kernel raised {type(exc).__name__}: {exc}\n"
                                       f"  on {describe()}")


# ------------------------------------------------------------------------------ requant
def _exact_note(acc, r, convention):
    """The exact real value the rescale rounds, and whether it is a tie or clamps; for
    gemmlowp also its intermediate (the high multiply), where TFLite's second rounding is."""
    value = acc * r.real(0)
    words = []
    if value - value.__floor__() == Fraction(1, 2):
        words.append("an exact rounding tie")
    if not r.lo <= round(value) + r.zero_point <= r.hi:
        words.append("outside [lo, hi] before the clamp")
    shown = str(value) if value.denominator <= 1 << 20 else f"~{float(value)!r}"
    form = ("acc * multiplier" if r.mode == "float" else
            "acc * multiplier * 2**(shift - 31)" if convention == "tflite"
            else "acc * multiplier / 2**shift")
    note = f"exact {form} = {shown}" + (f" ({', '.join(words)})" if words else "")
    shift = int(r.shift[0])
    if r.mode == "gemmlowp" and shift < 0:
        from .kernel_cases import _srdhm

        high = _srdhm(acc << max(shift, 0), int(r.multiplier[0]))
        step = Fraction(high, 1 << -shift)
        tie = " (an exact tie of RoundingDivideByPOT)" if step.denominator == 2 else ""
        note += (f"; TFLite rounds twice: SaturatingRoundingDoublingHighMul = {high}, "
                 f"then {high} / 2**{-shift} = {step}{tie}")
    return note


def _requant_values(fn, acc, args, dtype, elementwise, call):
    if not elementwise:
        got, err = _safe_call(fn, (acc.astype(np.int32),) + args, lambda: call)
        if err:
            return None, err
        arr = _output(got, acc.shape, dtype, call)
        return (None, arr) if isinstance(arr, KernelCheckError) else (arr.astype(np.int64), None)
    out = []
    for a in acc:
        got, err = _safe_call(fn, (int(a),) + args, lambda a=a: call)
        if err:
            return None, err
        if isinstance(got, (bool, np.bool_)) or not isinstance(got, (int, np.integer)):
            return None, KernelOutputError(
                f"your kernel returned {got!r} ({type(got).__name__}) for acc={int(a)}; expected "
                f"an int (the {np.dtype(dtype).name} output code)")
        out.append(int(got))
    return np.array(out, np.int64), None


def check_requant(my_fn, target="default", *, dtype=np.int8, convention=None,
                  elementwise=False, max_examples=100, seed=None, shrink=True):
    """Check ``my_fn(acc, multiplier, shift, zero_point, lo, hi)`` against the reference
    requantization of ``target`` (a Target or profile name: its ``rescale`` and
    ``rounding``), output ``dtype`` int8 / uint8 / int16. See the module docstring."""
    from .kernel_cases import OUT_DTYPES, requant_cases

    t, convention = _setup(target, convention)
    if np.dtype(dtype) not in [np.dtype(d) for d in OUT_DTYPES]:
        raise ValueError(f"dtype={dtype!r}: expected int8, uint8 or int16")

    def body(case):
        r = case.rescale
        m = r.multiplier[0]
        args = (float(m) if r.mode == "float" else int(m), int(r.shifts(convention)[0]),
                r.zero_point, r.lo, r.hi)

        def call(acc):
            shown = int(acc[0]) if elementwise and acc.size == 1 else _plain(acc)
            return (f"my_fn(acc={shown}, multiplier={args[0]}, shift={args[1]}, "
                    f"zero_point={args[2]}, lo={args[3]}, hi={args[4]})")

        got, err = _requant_values(my_fn, case.acc, args, dtype, elementwise, call(case.acc))
        if err:
            return err
        bad = np.flatnonzero(got != case.expected)
        if not bad.size:
            return None
        i = int(bad[0])
        one = case.acc[i:i + 1]
        got1, err1 = _requant_values(my_fn, one, args, dtype, elementwise, call(one))
        alone = err1 is None and got1[0] != case.expected[i]
        if not alone:  # wrong only inside the whole vector: show that call instead
            one = case.acc
        return KernelMismatch(
            f"check_requant: your kernel disagrees with aidge_lite's reference "
            f"({_describe_target(t, convention)}, dtype {np.dtype(dtype).name})\n"
            f"  minimal case: acc={int(case.acc[i])} multiplier={args[0]} shift={args[1]} "
            f"zero_point={args[2]} lo={args[3]} hi={args[4]}\n"
            f"  expected {int(case.expected[i])}, got {int(got[i])}\n"
            f"  {_exact_note(int(case.acc[i]), r, convention)}\n"
            f"  call: {call(one)}\n"
            f"  {bad.size} of {case.acc.size} outputs differ in the shrunk case")

    return _run(requant_cases(t, dtype=dtype), body, max_examples, seed, shrink)


# ----------------------------------------------------------------------------- op kernels
_INPUT_NAMES = {"conv2d": ("x", "w", "bias"), "depthwise_conv2d": ("x", "w", "bias"),
                "fully_connected": ("x", "w", "bias"), "avgpool2d": ("x",), "maxpool2d": ("x",),
                "add": ("a", "b")}


def _op_params(case, convention) -> Params:
    p = dict(case.params)
    for key in list(p):
        if key.endswith("zero_point"):
            p[key.replace("zero_point", "offset")] = -p[key]  # TFLite adds -zero_point
    r = case.rescale
    if r is not None:
        scalar = case.op == "add"
        p.update(output_zero_point=r.zero_point, output_offset=r.zero_point,
                 act_min=r.lo, act_max=r.hi)
        m, s = r.multipliers(), r.shifts(convention)
        p["multiplier"] = m[0].item() if scalar else m
        p["shift"] = int(s[0]) if scalar else s
    for name, extra in case.extra.items():  # TFLite ADD's operand rescales
        p[f"{name}_multiplier"] = int(extra.multiplier[0])
        p[f"{name}_shift"] = int(extra.shifts(convention)[0])
    return Params(**p)


def _arrays_text(case):
    lines = []
    for name, a in zip(_INPUT_NAMES[case.op], case.inputs):
        text = f"  {name}: shape {a.shape} {a.dtype.name}"
        lines.append(text + (f" = {a.tolist()}" if a.size <= 96 else ""))
    return "\n".join(lines)


def _channel(case, idx):
    if case.rescale is None:
        return None
    if case.op == "add" or len(case.rescale.multiplier) == 1:
        return 0
    return idx[1] if case.layout == "NCHW" else idx[-1]


def _check_op(my_fn, strategy, name, target, convention, max_examples, seed, shrink):
    def body(case):
        p = _op_params(case, convention)
        args = tuple(a.copy() for a in case.inputs) + (p,)
        shapes = ", ".join(f"{n}{a.shape}" for n, a in zip(_INPUT_NAMES[case.op], case.inputs))
        call = f"my_fn({shapes}, p)"
        got, err = _safe_call(my_fn, args, lambda: f"{call}\n{_arrays_text(case)}\n  p = {p!r}")
        if err:
            return err
        arr = _output(got, case.expected.shape, np.int8, call)
        if isinstance(arr, KernelCheckError):
            return arr
        bad = np.argwhere(arr.astype(np.int64) != case.expected)
        if not len(bad):
            return None
        idx = tuple(int(i) for i in bad[0])
        lines = [f"check_{name}: your kernel disagrees with aidge_lite's reference "
                 f"({_describe_target(target, convention)}, layout {case.layout})",
                 f"  first mismatch at output index {idx} ({len(bad)} of {arr.size} outputs "
                 f"differ in the shrunk case): expected {int(case.expected[idx])}, got "
                 f"{int(arr[idx])}"]
        c = _channel(case, idx)
        if case.acc is not None:
            acc = int(case.acc[idx])
            lines.append(f"  accumulator there: {acc} (bias included; zero points subtracted)")
            r = case.rescale
            lines.append(f"  channel {c}: multiplier={_plain(r.multipliers()[c])} "
                         f"shift={int(r.shifts(convention)[c])} output zero_point={r.zero_point}"
                         f" act_min={r.lo} act_max={r.hi}; "
                         f"{_exact_note(acc, r.channel(c), convention)}")
        lines += [f"  call: {call}", _arrays_text(case), f"  p = {p!r}"]
        return KernelMismatch("\n".join(lines))

    return _run(strategy, body, max_examples, seed, shrink)


def _setup(target, convention):
    from .kernel_cases import CONVENTIONS, default_convention, resolve_target

    t = resolve_target(target)
    convention = convention or default_convention(t)
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r}: expected one of {CONVENTIONS}")
    return t, convention


def check_conv2d(my_fn, target="default", *, layout="NHWC", convention=None, per_channel=True,
                 max_examples=100, seed=None, shrink=True):
    """Check ``my_fn(x, w, bias, p)``, an int8 2-D convolution with requantization
    (NHWC + OHWI or NCHW + OIHW), against ``conv2d_ref`` + the target's rescale."""
    from .kernel_op_cases import conv2d_cases

    t, convention = _setup(target, convention)
    return _check_op(my_fn, conv2d_cases(t, layout, per_channel=per_channel), "conv2d", t,
                     convention, max_examples, seed, shrink)


def check_depthwise_conv2d(my_fn, target="default", *, layout="NHWC", convention=None,
                           per_channel=True, max_examples=100, seed=None, shrink=True):
    """Check ``my_fn(x, w, bias, p)``, a depthwise conv (``p.depth_multiplier`` 1 or 2;
    weights 1HWO in NHWC, (K, 1, KH, KW) in NCHW)."""
    from .kernel_op_cases import conv2d_cases

    t, convention = _setup(target, convention)
    return _check_op(my_fn, conv2d_cases(t, layout, depthwise=True, per_channel=per_channel),
                     "depthwise_conv2d", t, convention, max_examples, seed, shrink)


def check_fully_connected(my_fn, target="default", *, convention=None, per_channel=True,
                          max_examples=100, seed=None, shrink=True):
    """Check ``my_fn(x, w, bias, p)``: x (M, K) int8, w (N, K) int8, bias (N,) int32."""
    from .kernel_op_cases import fully_connected_cases

    t, convention = _setup(target, convention)
    return _check_op(my_fn, fully_connected_cases(t, per_channel=per_channel), "fully_connected",
                     t, convention, max_examples, seed, shrink)


def check_avgpool2d(my_fn, target="default", *, layout="NHWC", count_include_pad=False,
                    max_examples=100, seed=None, shrink=True):
    """Check ``my_fn(x, p)``, an int8 average pool rounded by ``target.rounding``
    (TFLite: half away, padding not counted), clamped to [p.act_min, p.act_max]."""
    from .kernel_op_cases import pool2d_cases

    t, convention = _setup(target, None)
    return _check_op(my_fn, pool2d_cases(t, layout, count_include_pad=count_include_pad),
                     "avgpool2d", t, convention, max_examples, seed, shrink)


def check_maxpool2d(my_fn, target="default", *, layout="NHWC", max_examples=100, seed=None,
                    shrink=True):
    """Check ``my_fn(x, p)``, an int8 max pool (padding never wins), clamped."""
    from .kernel_op_cases import pool2d_cases

    t, convention = _setup(target, None)
    return _check_op(my_fn, pool2d_cases(t, layout, average=False), "maxpool2d", t, convention,
                     max_examples, seed, shrink)


def check_add(my_fn, target="default", *, convention=None, max_examples=100, seed=None,
              shrink=True):
    """Check ``my_fn(a, b, p)`` on int8 vectors. gemmlowp targets: TFLite's ADD
    (``p.left_shift`` 20, ``p.input1_multiplier`` / ``input1_shift`` and the same for
    input 2, then ``p.multiplier`` / ``p.shift`` to the output); other targets:
    ``clamp(rescale((a - za) + (b - zb)) + output_offset)``."""
    from .kernel_op_cases import add_cases

    t, convention = _setup(target, convention)
    return _check_op(my_fn, add_cases(t), "add", t, convention, max_examples, seed, shrink)
