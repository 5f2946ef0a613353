"""Float reference of the operators of exported ImageNet / audio models.

Registered on `ReferenceInterpreter` (imported at the end of `reference`), so
every interpreter derived from it runs them too. Each follows the ONNX
operator definition; results keep the input's float dtype.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import OpType
from .reference import ReferenceInterpreter

reg = ReferenceInterpreter.register
op = OpType


@reg(op.REDUCE_MEAN)
def _reduce_mean(self, node, x):
    axes = node.attrs["axes"]
    axis = None if axes is None else tuple(a % x.ndim for a in axes)
    return np.mean(x, axis=axis, keepdims=bool(node.attrs.get("keepdims", 1))).astype(x.dtype)


@reg(op.SLICE)
def _slice(self, node, x):
    index = [slice(None)] * x.ndim
    steps = node.attrs.get("steps") or [1] * len(node.attrs["starts"])
    for start, end, axis, step in zip(node.attrs["starts"], node.attrs["ends"], node.attrs["axes"], steps):
        dim = x.shape[axis]
        start, end = (v + dim if v < 0 else v for v in (start, end))
        if step > 0:
            index[axis] = slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
        else:  # clamp as ONNX does; an end of -1 means "through index 0", not "the last"
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            index[axis] = slice(start, None if end < 0 else end, step)
    return x[tuple(index)]


@reg(op.DEPTH_TO_SPACE)
def _depth_to_space(self, node, x):
    b = node.attrs["blocksize"]
    n, c, h, w = x.shape
    if node.attrs.get("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:  # CRD
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


@reg(op.LRN)
def _lrn(self, node, x):
    size = node.attrs["size"]
    alpha, beta, bias = (node.attrs.get(k, d) for k, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)  # channels before / after each one
    sq = np.square(x.astype(np.float64))
    padded = np.pad(sq, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    window = sum(padded[:, k: k + x.shape[1]] for k in range(size))
    return (x / (bias + alpha / size * window) ** beta).astype(x.dtype)


@reg(op.HARD_SIGMOID)
def _hard_sigmoid(self, node, x):
    alpha, beta = node.attrs.get("alpha", 0.2), node.attrs.get("beta", 0.5)
    return np.clip(x * x.dtype.type(alpha) + x.dtype.type(beta), 0, 1).astype(x.dtype)


@reg(op.HARD_SWISH)
def _hard_swish(self, node, x):
    return x * np.clip(x * x.dtype.type(1 / 6) + x.dtype.type(0.5), 0, 1).astype(x.dtype)


@reg(op.PRELU)
def _prelu(self, node, x, slope):
    return np.where(x < 0, x * slope.astype(x.dtype), x)


@reg(op.POW)
def _pow(self, node, x, y):
    return np.power(x, y.astype(x.dtype) if y.dtype.kind == "f" else y).astype(x.dtype)


# math.erf per element: exact to the last bit in float64, no SciPy needed.
_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    return _erf(x.astype(np.float64)).astype(np.float64).astype(x.dtype)


@reg(op.ERF)
def _erf_op(self, node, x):
    return erf(x)


@reg(op.GELU)
def _gelu(self, node, x):
    x64 = x.astype(np.float64)
    if node.attrs.get("approximate", "none") == "tanh":
        inner = math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)
        return (0.5 * x64 * (1 + np.tanh(inner))).astype(x.dtype)
    return (0.5 * x64 * (1 + erf(x64 / math.sqrt(2)))).astype(x.dtype)


@reg(op.RESIZE)
def _resize(self, node, x):
    for axis in range(x.ndim):
        index = _nearest_index(node.attrs, axis, x.shape[axis])
        if index is not None:
            x = np.take(x, index, axis=axis)
    return x


def _nearest_index(attrs, axis, length):
    """Source index of every output position along `axis` (ONNX Resize, mode nearest), or None if unchanged."""
    sizes, scales = attrs.get("sizes"), attrs.get("scales")
    if sizes is not None:
        out = sizes[axis] or length  # 0: a free (batch) dimension, kept
        # both given: keep_aspect_ratio_policy fixed one scale for the coordinates
        scale = scales[axis] if scales is not None else out / length
    else:
        scale = scales[axis]
        out = int(math.floor(length * scale))
    if out == length and scale == 1.0:
        return None
    mode = attrs.get("coordinate_transformation_mode", "half_pixel")
    pos = np.arange(out, dtype=np.float64)
    if mode == "asymmetric":
        src = pos / scale
    elif mode == "align_corners":
        src = pos * (length - 1) / (out - 1) if out > 1 else np.zeros(out)
    elif mode == "tf_half_pixel_for_nearest":
        src = (pos + 0.5) / scale
    elif mode == "pytorch_half_pixel":
        src = (pos + 0.5) / scale - 0.5 if out > 1 else np.zeros(out)
    elif mode == "half_pixel_symmetric":
        offset = length / 2 * (1 - out / (scale * length))
        src = offset + (pos + 0.5) / scale - 0.5
    else:  # half_pixel
        src = (pos + 0.5) / scale - 0.5
    rounding = attrs.get("nearest_mode", "round_prefer_floor")
    if rounding == "floor":
        index = np.floor(src)
    elif rounding == "ceil":
        index = np.ceil(src)
    elif rounding == "round_prefer_ceil":
        index = np.floor(src + 0.5)
    else:  # round_prefer_floor: a tie goes down
        index = np.ceil(src - 0.5)
    return np.clip(index, 0, length - 1).astype(np.int64)


@reg(op.CONV_TRANSPOSE)
def _conv_transpose(self, node, x, w, b=None):
    if x.ndim == 3:  # 1-D: a unit height (weights that were graph inputs were not lifted at import)
        attrs = dict(node.attrs)
        for key, unit in (("strides", 1), ("dilations", 1), ("output_padding", 0), ("output_shape", 1)):
            if key in attrs:
                attrs[key] = [unit, *attrs[key]]
        if "pads" in attrs:
            attrs["pads"] = [0, attrs["pads"][0], 0, attrs["pads"][1]]
        return conv_transpose2d(x[:, :, None], w[:, :, None], b, attrs)[:, :, 0]
    return conv_transpose2d(x, w, b, node.attrs)


def conv_transpose2d(x, w, b, attrs):
    """Grouped 2-D transposed convolution, NCHW; weights (C, K/group, KH, KW).

    Scatters one (N, K, H, W) product per kernel tap into the full output,
    then crops the pads: no zero-stuffed input is ever built.
    """
    n, c, h, wd = x.shape
    group = attrs.get("group", 1)
    _, kg, kh, kw = w.shape
    sh, sw = attrs.get("strides", (1, 1))
    dh, dw = attrs.get("dilations", (1, 1))
    oph, opw = attrs.get("output_padding", (0, 0))
    full_h, full_w = sh * (h - 1) + (kh - 1) * dh + 1 + oph, sw * (wd - 1) + (kw - 1) * dw + 1 + opw
    pads = _transpose_pads(attrs, (full_h, full_w), (h * sh, wd * sw))
    xg = x.reshape(n, group, c // group, h * wd)
    wg = w.reshape(group, c // group, kg, kh, kw).astype(x.dtype)
    full = np.zeros((n, group, kg, full_h, full_w), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = np.einsum("ngcp,gck->ngkp", xg, wg[..., i, j]).reshape(n, group, kg, h, wd)
            full[..., i * dh: i * dh + sh * (h - 1) + 1: sh, j * dw: j * dw + sw * (wd - 1) + 1: sw] += tap
    y = full.reshape(n, group * kg, full_h, full_w)
    if min(pads) < 0:  # an output_shape beyond the full output: zeros past its edges
        grow = [max(-p, 0) for p in pads]
        y = np.pad(y, [(0, 0), (0, 0), (grow[0], grow[2]), (grow[1], grow[3])])
        pads = [max(p, 0) for p in pads]
    h_end, w_end = y.shape[2] - pads[2], y.shape[3] - pads[3]
    y = y[:, :, pads[0]: h_end, pads[1]: w_end]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1).astype(x.dtype)
    return np.ascontiguousarray(y)


def _transpose_pads(attrs, full, same):
    """(top, left, bottom, right) cropped from the full output (ONNX ConvTranspose rules)."""
    shape, auto = attrs.get("output_shape"), attrs.get("auto_pad", "NOTSET")
    if shape is None and auto in ("NOTSET", "VALID"):
        return tuple(attrs.get("pads", (0, 0, 0, 0))) if auto == "NOTSET" else (0, 0, 0, 0)
    if shape is None:  # SAME_*: the output is the input times the stride
        shape = same
    total = [f - s for f, s in zip(full, shape[-2:])]
    if auto == "SAME_UPPER":
        begin = [t // 2 for t in total]
    else:
        begin = [t - t // 2 for t in total]
    return begin[0], begin[1], total[0] - begin[0], total[1] - begin[1]
