"""Operators of zero-point integer graphs (imported int8 TFLite models), both engines.

What differs from our own quantized graphs: activations carry zero points
(subtracted before an affine op: `input_zero_point`), window ops may run on
NHWC tensors (`layout="NHWC"`, weights in TFLite's OHWI / 1HWO layouts),
quantizers use TFLite's gemmlowp rescale (`mode="gemmlowp"`), and a few ops
exist only here (LOOKUP tables, integer SOFTMAX, REDUCE_SUM, DEQUANTIZE).

Everything a kernel sees is prepared and checked by the functions below, which
both engines call: they differ only in the backend (NumPy twin or Numba kernel).
Existing NCHW impls are wrapped, so a graph without these attributes runs
exactly as before.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..errors import ExecutionError
from ..ir import OpType
from ..kernels.gemmlowp import check_gemmlowp_args
from .integer import IntegerInterpreter
from .reference import ReferenceInterpreter

op = OpType
ENGINES = (ReferenceInterpreter, IntegerInterpreter)
_TO_OIHW = {"OIHW": None, "OHWI": (0, 3, 1, 2), "1HWO": (3, 0, 1, 2)}


def _fail(node, message):
    return ExecutionError(f"node '{node.name}' ({node.op.value}): {message}")


def offset(x: np.ndarray, zero_point: int) -> np.ndarray:
    """x - zero_point, exact: int8/uint8 codes become int16, floats stay float64."""
    if not zero_point:
        return x
    if x.dtype.kind in "iu":  # 8-bit codes stay on the kernels' int16 fast path
        return np.subtract(x, zero_point, dtype=np.int16 if x.dtype.itemsize == 1 else np.int64)
    return x - zero_point


def _nchw_weights(self, node, w):
    cache = self.__dict__.setdefault("_nchw_weights", {})
    if node.name not in cache:
        axes = _TO_OIHW.get(node.attrs.get("weight_layout", "OIHW"), "bad")
        if axes == "bad" or w.ndim != 4:
            raise _fail(node, f"weights {w.shape} in layout {node.attrs.get('weight_layout')!r}")
        cache[node.name] = w if axes is None else np.ascontiguousarray(w.transpose(axes))
    return cache[node.name]


def _channels_last_window(inner, *, conv: bool):
    """Wrap an NCHW window impl (conv or pool) to also serve NHWC nodes."""

    def impl(self, node, x, *rest):
        nhwc = node.attrs.get("layout") == "NHWC"
        zero_point = node.attrs.get("input_zero_point", 0)
        if not nhwc and not zero_point:
            return inner(self, node, x, *rest)
        if x.ndim != 4:
            raise _fail(node, f"input rank {x.ndim}, expected 4")
        dtype = x.dtype
        x = offset(x, zero_point)
        if not nhwc:
            return inner(self, node, np.ascontiguousarray(x), *rest)
        if conv:
            rest = (_nchw_weights(self, node, rest[0]),) + tuple(rest[1:])
        y = inner(self, node, np.ascontiguousarray(x.transpose(0, 3, 1, 2)), *rest).transpose(0, 2, 3, 1)
        # a pool of 8-bit codes is an 8-bit code (the integer kernels return int64)
        return np.ascontiguousarray(y, dtype=dtype if not conv and dtype.kind in "iu" else None)

    return impl


def _zero_point_gemm(inner):
    def impl(self, node, x, w, *rest):
        x = offset(x, node.attrs.get("input_zero_point", 0))
        w = offset(w, node.attrs.get("weight_zero_point", 0))
        return inner(self, node, x, w, *rest)

    return impl


def _broadcasting(inner):
    """ADD/SUB on operands of different shapes (TFLite broadcasts them)."""

    def impl(self, node, a, b):
        if a.shape != b.shape and node.attrs.get("broadcast"):
            try:
                a, b = (np.ascontiguousarray(v) for v in np.broadcast_arrays(a, b))
            except ValueError:
                raise _fail(node, f"operand shapes {a.shape} and {b.shape} do not broadcast") from None
        return inner(self, node, a, b)

    return impl


for _engine in ENGINES:
    table = _engine.impls
    table[op.CONV] = _channels_last_window(table[op.CONV], conv=True)
    for _pool in (op.AVGPOOL, op.MAXPOOL):
        table[_pool] = _channels_last_window(table[_pool], conv=False)
    table[op.GEMM] = _zero_point_gemm(table[op.GEMM])


@IntegerInterpreter.register(op.SUB)
def _int_sub(self, node, a, b):
    if a.shape != b.shape or a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise _fail(node, f"operands {a.dtype}{a.shape} and {b.dtype}{b.shape}")
    return np.subtract(a, b, dtype=np.int64)


for _engine in ENGINES:
    _engine.impls[op.ADD] = _broadcasting(_engine.impls[op.ADD])
    _engine.impls[op.SUB] = _broadcasting(_engine.impls[op.SUB])


def _mul(inner):
    def impl(self, node, a, b):
        zero_points = node.attrs.get("input_zero_points")
        if zero_points is None:
            return inner(self, node, a, b)
        a, b = offset(a, zero_points[0]), offset(b, zero_points[1])
        if a.dtype.kind in "iu":
            return np.multiply(a, b, dtype=np.int64)  # |(a - za)(b - zb)| <= 2^16: exact
        return a * b

    return impl


def _int_mul_without_zero_points(self, node, a, b):
    raise _fail(node, "an integer MUL needs input_zero_points")


ReferenceInterpreter.impls[op.MUL] = _mul(ReferenceInterpreter.impls[op.MUL])
IntegerInterpreter.impls[op.MUL] = _mul(_int_mul_without_zero_points)


# ------------------------------------------------------------ quantizers
def gemmlowp_args(node, x: np.ndarray):
    """(acc (R, C) int64, multiplier (C,), shift (C,), params, out) for requant_gemmlowp,
    checked (both engines): one multiplier for the tensor, or one per channel of
    `axis` (attr, default -1: TFLite's NHWC; our own NCHW graphs use 1). `acc` has the
    channel axis moved last; `restore(out)` gives the result in `x`'s layout."""
    attrs = node.attrs
    multiplier = np.atleast_1d(np.asarray(attrs["multiplier"], np.int64))
    shift = np.atleast_1d(np.asarray(attrs["shift"], np.int64))
    channels = multiplier.size
    axis = attrs.get("axis", -1)
    if shift.size != channels or (channels > 1 and (x.ndim == 0 or not -x.ndim <= axis < x.ndim
                                                      or x.shape[axis] != channels)):
        raise _fail(node, f"{channels} multipliers / {shift.size} shifts on axis {axis} of a "
                          f"tensor of shape {x.shape}")
    moved = channels > 1 and axis % x.ndim != x.ndim - 1
    view = np.moveaxis(x, axis, -1) if moved else x
    acc = np.ascontiguousarray(view, dtype=np.int64).reshape(-1, channels)
    params = np.array([attrs.get("input_zero_point", 0), attrs.get("pre_shift", 0),
                       attrs.get("zero_point", 0), attrs["lo"], attrs["hi"]], np.int64)
    out = np.empty(acc.shape, np.dtype(attrs["dtype"]))
    try:
        check_gemmlowp_args(acc, multiplier, shift, params, out)
    except ValueError as exc:
        raise _fail(node, str(exc)) from None

    def restore(y):
        y = y.reshape(view.shape)
        return np.ascontiguousarray(np.moveaxis(y, -1, axis)) if moved else y

    return acc, np.ascontiguousarray(multiplier), np.ascontiguousarray(shift), params, out, restore


def tflite_quantize(node, x: np.ndarray) -> np.ndarray:
    """QUANTIZE float32 -> int8 as TFLite: round(x / scale) in float32, half away, + zp."""
    x32 = np.asarray(x, np.float32)
    if not np.all(np.isfinite(x32)):
        raise _fail(node, "non-finite input value")
    q = x32 / np.float32(node.attrs["scale"])
    rounded = np.sign(q) * np.floor(np.abs(q).astype(np.float64) + 0.5)
    y = np.clip(rounded + node.attrs["zero_point"], node.attrs["lo"], node.attrs["hi"])
    return y.astype(np.dtype(node.attrs["dtype"]))


def double_requant(node, x, requant_float) -> np.ndarray:
    """clamp(round(float64(acc) * real[c]) + zp): one rounding, half away from zero
    (LiteRT's reference FULLY_CONNECTED since TF 2.20 requantizes this way)."""
    attrs = node.attrs
    real = np.ascontiguousarray(np.atleast_1d(np.asarray(attrs["multiplier"], np.float64)))
    channels = real.size
    if channels > 1 and (x.ndim == 0 or x.shape[-1] != channels):
        raise _fail(node, f"{channels} multipliers for a tensor of shape {x.shape}")
    if not np.all(np.isfinite(real)) or x.dtype.kind not in "iuf":
        raise _fail(node, "non-finite multiplier or non-numeric input")
    acc = np.ascontiguousarray(x, np.int64).reshape(-1, channels, 1)
    scaled = acc[:, :, 0] * real
    # TFLite casts round(acc * real) to int32: undefined behaviour beyond its range
    if scaled.size and (scaled.max() >= 2.0 ** 31 - 0.5 or scaled.min() <= -(2.0 ** 31) - 0.5):
        raise _fail(node, f"acc * multiplier reaches [{scaled.min():.6g}, {scaled.max():.6g}], "
                          "beyond int32: TFLite's (int32) cast of its rounding is undefined behaviour")
    zp = int(attrs["zero_point"])
    bounds = np.array([attrs["lo"] - zp, attrs["hi"] - zp], np.int64)
    out = np.empty(acc.shape, np.int64)
    requant_float(acc, real, kernels.HALF_AWAY, bounds, out)
    return (out + zp).astype(np.dtype(attrs["dtype"])).reshape(x.shape)


def _quantizer(inner, requant, requant_float):
    def impl(self, node, x):
        mode = node.attrs.get("mode", "float")
        if mode == "gemmlowp":
            if x.dtype.kind == "f" and not np.array_equal(x, np.round(x)):
                raise _fail(node, "gemmlowp rescale of a non-integer tensor")
            acc, multiplier, shift, params, out, restore = gemmlowp_args(node, x)
            requant(acc, multiplier, shift, params, out)
            return self.holding(restore(out))
        if mode == "tflite_quantize":
            return self.holding(tflite_quantize(node, x))
        if mode == "double":
            return self.holding(double_requant(node, x, requant_float))
        return inner(self, node, x)

    return impl


ReferenceInterpreter.holding = lambda self, y: y.astype(np.float64)  # fake-quant: float64 holding ints
IntegerInterpreter.holding = lambda self, y: y
ReferenceInterpreter.impls[op.QUANTIZER] = _quantizer(
    ReferenceInterpreter.impls[op.QUANTIZER], kernels.requant_gemmlowp_ref, kernels.requant_float_ref)
IntegerInterpreter.impls[op.QUANTIZER] = _quantizer(
    IntegerInterpreter.impls[op.QUANTIZER], kernels.requant_gemmlowp, kernels.requant_float)


# ------------------------------------------------------------ other ops
def _codes(node, x, offset_: int, size: int) -> np.ndarray:
    """Table indices x + offset, checked to lie in [0, size)."""
    idx = np.asarray(x).astype(np.int64) + offset_
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise _fail(node, f"input values outside the table's domain [{-offset_}, {size - offset_ - 1}]")
    return idx


def _lookup(kernel):
    def impl(self, node, x):
        table = np.asarray(node.attrs["table"])
        idx = _codes(node, x, int(node.attrs["offset"]), table.size)
        out = np.empty(idx.shape, table.dtype)
        kernel(np.ascontiguousarray(idx.ravel()), np.ascontiguousarray(table), out.reshape(-1))
        return self.holding(out)

    return impl


ReferenceInterpreter.register(op.LOOKUP)(_lookup(kernels.lookup_ref))
IntegerInterpreter.register(op.LOOKUP)(_lookup(kernels.lookup))


def _reduce_sum(self, node, x):
    axes = tuple(node.attrs["axes"])
    if any(not 0 <= a < x.ndim for a in axes):
        raise _fail(node, f"axes {axes} for an input of rank {x.ndim}")
    dtype = np.int64 if x.dtype.kind in "iu" else np.float64
    return np.sum(x, axis=axes, dtype=dtype, keepdims=bool(node.attrs.get("keepdims", 1)))


for _engine in ENGINES:
    _engine.register(op.REDUCE_SUM)(_reduce_sum)


def _dequantize(self, node, x):
    """(x - zp) * scale in double, rounded once to float32 (TFLite's Dequantize)."""
    codes = np.asarray(x, np.float64) - node.attrs["zero_point"]
    if node.attrs.get("float64"):  # a float island's operand (quantize_network's exclude)
        return codes * float(node.attrs["scale"])
    return (codes * float(np.float32(node.attrs["scale"]))).astype(np.float32)


for _engine in ENGINES:
    _engine.register(op.DEQUANTIZE)(_dequantize)


@IntegerInterpreter.register(op.CLIP)
def _int_clip(self, node, x):
    lo, hi = node.attrs.get("min"), node.attrs.get("max")
    info = np.iinfo(x.dtype) if x.dtype.kind in "iu" else None
    if info is None or lo is None or hi is None or not info.min <= lo <= hi <= info.max:
        raise _fail(node, f"integer clip of {x.dtype} to [{lo}, {hi}]")
    return kernels.clip(np.ascontiguousarray(x), int(lo), int(hi))


def _softmax(inner, kernel):
    def impl(self, node, x):
        if "diff_min" not in node.attrs:
            return inner(self, node, x)  # a float softmax
        if x.ndim == 0 or x.dtype.kind not in "iuf" or (x.dtype.kind in "iu" and x.dtype != np.int8):
            raise _fail(node, f"integer softmax of a {x.dtype} tensor of rank {x.ndim}")
        codes = (_codes(node, x, 128, 256) - 128).astype(np.int8)  # checks int8 range
        rows = np.ascontiguousarray(codes.reshape(-1, x.shape[-1]))
        out = np.empty(rows.shape, np.int8)
        kernel(rows, softmax_kernel_params(node), out)
        return self.holding(out.reshape(x.shape))

    return impl


def softmax_kernel_params(node) -> np.ndarray:
    from ..kernels.softmax import pack_softmax_params

    return pack_softmax_params(node.attrs)


def _register_softmax():
    if not hasattr(kernels, "softmax_int8"):
        return
    for engine, kernel in ((ReferenceInterpreter, kernels.softmax_int8_ref),
                           (IntegerInterpreter, kernels.softmax_int8)):
        engine.impls[op.SOFTMAX] = _softmax(engine.impls.get(op.SOFTMAX, _no_float_softmax), kernel)


def _no_float_softmax(self, node, x):
    raise _fail(node, "a float softmax has no integer implementation")


_register_softmax()


# The integer engine's table is complete: what its compiled steps may stand for.
from . import fast_steps as _fast_steps  # noqa: E402

_fast_steps.KNOWN = _fast_steps._table()
