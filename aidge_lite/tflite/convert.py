"""TFLite operators -> IR nodes with TFLite's integer semantics.

Layout: activations stay NHWC, as in the model, so every IR node that stands
for a TFLite tensor holds exactly what LiteRT holds under that name. Window ops
carry `layout="NHWC"`; the engines run them on a transposed view.

Naming: the node that produces a TFLite tensor is named after it. Helper nodes
(accumulators, ADD's rescaled inputs) get `<tensor>:<role>` names.

Each translator checks what TFLite's Prepare would check for int8 and raises
`UnsupportedOperatorError` naming the output tensor and the op otherwise.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelLoadError, UnsupportedOperatorError
from ..ir import Graph, Node, OpType
from . import params as P
from .reader import TflModel, TflOperator, TflTensor

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


class Converter:
    def __init__(self, model: TflModel, graph: Graph, fc_rescale: str = "double"):
        self.model, self.graph, self.fc_rescale = model, graph, fc_rescale
        self.names: dict[int, str] = {}  # tensor index -> node name
        used: set[str] = set()
        for t in model.tensors:  # TFLite does not promise unique names: suffix repeats
            name = t.name if t.name not in used else f"{t.name}#{t.index}"
            used.add(name)
            self.names[t.index] = name

    # ------------------------------------------------------------ helpers
    def tensor(self, index: int) -> TflTensor:
        return self.model.tensors[index]

    def operand(self, index: int) -> str:
        """Node name of tensor `index`, creating its CONSTANT node on first use."""
        name = self.names[index]
        if name not in self.graph:
            t = self.tensor(index)
            if t.data is None:
                raise ModelLoadError(f"tensor '{t.name}' is read before any operator writes it "
                                     "and has no buffer")
            self.graph.add(Node(name, OpType.CONSTANT, attrs={"value": t.data}))
        return name

    def add(self, name, op, inputs, **attrs) -> str:
        self.graph.add(Node(name, op, list(inputs), attrs))
        return name

    def quantizer(self, name, source, out: TflTensor, multiplier, shift, lo, hi, *,
                  input_zero_point=0, pre_shift=0, zero_point=None, dtype="int8"):
        zp = int(out.zero_point[0]) if zero_point is None else zero_point
        return self.add(name, OpType.QUANTIZER, [source], mode="gemmlowp",
                        multiplier=[int(m) for m in multiplier], shift=[int(s) for s in shift],
                        input_zero_point=int(input_zero_point), pre_shift=int(pre_shift),
                        zero_point=zp, lo=int(lo), hi=int(hi), dtype=dtype, axis=-1,
                        scale=float(out.scale[0]) if out.quantized else 1.0, rounding="half_away")


def _q8(conv: Converter, op: TflOperator, index: int, role: str) -> TflTensor:
    """The tensor at `index`, which must be an int8 activation quantized per tensor."""
    t = conv.tensor(index)
    where = conv.names[op.outputs[0]]
    if t.dtype == "int16":
        raise UnsupportedOperatorError(where, op.opcode, f"{role} '{t.name}' is int16 "
                                       "(16x8 models are not supported, only int8)")
    if t.dtype != "int8":
        kind = "a float" if t.dtype.startswith("float") else f"an {t.dtype}"
        raise UnsupportedOperatorError(where, op.opcode, f"{role} '{t.name}' is {kind} tensor: "
                                       "only fully-integer int8 models are supported")
    if not t.quantized or t.scale.size != 1:
        raise UnsupportedOperatorError(where, op.opcode, f"{role} '{t.name}' needs one scale "
                                       "and zero point (per-tensor asymmetric int8)")
    if not np.isfinite(t.scale[0]) or t.scale[0] <= 0:
        raise UnsupportedOperatorError(where, op.opcode, f"{role} '{t.name}' has scale {t.scale[0]}")
    return t


def _zp(t: TflTensor) -> int:
    return int(t.zero_point[0])


def _same_quantization(conv, op, a: TflTensor, b: TflTensor):
    if a.scale[0] != b.scale[0] or _zp(a) != _zp(b):
        raise UnsupportedOperatorError(conv.names[op.outputs[0]], op.opcode,
                                       f"input '{a.name}' and output '{b.name}' must share scale "
                                       "and zero point (TFLite's int8 kernel requires it)")


def _weights(conv, op, index, channels_axis) -> TflTensor:
    w = conv.tensor(index)
    where = conv.names[op.outputs[0]]
    if w.data is None:
        raise UnsupportedOperatorError(where, op.opcode, f"weights '{w.name}' are not constant")
    if w.dtype != "int8":
        kind = "float (a float model)" if w.dtype.startswith("float") else w.dtype
        raise UnsupportedOperatorError(where, op.opcode, f"weights '{w.name}' are {kind}: "
                                       "only int8 weights are supported")
    if not w.quantized:
        raise UnsupportedOperatorError(where, op.opcode, f"weights '{w.name}' have no scale")
    channels = w.shape[channels_axis]
    if w.scale.size not in (1, channels) or (w.scale.size > 1 and w.quantized_dimension != channels_axis):
        raise UnsupportedOperatorError(where, op.opcode, f"weights '{w.name}': {w.scale.size} scales "
                                       f"on dimension {w.quantized_dimension}, expected 1 or "
                                       f"{channels} on dimension {channels_axis}")
    return w


def _bias(conv, op, channels) -> str:
    """Bias operand name; a zero int32 constant when the op has none."""
    where = conv.names[op.outputs[0]]
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = conv.tensor(op.inputs[2])
        if b.data is None or b.dtype != "int32" or b.data.shape != (channels,):
            raise UnsupportedOperatorError(where, op.opcode, f"bias '{b.name}' must be a constant "
                                           f"int32 vector of {channels} ({b.dtype}, {b.shape})")
        return conv.operand(op.inputs[2])
    return conv.add(f"{where}:bias", OpType.CONSTANT, [], value=np.zeros(channels, np.int32))


def _window(op: TflOperator, kernel_hw) -> dict:
    o = op.options
    padding = o.get("Padding", "SAME")
    if padding not in ("SAME", "VALID"):
        raise UnsupportedOperatorError(op.opcode, op.opcode, f"padding {padding}")
    strides = (o.get("StrideH", 1), o.get("StrideW", 1))
    dilations = (o.get("DilationHFactor", 1), o.get("DilationWFactor", 1))
    if min(strides) <= 0 or min(dilations) <= 0:
        raise UnsupportedOperatorError(op.opcode, op.opcode, f"strides {strides}, dilations {dilations}")
    # TFLite's SAME puts the odd padding pixel at the end: ONNX's SAME_UPPER.
    return {"layout": "NHWC", "kernel_shape": tuple(int(k) for k in kernel_hw), "strides": strides,
            "dilations": dilations, "auto_pad": "SAME_UPPER" if padding == "SAME" else "VALID"}


def _act(conv, op, out: TflTensor):
    return P.activation_range(op.options.get("FusedActivationFunction", "NONE"), out.scale[0],
                              _zp(out), conv.names[op.outputs[0]])


# ------------------------------------------------------------ operators
def conv_2d(conv: Converter, op: TflOperator, depthwise: bool = False):
    x = _q8(conv, op, op.inputs[0], "input")
    out = _q8(conv, op, op.outputs[0], "output")
    name = conv.names[op.outputs[0]]
    channels_axis = 3 if depthwise else 0
    w = _weights(conv, op, op.inputs[1], channels_axis)
    if len(x.shape) != 4 or len(w.shape) != 4:
        raise UnsupportedOperatorError(name, op.opcode, f"input {x.shape} / weights {w.shape} not 4-D")
    if np.any(w.zero_point != 0):
        raise UnsupportedOperatorError(name, op.opcode, f"weights '{w.name}' have non-zero zero points")
    channels = w.shape[channels_axis]
    if depthwise:
        if w.shape[0] != 1 or x.shape[3] == 0 or channels % x.shape[3]:
            raise UnsupportedOperatorError(name, op.opcode, f"depthwise weights {w.shape} for input {x.shape}")
        group, layout = x.shape[3], "1HWO"
    else:
        if w.shape[3] <= 0 or x.shape[3] % w.shape[3]:
            raise UnsupportedOperatorError(name, op.opcode, f"weights {w.shape} for input {x.shape}")
        group, layout = x.shape[3] // w.shape[3], "OHWI"
    window = _window(op, w.shape[1:3])
    acc = conv.add(f"{name}:acc", OpType.CONV, [conv.operand(op.inputs[0]), conv.operand(op.inputs[1]),
                                              _bias(conv, op, channels)],
                   group=group, weight_layout=layout, input_zero_point=_zp(x), **window)
    m, s = P.conv_multipliers(x.scale[0], w.scale, out.scale[0], channels)
    lo, hi = _act(conv, op, out)
    conv.quantizer(name, acc, out, m, s, lo, hi)


def fully_connected(conv: Converter, op: TflOperator):
    x = _q8(conv, op, op.inputs[0], "input")
    out = _q8(conv, op, op.outputs[0], "output")
    name = conv.names[op.outputs[0]]
    w = _weights(conv, op, op.inputs[1], 0)
    if len(w.shape) != 2:
        raise UnsupportedOperatorError(name, op.opcode, f"weights {w.shape} not 2-D")
    units, depth = w.shape
    size = int(np.prod(x.shape))
    if depth <= 0 or size % depth:
        raise UnsupportedOperatorError(name, op.opcode, f"input {x.shape} is not rows of {depth}")
    source = conv.operand(op.inputs[0])
    if len(x.shape) != 2 or x.shape[1] != depth:
        source = conv.add(f"{name}:rows", OpType.RESHAPE, [source], shape=(-1, depth))
    per_channel = w.scale.size > 1
    wzp = 0 if per_channel else int(w.zero_point[0])
    acc = conv.add(f"{name}:acc", OpType.GEMM, [source, conv.operand(op.inputs[1]), _bias(conv, op, units)],
                   transB=1, input_zero_point=_zp(x), weight_zero_point=wzp)
    if op.options.get("KeepNumDims"):
        if x.shape[-1] != depth:
            raise UnsupportedOperatorError(name, op.opcode, "keep_num_dims with input depth != weights depth")
        acc = conv.add(f"{name}:acc_nd", OpType.RESHAPE, [acc], shape=_batch_free(x.shape[:-1] + (units,), x.shape))
    elif out.shape and out.shape[0] != 1:  # rows of one sample: keep them apart per sample
        acc = conv.add(f"{name}:acc_nd", OpType.RESHAPE, [acc], shape=(-1,) + tuple(out.shape))
    lo, hi = _act(conv, op, out)
    if conv.fc_rescale == "gemmlowp":  # TFLite Micro, CMSIS-NN, LiteRT before 2.20
        if per_channel:
            m, s = P.conv_multipliers(x.scale[0], w.scale, out.scale[0], units)
        else:
            m, s = P.fc_multiplier_per_tensor(x.scale[0], w.scale[0], out.scale[0])
        conv.quantizer(name, acc, out, m, s, lo, hi)
        return
    # LiteRT's reference FC (TF >= 2.20) rescales in double with one rounding, not gemmlowp
    reals = P.fc_real_multipliers(x.scale[0], w.scale, out.scale[0], units if per_channel else 1)
    conv.add(name, OpType.QUANTIZER, [acc], mode="double", multiplier=reals, zero_point=_zp(out),
             lo=lo, hi=hi, dtype="int8", axis=-1, scale=float(out.scale[0]), rounding="half_away")


def add_sub(conv: Converter, op: TflOperator):
    a = _q8(conv, op, op.inputs[0], "input 1")
    b = _q8(conv, op, op.inputs[1], "input 2")
    out = _q8(conv, op, op.outputs[0], "output")
    name = conv.names[op.outputs[0]]
    _broadcastable(conv, op, a.shape, b.shape)
    (m1, s1), (m2, s2), (mo, so), r_out = P.add_sub_multipliers(a.scale[0], b.scale[0], out.scale[0], op.opcode)
    if r_out >= 1:  # TFLite aborts (CHECK) or runs into undefined behaviour here
        raise UnsupportedOperatorError(name, op.opcode, f"output scale {out.scale[0]} too small for the "
                                       f"inputs' (rescale {r_out:.6g} >= 1)")
    int32 = dict(pre_shift=P.ADD_LEFT_SHIFT, zero_point=0, dtype="int32")
    sa = conv.quantizer(f"{name}:a", conv.operand(op.inputs[0]), out, m1, s1, I32_MIN, I32_MAX,
                        input_zero_point=_zp(a), **int32)
    sb = conv.quantizer(f"{name}:b", conv.operand(op.inputs[1]), out, m2, s2, I32_MIN, I32_MAX,
                        input_zero_point=_zp(b), **int32)
    total = conv.add(f"{name}:sum", OpType.ADD if op.opcode == "ADD" else OpType.SUB, [sa, sb],
                     broadcast=True)
    lo, hi = _act(conv, op, out)
    conv.quantizer(name, total, out, mo, so, lo, hi)


def mul(conv: Converter, op: TflOperator):
    a = _q8(conv, op, op.inputs[0], "input 1")
    b = _q8(conv, op, op.inputs[1], "input 2")
    out = _q8(conv, op, op.outputs[0], "output")
    name = conv.names[op.outputs[0]]
    _broadcastable(conv, op, a.shape, b.shape)
    product = conv.add(f"{name}:prod", OpType.MUL, [conv.operand(op.inputs[0]), conv.operand(op.inputs[1])],
                       input_zero_points=[_zp(a), _zp(b)], broadcast=True)
    m, s = P.mul_multiplier(a.scale[0], b.scale[0], out.scale[0])
    lo, hi = _act(conv, op, out)
    conv.quantizer(name, product, out, m, s, lo, hi)


def _broadcastable(conv, op, sa, sb):
    try:
        np.broadcast_shapes(sa, sb)
    except ValueError:
        raise UnsupportedOperatorError(conv.names[op.outputs[0]], op.opcode,
                                       f"shapes {sa} and {sb} do not broadcast") from None


def pool_2d(conv: Converter, op: TflOperator):
    x = _q8(conv, op, op.inputs[0], "input")
    out = _q8(conv, op, op.outputs[0], "output")
    name = conv.names[op.outputs[0]]
    _same_quantization(conv, op, x, out)
    if len(x.shape) != 4:
        raise UnsupportedOperatorError(name, op.opcode, f"input {x.shape} not 4-D")
    o = op.options
    window = _window(op, (o.get("FilterHeight", 1), o.get("FilterWidth", 1)))
    window["dilations"] = (1, 1)
    if min(window["kernel_shape"]) <= 0:
        raise UnsupportedOperatorError(name, op.opcode, f"filter {window['kernel_shape']}")
    lo, hi = _act(conv, op, out)
    clamp = (lo, hi) != (P.INT8_MIN, P.INT8_MAX)
    pooled = f"{name}:pool" if clamp else name
    if op.opcode == "AVERAGE_POOL_2D":  # mean of the valid cells, rounded half away from zero
        conv.add(pooled, OpType.AVGPOOL, [conv.operand(op.inputs[0])], rounding="half_away",
                 count_include_pad=0, **window)
    else:
        conv.add(pooled, OpType.MAXPOOL, [conv.operand(op.inputs[0])], **window)
    if clamp:
        conv.add(name, OpType.CLIP, [pooled], min=lo, max=hi)


def _batch_free(shape, source_shape):
    """A reshape target for a batch of samples: when the model's input has batch 1, the
    output's batch of 1 becomes ours (-1) or, if it has none, it gets one in front."""
    shape = tuple(int(d) for d in shape)
    if source_shape and source_shape[0] == 1:
        return (-1,) + (shape[1:] if shape[:1] == (1,) else shape)
    return shape


def reshape(conv: Converter, op: TflOperator):
    x, out = conv.tensor(op.inputs[0]), conv.tensor(op.outputs[0])
    name = conv.names[op.outputs[0]]
    if x.dtype != out.dtype:
        raise UnsupportedOperatorError(name, op.opcode, f"input {x.dtype} vs output {out.dtype}")
    if int(np.prod(x.shape)) != int(np.prod(out.shape)):
        raise UnsupportedOperatorError(name, op.opcode, f"{x.shape} -> {out.shape} changes the size")
    for extra in op.inputs[1:]:  # the shape operand is a tensor of the model too
        if extra >= 0 and conv.tensor(extra).data is not None:
            conv.operand(extra)
    conv.add(name, OpType.RESHAPE, [conv.operand(op.inputs[0])], shape=_batch_free(out.shape, x.shape))


def pad(conv: Converter, op: TflOperator):
    x = _q8(conv, op, op.inputs[0], "input")
    out = _q8(conv, op, op.outputs[0], "output")
    name = conv.names[op.outputs[0]]
    _same_quantization(conv, op, x, out)
    paddings = conv.tensor(op.inputs[1])
    rank = len(x.shape)
    if paddings.data is None or paddings.data.shape != (rank, 2) or np.any(paddings.data < 0):
        raise UnsupportedOperatorError(name, op.opcode, f"paddings '{paddings.name}' must be a "
                                       f"constant non-negative ({rank}, 2) tensor")
    conv.operand(op.inputs[1])
    value = _zp(out)
    if op.opcode == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        c = conv.tensor(op.inputs[2])
        if c.data is None or c.data.size != 1 or c.dtype != "int8":
            raise UnsupportedOperatorError(name, op.opcode, f"constant_values '{c.name}' must be one int8")
        conv.operand(op.inputs[2])
        value = int(c.data.ravel()[0])
    pads = [int(p) for p in paddings.data[:, 0]] + [int(p) for p in paddings.data[:, 1]]
    conv.add(name, OpType.PAD, [conv.operand(op.inputs[0])], pads=pads, value=value)


def concatenation(conv: Converter, op: TflOperator):
    out = _q8(conv, op, op.outputs[0], "output")
    name = conv.names[op.outputs[0]]
    for k, index in enumerate(op.inputs):
        _same_quantization(conv, op, _q8(conv, op, index, f"input {k + 1}"), out)
    axis = op.options.get("Axis", 0)
    rank = len(out.shape)
    if not -rank <= axis < rank:
        raise UnsupportedOperatorError(name, op.opcode, f"axis {axis} for rank {rank}")
    lo, hi = _act(conv, op, out)
    clamp = (lo, hi) != (P.INT8_MIN, P.INT8_MAX)
    joined = f"{name}:concat" if clamp else name
    conv.add(joined, OpType.CONCAT, [conv.operand(i) for i in op.inputs], axis=axis % rank)
    if clamp:
        conv.add(name, OpType.CLIP, [joined], min=lo, max=hi)


def squeeze(conv: Converter, op: TflOperator):
    reshape(conv, op)  # the output tensor's shape says which axes went


def mean(conv: Converter, op: TflOperator):
    x = _q8(conv, op, op.inputs[0], "input")
    out = _q8(conv, op, op.outputs[0], "output")
    name = conv.names[op.outputs[0]]
    axes_t = conv.tensor(op.inputs[1])
    rank = len(x.shape)
    if axes_t.data is None or axes_t.dtype != "int32":
        raise UnsupportedOperatorError(name, op.opcode, f"axes '{axes_t.name}' must be a constant int32 tensor")
    conv.operand(op.inputs[1])
    raw = [int(a) for a in axes_t.data.ravel()]
    bad = [a for a in raw if not -rank <= a < rank]
    if bad:
        raise UnsupportedOperatorError(name, op.opcode, f"axes {bad} out of range for rank {rank}")
    axes = sorted({a % rank for a in raw})
    if 0 in axes:
        raise UnsupportedOperatorError(name, op.opcode, "a mean over the batch axis is not supported")
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if count <= 0:
        raise UnsupportedOperatorError(name, op.opcode, f"mean over an empty extent {x.shape}")
    total = conv.add(f"{name}:sum", OpType.REDUCE_SUM, [conv.operand(op.inputs[0])], axes=axes,
                     keepdims=int(bool(op.options.get("KeepDims", False))))
    m, s = P.mean_multiplier(x.scale[0], out.scale[0], count)
    conv.quantizer(name, total, out, m, s, P.INT8_MIN, P.INT8_MAX, input_zero_point=_zp(x) * count)


def softmax(conv: Converter, op: TflOperator):
    from .luts import softmax_params

    x = _q8(conv, op, op.inputs[0], "input")
    out = _q8(conv, op, op.outputs[0], "output")
    name = conv.names[op.outputs[0]]
    if out.scale[0] != np.float32(1 / 256) or _zp(out) != -128:
        raise UnsupportedOperatorError(name, op.opcode, f"int8 output must have scale 1/256 and "
                                       f"zero point -128 (got {out.scale[0]}, {_zp(out)})")
    try:
        params = softmax_params(x.scale[0], op.options.get("Beta", 1.0))
    except ValueError as exc:
        raise UnsupportedOperatorError(name, op.opcode, str(exc)) from None
    conv.add(name, OpType.SOFTMAX, [conv.operand(op.inputs[0])], axis=-1, dtype="int8",
             **{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in params.items()})


def lookup(conv: Converter, op: TflOperator):
    from . import luts

    x = _q8(conv, op, op.inputs[0], "input")
    out = _q8(conv, op, op.outputs[0], "output")
    name = conv.names[op.outputs[0]]
    build = {"LOGISTIC": luts.logistic_table, "TANH": luts.tanh_table,
             "HARD_SWISH": luts.hard_swish_table}[op.opcode]
    try:
        table = build(x.scale[0], _zp(x), out.scale[0], _zp(out))
    except ValueError as exc:
        raise UnsupportedOperatorError(name, op.opcode, str(exc)) from None
    conv.add(name, OpType.LOOKUP, [conv.operand(op.inputs[0])], table=np.asarray(table, np.int8),
             offset=128, dtype="int8", function=op.opcode)


def quantize(conv: Converter, op: TflOperator):
    x, out = conv.tensor(op.inputs[0]), _q8(conv, op, op.outputs[0], "output")
    name = conv.names[op.outputs[0]]
    if x.dtype == "float32":
        conv.add(name, OpType.QUANTIZER, [conv.operand(op.inputs[0])], mode="tflite_quantize",
                 scale=float(out.scale[0]), zero_point=_zp(out), lo=P.INT8_MIN, hi=P.INT8_MAX,
                 dtype="int8", rounding="half_away")
        return
    x = _q8(conv, op, op.inputs[0], "input")
    m, s = P.requantize_multiplier(x.scale[0], out.scale[0])
    conv.quantizer(name, conv.operand(op.inputs[0]), out, m, s, P.INT8_MIN, P.INT8_MAX,
                   input_zero_point=_zp(x))


def dequantize(conv: Converter, op: TflOperator):
    x = _q8(conv, op, op.inputs[0], "input")
    out = conv.tensor(op.outputs[0])
    name = conv.names[op.outputs[0]]
    if out.dtype != "float32":
        raise UnsupportedOperatorError(name, op.opcode, f"output dtype {out.dtype}, expected float32")
    conv.add(name, OpType.DEQUANTIZE, [conv.operand(op.inputs[0])], scale=float(x.scale[0]),
             zero_point=_zp(x))


TRANSLATORS = {
    "CONV_2D": conv_2d,
    "DEPTHWISE_CONV_2D": lambda conv, op: conv_2d(conv, op, depthwise=True),
    "FULLY_CONNECTED": fully_connected,
    "ADD": add_sub, "SUB": add_sub, "MUL": mul,
    "AVERAGE_POOL_2D": pool_2d, "MAX_POOL_2D": pool_2d,
    "MEAN": mean, "PAD": pad, "PADV2": pad,
    "RESHAPE": reshape, "SQUEEZE": squeeze, "CONCATENATION": concatenation,
    "SOFTMAX": softmax, "LOGISTIC": lookup, "TANH": lookup, "HARD_SWISH": lookup,
    "QUANTIZE": quantize, "DEQUANTIZE": dequantize,
}
