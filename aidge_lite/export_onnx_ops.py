"""One QDQ handler per operator for `aidge_lite.export_onnx` (see its docstring for
what each operator becomes), and `_Exporter`, the emitter with this table.
"""
from __future__ import annotations

import numpy as np

from .errors import QuantizationError
from .export_onnx_emit import (_FLOAT_INPUT, _KEEP_CHANNEL_AXIS, _QTYPES, _SEAMLESS_ONNX,
                               _WEIGHT_TYPES, _collapse, _Emitter, _f32, _is_vector)
from .ir import LAYOUT, OpType
from .ptq.rescale import effective_multiplier


_HANDLERS = {}


def _handles(*ops):
    def deco(fn):
        for op in ops:
            _HANDLERS[op] = fn
        return fn
    return deco


@_handles(OpType.INPUT)
def _input(ex: _Emitter, node):
    dtype = np.dtype(node.attrs.get("dtype", "float32"))
    if dtype.kind != "f":
        raise QuantizationError(f"input '{node.name}' is {dtype}: the QDQ export takes float inputs")
    ex.factor[node.name] = 1.0
    ex.scale[node.name] = np.float32(1.0)
    ex.qtype[node.name] = _FLOAT_INPUT


@_handles(OpType.QUANTIZER)
def _quantizer(ex: _Emitter, node):
    src, attrs = node.inputs[0], node.attrs
    mode = attrs.get("mode", "float")
    if mode not in ("float", "int", "gemmlowp"):
        raise QuantizationError(f"QUANTIZER '{node.name}': mode {mode!r} has no QDQ form "
                                "(export takes graphs from quantize_network)")
    offsets = {k: attrs[k] for k in ("input_zero_point", "zero_point", "pre_shift") if attrs.get(k, 0)}
    if offsets:
        raise QuantizationError(f"QUANTIZER '{node.name}': zero points / pre-shift {offsets} have no "
                                "form in this export (symmetric quantizers only)")
    multiplier = np.asarray(effective_multiplier(attrs), np.float64)
    f_in, s_in = ex.factor[src], ex.scale[src]
    sizes = {np.size(v) for v in (f_in, s_in, multiplier) if np.size(v) > 1}
    if len(sizes) > 1:
        raise QuantizationError(f"QUANTIZER '{node.name}': per-channel input scale and "
                                f"multiplier disagree on the channel count {sorted(sizes)}")
    factor = _collapse(np.asarray(f_in, np.float64) * multiplier)
    candidates = _f32(np.asarray(s_in, np.float64) / multiplier)  # s_out = fl32(s_in / m)
    if candidates.ndim == 0 or np.all(candidates == candidates.flat[0]):
        scale = candidates.reshape(-1)[0] if candidates.ndim else candidates
    elif not _is_vector(factor):  # per-channel weights, uniform output factor
        scale = _f32(1.0 / factor)
    else:
        scale = candidates
    qtype = str(attrs.get("dtype"))
    if qtype not in _QTYPES:
        raise QuantizationError(f"QUANTIZER '{node.name}': dtype {qtype!r} has no QDQ type "
                                f"(supported: {sorted(_QTYPES)})")
    if qtype in ("int16", "uint16") and ex.opset < 21:
        raise QuantizationError(f"QUANTIZER '{node.name}': {qtype} QuantizeLinear needs opset 21")
    ex.factor[node.name], ex.scale[node.name], ex.qtype[node.name] = factor, np.asarray(scale), qtype
    if not ex.build:
        return
    info = np.iinfo(_QTYPES[qtype])
    lo, hi = int(attrs["lo"]), int(attrs["hi"])
    if not info.min <= lo <= hi <= info.max:
        raise QuantizationError(f"QUANTIZER '{node.name}': clip range [{lo}, {hi}] outside {qtype}")
    x = src
    if (lo, hi) != (info.min, info.max):  # n-bit range narrower than the QDQ type
        if _is_vector(scale):
            raise QuantizationError(f"QUANTIZER '{node.name}': a clip range narrower than {qtype} "
                                    "with per-channel scales has no float Clip form")
        bounds = [ex._init(f"{node.name}/clip_{k}", _f32(v * np.float64(scale)))
                  for k, v in (("lo", lo), ("hi", hi))]
        x = ex._node("Clip", [x, *bounds], f"{node.name}/clip")
    ex._qdq(x, node.name, ex.scale[node.name], qtype)


@_handles(OpType.CONV, OpType.GEMM)
def _affine(ex: _Emitter, node):
    x = node.inputs[0]
    ex._require_quantized(node, x)
    if _is_vector(ex.scale[x]):
        raise QuantizationError(
            f"node '{node.name}' ({node.op.value}): its input '{x}' has a per-channel activation "
            "scale; the integer Conv/Gemm sums channels at different scales, which "
            "DequantizeLinear -> float op cannot express"
        )
    if len(node.inputs) < 3 or not all(ex.g.is_constant(i) for i in node.inputs[1:]):
        raise QuantizationError(f"node '{node.name}': weights and bias must be constants")
    if node.op is OpType.GEMM and (node.attrs.get("transB", 0) != 1 or node.attrs.get("transA", 0)
                                   or node.attrs.get("alpha", 1.0) != 1.0
                                   or node.attrs.get("beta", 1.0) != 1.0):
        raise QuantizationError(f"node '{node.name}': Gemm is not canonical (transB=1, alpha=beta=1)")
    weight_scale = np.asarray(node.attrs.get("weight_scale", 1.0), np.float64)
    if weight_scale.size == 1:
        weight_scale = weight_scale.reshape(())
    s_w = _f32(1.0 / weight_scale)
    s_acc = np.asarray(ex.scale[x], np.float32) * s_w  # fl32(s_x * s_w), onnxruntime's bias scale
    ex.factor[node.name] = _collapse(ex.factor[x] * weight_scale)
    ex.scale[node.name] = s_acc
    ex.qtype[node.name] = None  # accumulator
    if not ex.build:
        return

    w_name, b_name = node.inputs[1], node.inputs[2]
    weight, bias = ex.g.constant(w_name), ex.g.constant(b_name)
    wtype = _WEIGHT_TYPES.get(np.dtype(weight.dtype))
    if wtype is None:
        raise QuantizationError(f"node '{node.name}': weights '{w_name}' are {weight.dtype}, "
                                "not int8/int16")
    axis = {"axis": 0} if s_w.ndim else {}
    # Weights and biases get their own scale / zero point initializers: onnxruntime's
    # s8 -> u8 weight rewrite (session.x64quantprecision) fails on shared ones.
    w_dq = ex._node("DequantizeLinear", [
        ex._constant(w_name, weight), ex._init(f"{node.name}/w_scale", s_w),
        ex._init(f"{node.name}/w_zero_point", np.zeros(s_w.shape, wtype))], f"{node.name}/w", **axis)
    if np.dtype(bias.dtype) == np.int32:
        b_float = ex._node("DequantizeLinear", [
            ex._constant(b_name, bias), ex._init(f"{node.name}/b_scale", s_acc),
            ex._init(f"{node.name}/b_zero_point", np.zeros(s_acc.shape, np.int32))],
            f"{node.name}/b", **axis)
    else:  # int64 bias: no DequantizeLinear for it; a float bias (onnxruntime will not fuse)
        b_float = ex._init(f"{node.name}/b", _f32(bias.astype(np.float64) * s_acc))
    if node.op is OpType.CONV:
        ex._node("Conv", [x, w_dq, b_float], node.name, **ex._onnx_attrs("Conv", node.attrs))
    else:
        ex._node("Gemm", [x, w_dq, b_float], node.name, transB=1)


def _aligned_operands(ex: _Emitter, node) -> list[str]:
    """Float operands of a join, all at the first operand's scale.

    Our integer join adds / concatenates the integers as they are. An operand
    whose scale differs (branch rescales rounded differently) is dequantized
    again, from its integers, at the join's scale, so ONNX combines the same integers.
    """
    if any(ex.g.is_constant(i) for i in node.inputs):
        raise QuantizationError(f"node '{node.name}': {node.op.value} with a constant operand")
    first = node.inputs[0]
    ref = ex.scale[first]
    ex.factor[node.name], ex.scale[node.name] = ex.factor[first], ref
    operands = []
    for name in node.inputs:
        same = np.shape(ex.scale[name]) == np.shape(ref) and np.array_equal(ex.scale[name], ref)
        if same:
            operands.append(name)
            continue
        ex._require_quantized(node, name)
        if ex.build:
            s_name, zp, axis = ex._dq_args(ref, ex.qtype[name])
            operands.append(ex._node("DequantizeLinear", [ex.qname[name], s_name, zp],
                                     ex._unique(f"{name}/at_{node.name}"), **axis))
    return operands


@_handles(OpType.ADD, OpType.SUB)
def _add(ex: _Emitter, node):
    operands = _aligned_operands(ex, node)
    ex.qtype[node.name] = None  # accumulator: the next QUANTIZER requantizes it
    if ex.build:
        ex._node(node.op.value, operands, node.name)


@_handles(OpType.CONCAT)
def _concat(ex: _Emitter, node):
    for name in node.inputs:
        ex._require_quantized(node, name)
    operands = _aligned_operands(ex, node)
    if _is_vector(ex.scale[node.name]):
        raise QuantizationError(f"Concat '{node.name}': operands with per-channel activation scales")
    qtype = _common_type(node, {ex.qtype[i] for i in node.inputs})
    ex.qtype[node.name] = qtype
    if ex.build:
        ex._node("Concat", operands, f"{node.name}/f", axis=int(node.attrs["axis"]))
        ex._qdq(f"{node.name}/f", node.name, ex.scale[node.name], qtype)


def _common_type(node, types) -> str:
    if len(types) == 1:
        return next(iter(types))
    signed = any(not t.startswith("u") for t in types)
    bits = max(int(t.lstrip("uint")) for t in types)
    if signed and any(t.startswith("u") for t in types):
        bits *= 2  # uint8 and int8 operands: int16 holds both
    if bits > 16:
        raise QuantizationError(f"node '{node.name}': operands {sorted(types)} have no common QDQ type")
    return f"{'' if signed else 'u'}int{bits}"


@_handles(*_SEAMLESS_ONNX)
def _seamless(ex: _Emitter, node):
    x = node.inputs[0]
    if _is_vector(ex.scale[x]) and node.op not in _KEEP_CHANNEL_AXIS:
        raise QuantizationError(
            f"node '{node.name}' ({node.op.value}) moves the channel axis of '{x}', whose "
            "activation scale is per channel: not expressible as QDQ"
        )
    ex.factor[node.name], ex.scale[node.name], ex.qtype[node.name] = \
        ex.factor[x], ex.scale[x], ex.qtype[x]
    if ex.qtype[x] == _FLOAT_INPUT and node.op not in LAYOUT:
        ex._require_quantized(node, x)  # data movement may precede the input quantizer
    if not ex.build:
        return
    op_type = _SEAMLESS_ONNX[node.op]
    attrs = dict(node.attrs)
    inputs = [x]
    if node.op is OpType.RESHAPE:
        inputs.append(ex._init(f"{node.name}/shape", np.asarray(attrs.pop("shape"), np.int64)))
    elif node.op is OpType.PAD:
        if attrs.get("mode", "constant") != "constant" or float(attrs.get("value", 0.0)) != 0.0:
            raise QuantizationError(f"Pad '{node.name}': only zero constant padding is exported")
        inputs.append(ex._init(f"{node.name}/pads", np.asarray(attrs.pop("pads"), np.int64)))
        if "axes" in attrs:
            inputs += ["", ex._init(f"{node.name}/axes", np.asarray(attrs.pop("axes"), np.int64))]
        attrs = {"mode": "constant"}
    elif node.op in (OpType.SQUEEZE, OpType.UNSQUEEZE) and "axes" in attrs:
        inputs.append(ex._init(f"{node.name}/axes", np.asarray(attrs.pop("axes"), np.int64)))
    attrs = ex._onnx_attrs(op_type, attrs)
    if ex.qtype[x] in (None, _FLOAT_INPUT):  # on an accumulator or the float input: stays float
        ex._node(op_type, inputs, node.name, **attrs)
        return
    ex._node(op_type, inputs, f"{node.name}/f", **attrs)
    ex._qdq(f"{node.name}/f", node.name, ex.scale[x], ex.qtype[x])


@_handles(OpType.AVGPOOL, OpType.GLOBAL_AVGPOOL)
def _int_pool(ex: _Emitter, node):
    x = node.inputs[0]
    if "rounding" not in node.attrs:
        raise QuantizationError(f"node '{node.name}': float {node.op.value} in an integer graph")
    ex._require_quantized(node, x)
    ex.factor[node.name], ex.scale[node.name], ex.qtype[node.name] = \
        ex.factor[x], ex.scale[x], ex.qtype[x]
    if not ex.build:
        return
    # The pool averages the integers themselves: DequantizeLinear at scale 1 gives
    # exact integer-valued floats, their float sum is exact and sum / count is a
    # tie exactly when the integer quotient is one, so QuantizeLinear at scale 1
    # rounds where our integer pool rounds. The result is then dequantized at the
    # input's scale. (Pooling x * s instead rounds every q * s, and ties fall
    # either way.)
    unit = np.float32(1.0)
    s_one, zp, _ = ex._dq_args(unit, ex.qtype[x])
    ints = ex._node("DequantizeLinear", [ex.qname[x], s_one, zp], f"{node.name}/int_in")
    attrs = ex._onnx_attrs(node.op.value, node.attrs)
    pooled = ex._node(node.op.value, [ints], f"{node.name}/f", **attrs)
    qname = ex._node("QuantizeLinear", [pooled, s_one, zp], f"{node.name}/q")
    s_name, zp_out, axis = ex._dq_args(ex.scale[x], ex.qtype[x])
    ex._node("DequantizeLinear", [qname, s_name, zp_out], node.name, **axis)
    ex.qname[node.name] = qname


class _Exporter(_Emitter):
    """The QDQ exporter: `_Emitter` with this module's handlers."""
    HANDLERS = _HANDLERS
