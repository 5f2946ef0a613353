"""Build small fully-integer int8 ``.tflite`` models as bytes, without TensorFlow.

Two layers:

* a description layer, :class:`Tensor` and :class:`Op`, serialized by
  :func:`build_model` with the flatc-generated builders of the ``tflite``
  package and :class:`flatbuffers.Builder`;
* :class:`Graph`, a small builder with one method per supported op that
  computes output shapes and derived quantization (bias scale, fixed output
  quantization of LOGISTIC / TANH / SOFTMAX, pass-through quantization of
  pools / reshape / pad / concat) following the TFLite int8 quantization
  spec.

Example
-------
>>> g = Graph()
>>> x = g.input("x", (1, 8, 8, 3), scale=0.05, zero_point=-3)
>>> w = np.ones((4, 3, 3, 3), np.int8)
>>> y = g.conv2d(x, w, w_scale=[0.01] * 4, out_scale=0.1, out_zero_point=2, padding="SAME")
>>> model = g.build()  # outputs default to the last tensor created
"""
from dataclasses import dataclass, field

import flatbuffers
import numpy as np
import tflite

__all__ = ["Tensor", "Op", "build_model", "Graph", "conv_output_size", "OPTIONS_TYPES"]

_TYPES = {"int8": tflite.TensorType.INT8, "int32": tflite.TensorType.INT32,
          "float32": tflite.TensorType.FLOAT32, "uint8": tflite.TensorType.UINT8,
          "int16": tflite.TensorType.INT16, "int64": tflite.TensorType.INT64}

#: Builtin options table of each op (ops absent here take no options).
OPTIONS_TYPES = {
    "CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions", "ADD": "AddOptions", "SUB": "SubOptions",
    "MUL": "MulOptions", "AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions",
    "MEAN": "ReducerOptions", "PAD": "PadOptions", "RESHAPE": "ReshapeOptions",
    "SQUEEZE": "SqueezeOptions", "CONCATENATION": "ConcatenationOptions",
    "SOFTMAX": "SoftmaxOptions", "HARD_SWISH": "HardSwishOptions",
    "QUANTIZE": "QuantizeOptions", "DEQUANTIZE": "DequantizeOptions",
}
# Option fields given as strings are enum members of these enums.
_ENUMS = {"padding": tflite.Padding, "fused_activation_function": tflite.ActivationFunctionType}


@dataclass
class Tensor:
    """A TFLite tensor.

    Parameters
    ----------
    name : str
        Unique tensor name (the oracle returns tensors by name).
    shape : tuple of int
    dtype : str
        ``"int8"``, ``"int32"``, ``"float32"``...
    scale, zero_point : float or array_like, optional
        Affine quantization; arrays mean per-channel along ``quant_axis``.
        ``None`` leaves the tensor unquantized.
    data : numpy.ndarray, optional
        Constant content (stored in its own buffer, cast to ``dtype``).
    quant_axis : int
        ``quantized_dimension`` of per-channel quantization.
    """
    name: str
    shape: tuple
    dtype: str = "int8"
    scale: object = None
    zero_point: object = None
    data: object = None
    quant_axis: int = 0


@dataclass
class Op:
    """A builtin operator.

    Parameters
    ----------
    opcode : str
        ``tflite.BuiltinOperator`` member name, e.g. ``"CONV_2D"``.
    inputs, outputs : list of str
        Tensor names; ``None`` marks an absent optional input (index -1).
    options : dict
        Builtin options by schema field name (snake_case), e.g.
        ``{"stride_w": 1, "padding": "SAME"}``; enum values may be given by
        name, vector fields as lists of int.
    version : int
        Operator version recorded in the operator code.
    """
    opcode: str
    inputs: list
    outputs: list
    options: dict = field(default_factory=dict)
    version: int = 1


def _camel(name):
    return "".join(part.capitalize() for part in name.split("_"))


def _int_vector(b, values, dtype=np.int32):
    return b.CreateNumpyVector(np.asarray(values, dtype))


def _options(b, op):
    """Serialize the builtin options of ``op``: (union type, offset) or (0, None)."""
    table = OPTIONS_TYPES.get(op.opcode)
    if table is None:
        if op.options:
            raise ValueError(f"{op.opcode} takes no builtin options, got {op.options}")
        return 0, None
    # Vectors must be created before the table is started.
    vectors = {k: _int_vector(b, v) for k, v in op.options.items() if isinstance(v, (list, tuple))}
    getattr(tflite, f"{table}Start")(b)
    for key, value in op.options.items():
        adder = getattr(tflite, f"{table}Add{_camel(key)}", None)
        if adder is None:
            raise ValueError(f"{table} has no field {key!r}")
        if key in vectors:
            value = vectors[key]
        elif isinstance(value, str):
            value = getattr(_ENUMS[key], value)
        adder(b, value)
    return getattr(tflite.BuiltinOptions, table), getattr(tflite, f"{table}End")(b)


def _quantization(b, t):
    if t.scale is None:
        return None
    scale = np.atleast_1d(np.asarray(t.scale, np.float32))
    zp = np.zeros(scale.shape, np.int64) if t.zero_point is None else np.asarray(t.zero_point, np.int64)
    zp = np.broadcast_to(np.atleast_1d(zp), scale.shape)
    scale_v, zp_v = b.CreateNumpyVector(scale), b.CreateNumpyVector(np.ascontiguousarray(zp))
    tflite.QuantizationParametersStart(b)
    tflite.QuantizationParametersAddScale(b, scale_v)
    tflite.QuantizationParametersAddZeroPoint(b, zp_v)
    tflite.QuantizationParametersAddQuantizedDimension(b, t.quant_axis)
    return tflite.QuantizationParametersEnd(b)


def _table_vector(b, start, offsets):
    start(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def build_model(tensors, ops, inputs, outputs, description="aidge_lite.testing"):
    """Serialize a single-subgraph model.

    Parameters
    ----------
    tensors : list of Tensor
    ops : list of Op
        In execution order.
    inputs, outputs : list of str
        Names of the subgraph inputs and outputs.
    description : str

    Returns
    -------
    bytes
        A ``.tflite`` flatbuffer (schema version 3, identifier ``TFL3``).

    Notes
    -----
    Buffer 0 is the empty sentinel shared by every non-constant tensor; each
    constant gets its own buffer. Each operator code gets
    ``builtin_code = code`` and ``deprecated_builtin_code = min(code, 127)``
    (127 is ``PLACEHOLDER_FOR_GREATER_OP_CODES``); readers take the maximum
    of the two.
    """
    index = {t.name: i for i, t in enumerate(tensors)}
    if len(index) != len(tensors):
        raise ValueError("tensor names must be unique")
    b = flatbuffers.Builder(1024)

    # Buffers: 0 is the empty sentinel, then one per constant tensor.
    buffers, buffer_of = [], {}
    for t in tensors:
        if t.data is not None:
            raw = np.ascontiguousarray(np.asarray(t.data).astype(t.dtype)).reshape(-1).view(np.uint8)
            data = b.CreateNumpyVector(raw)
            tflite.BufferStart(b)
            tflite.BufferAddData(b, data)
            buffer_of[t.name] = len(buffers) + 1
            buffers.append(tflite.BufferEnd(b))
    tflite.BufferStart(b)
    buffers.insert(0, tflite.BufferEnd(b))

    tensor_offs = []
    for t in tensors:
        name = b.CreateString(t.name)
        shape = _int_vector(b, t.shape)
        quant = _quantization(b, t)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, _TYPES[str(np.dtype(t.dtype))])
        tflite.TensorAddBuffer(b, buffer_of.get(t.name, 0))
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        tensor_offs.append(tflite.TensorEnd(b))

    codes = []  # (opcode, version), index = opcode_index
    op_offs = []
    for op in ops:
        key = (op.opcode, op.version)
        if key not in codes:
            codes.append(key)
        ins = _int_vector(b, [-1 if n is None else index[n] for n in op.inputs])
        outs = _int_vector(b, [index[n] for n in op.outputs])
        opt_type, opt = _options(b, op)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, codes.index(key))
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if opt is not None:
            tflite.OperatorAddBuiltinOptionsType(b, opt_type)
            tflite.OperatorAddBuiltinOptions(b, opt)
        op_offs.append(tflite.OperatorEnd(b))

    code_offs = []
    for name, version in codes:
        code = getattr(tflite.BuiltinOperator, name)
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, version)
        code_offs.append(tflite.OperatorCodeEnd(b))

    sg_tensors = _table_vector(b, tflite.SubGraphStartTensorsVector, tensor_offs)
    sg_ops = _table_vector(b, tflite.SubGraphStartOperatorsVector, op_offs)
    sg_in = _int_vector(b, [index[n] for n in inputs])
    sg_out = _int_vector(b, [index[n] for n in outputs])
    sg_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, sg_tensors)
    tflite.SubGraphAddInputs(b, sg_in)
    tflite.SubGraphAddOutputs(b, sg_out)
    tflite.SubGraphAddOperators(b, sg_ops)
    tflite.SubGraphAddName(b, sg_name)
    subgraph = tflite.SubGraphEnd(b)

    m_codes = _table_vector(b, tflite.ModelStartOperatorCodesVector, code_offs)
    m_subgraphs = _table_vector(b, tflite.ModelStartSubgraphsVector, [subgraph])
    m_buffers = _table_vector(b, tflite.ModelStartBuffersVector, buffers)
    m_desc = b.CreateString(description)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, m_codes)
    tflite.ModelAddSubgraphs(b, m_subgraphs)
    tflite.ModelAddDescription(b, m_desc)
    tflite.ModelAddBuffers(b, m_buffers)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def conv_output_size(size, kernel, stride, dilation, padding):
    """Output extent of a TFLite conv / pool along one axis (``SAME`` or ``VALID``)."""
    if padding == "SAME":
        return -(-size // stride)
    return (size - dilation * (kernel - 1) - 1) // stride + 1


def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


class Graph:
    """Incremental builder of a single-subgraph int8 model.

    Every op method takes input tensor names, creates the output tensor (shape
    and quantization derived from the inputs and the TFLite int8 spec) and
    returns its name. Quantization arguments of ops whose output
    quantization is fixed by the spec are not accepted.
    """

    def __init__(self):
        self.tensors, self.ops, self.inputs = {}, [], []

    def tensor(self, name):
        """The :class:`Tensor` called ``name``."""
        return self.tensors[name]

    def _q(self, name):
        return self.tensors[name].scale, self.tensors[name].zero_point

    def _add(self, tensor):
        if tensor.name in self.tensors:
            raise ValueError(f"duplicate tensor name {tensor.name!r}")
        self.tensors[tensor.name] = tensor
        return tensor.name

    def _name(self, name, prefix):
        if name is not None:
            return name
        i = len(self.tensors)
        while f"{prefix}_{i}" in self.tensors:
            i += 1
        return f"{prefix}_{i}"

    def input(self, name, shape, scale=None, zero_point=None, dtype="int8"):
        """Declare a subgraph input; returns its name."""
        self.inputs.append(name)
        return self._add(Tensor(name, tuple(shape), dtype, scale, zero_point))

    def const(self, data, dtype="int8", scale=None, zero_point=None, quant_axis=0, name=None):
        """Declare a constant tensor holding ``data``; returns its name."""
        data = np.asarray(data).astype(dtype)
        return self._add(Tensor(self._name(name, "const"), data.shape, dtype, scale, zero_point,
                                data, quant_axis))

    def _op(self, opcode, inputs, shape, scale, zero_point, options=None, dtype="int8", name=None):
        out = self._add(Tensor(self._name(name, opcode.lower()), tuple(int(d) for d in shape), dtype,
                               scale, zero_point))
        self.ops.append(Op(opcode, list(inputs), [out], dict(options or {})))
        return out

    def _conv_like(self, opcode, x, weights, bias, w_scale, out_scale, out_zero_point,
                   stride, padding, dilation, activation, quant_axis, out_channels, name, extra):
        xt = self.tensors[x]
        w_scale = np.asarray(w_scale, np.float32).reshape(-1)
        w = self.const(weights, "int8", w_scale, np.zeros(w_scale.size, np.int64),
                       quant_axis if w_scale.size > 1 else 0, name=self._name(None, "weights"))
        ins = [x, w]
        if bias is not None:
            b_scale = np.float32(xt.scale) * w_scale
            ins.append(self.const(bias, "int32", b_scale, np.zeros(b_scale.size, np.int64), 0,
                                  name=self._name(None, "bias")))
        (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
        kh, kw = np.shape(weights)[1:3]
        n, h, wd, _ = xt.shape
        shape = (n, conv_output_size(h, kh, sh, dh, padding),
                 conv_output_size(wd, kw, sw, dw, padding), out_channels)
        opts = dict(padding=padding, stride_h=sh, stride_w=sw, dilation_h_factor=dh,
                    dilation_w_factor=dw, fused_activation_function=activation, **extra)
        return self._op(opcode, ins, shape, out_scale, out_zero_point, opts, name=name)

    def conv2d(self, x, weights, bias=None, *, w_scale, out_scale, out_zero_point, stride=1,
               padding="VALID", dilation=1, activation="NONE", name=None):
        """CONV_2D. ``weights`` int8 OHWI, per-channel ``w_scale`` (quantized_dimension 0,
        zero points 0); ``bias`` int32 [O] with scale ``in_scale * w_scale[c]``.

        LiteRT requires a bias for quantized CONV_2D: ``bias=None`` stores zeros.
        """
        if bias is None:
            bias = np.zeros(np.shape(weights)[0], np.int32)
        return self._conv_like("CONV_2D", x, weights, bias, w_scale, out_scale, out_zero_point,
                               stride, padding, dilation, activation, 0, np.shape(weights)[0],
                               name, {})

    def depthwise_conv2d(self, x, weights, bias=None, *, w_scale, out_scale, out_zero_point,
                         stride=1, padding="VALID", dilation=1, activation="NONE", name=None):
        """DEPTHWISE_CONV_2D. ``weights`` int8 [1, kh, kw, C*M], per-channel ``w_scale``
        (quantized_dimension 3); the depth multiplier M is derived from the shapes."""
        c_out = np.shape(weights)[3]
        mult = c_out // self.tensors[x].shape[3]
        return self._conv_like("DEPTHWISE_CONV_2D", x, weights, bias, w_scale, out_scale,
                               out_zero_point, stride, padding, dilation, activation, 3, c_out,
                               name, {"depth_multiplier": mult})

    def fully_connected(self, x, weights, bias=None, *, w_scale, out_scale, out_zero_point,
                        keep_num_dims=False, activation="NONE", name=None):
        """FULLY_CONNECTED. ``weights`` int8 [out, in] (``w_scale`` scalar, or per output
        channel); ``bias`` int32 [out] or None. The input is flattened to
        [-1, in] unless ``keep_num_dims``."""
        xt = self.tensors[x]
        w_scale = np.asarray(w_scale, np.float32).reshape(-1)
        w_scale = w_scale if w_scale.size > 1 else w_scale[0]
        w = self.const(weights, "int8", w_scale, np.zeros(np.size(w_scale), np.int64),
                       name=self._name(None, "weights"))
        ins = [x, w]
        if bias is not None:
            ins.append(self.const(bias, "int32", np.float32(xt.scale) * w_scale,
                                  np.zeros(np.size(w_scale), np.int64), name=self._name(None, "bias")))
        n_out, n_in = np.shape(weights)
        shape = (*xt.shape[:-1], n_out) if keep_num_dims else (int(np.prod(xt.shape)) // n_in, n_out)
        opts = dict(fused_activation_function=activation, keep_num_dims=bool(keep_num_dims))
        return self._op("FULLY_CONNECTED", ins, shape, out_scale, out_zero_point, opts, name=name)

    def _binary(self, opcode, a, b, out_scale, out_zero_point, activation, name):
        shape = np.broadcast_shapes(self.tensors[a].shape, self.tensors[b].shape)
        return self._op(opcode, [a, b], shape, out_scale, out_zero_point,
                        {"fused_activation_function": activation}, name=name)

    def add(self, a, b, *, out_scale, out_zero_point, activation="NONE", name=None):
        """ADD with numpy broadcasting (likewise :meth:`sub`, :meth:`mul`)."""
        return self._binary("ADD", a, b, out_scale, out_zero_point, activation, name)

    def sub(self, a, b, *, out_scale, out_zero_point, activation="NONE", name=None):
        return self._binary("SUB", a, b, out_scale, out_zero_point, activation, name)

    def mul(self, a, b, *, out_scale, out_zero_point, activation="NONE", name=None):
        return self._binary("MUL", a, b, out_scale, out_zero_point, activation, name)

    def hard_swish(self, x, *, out_scale, out_zero_point, name=None):
        """HARD_SWISH."""
        return self._op("HARD_SWISH", [x], self.tensors[x].shape, out_scale, out_zero_point,
                        name=name)

    def logistic(self, x, name=None):
        """LOGISTIC; output quantization fixed to scale 1/256, zero point -128."""
        return self._op("LOGISTIC", [x], self.tensors[x].shape, 1 / 256, -128, name=name)

    def tanh(self, x, name=None):
        """TANH; output quantization fixed to scale 1/128, zero point 0."""
        return self._op("TANH", [x], self.tensors[x].shape, 1 / 128, 0, name=name)

    def softmax(self, x, beta=1.0, name=None):
        """SOFTMAX over the last axis; output scale 1/256, zero point -128."""
        return self._op("SOFTMAX", [x], self.tensors[x].shape, 1 / 256, -128,
                        {"beta": float(beta)}, name=name)

    def quantize(self, x, *, out_scale, out_zero_point, name=None):
        """QUANTIZE: float32 -> int8, or int8 -> int8 requantization."""
        return self._op("QUANTIZE", [x], self.tensors[x].shape, out_scale, out_zero_point,
                        name=name)

    def dequantize(self, x, name=None):
        """DEQUANTIZE: int8 -> float32."""
        return self._op("DEQUANTIZE", [x], self.tensors[x].shape, None, None, dtype="float32",
                        name=name)

    def _pool(self, opcode, x, filter_size, stride, padding, activation, name):
        (fh, fw), (sh, sw) = _pair(filter_size), _pair(stride)
        n, h, w, c = self.tensors[x].shape
        shape = (n, conv_output_size(h, fh, sh, 1, padding), conv_output_size(w, fw, sw, 1, padding), c)
        opts = dict(padding=padding, stride_h=sh, stride_w=sw, filter_height=fh, filter_width=fw,
                    fused_activation_function=activation)
        return self._op(opcode, [x], shape, *self._q(x), opts, name=name)

    def average_pool2d(self, x, filter_size, stride=1, padding="VALID", activation="NONE", name=None):
        """AVERAGE_POOL_2D (likewise :meth:`max_pool2d`); the output keeps the input quantization."""
        return self._pool("AVERAGE_POOL_2D", x, filter_size, stride, padding, activation, name)

    def max_pool2d(self, x, filter_size, stride=1, padding="VALID", activation="NONE", name=None):
        return self._pool("MAX_POOL_2D", x, filter_size, stride, padding, activation, name)

    def mean(self, x, axes, keep_dims=False, out_scale=None, out_zero_point=None, name=None):
        """MEAN over ``axes`` (int32 constant); output quantization defaults to the input's."""
        shape = list(self.tensors[x].shape)
        axes = sorted({a % len(shape) for a in np.atleast_1d(axes).tolist()})
        out = [1 if i in axes else d for i, d in enumerate(shape)] if keep_dims else \
              [d for i, d in enumerate(shape) if i not in axes]
        if out_scale is None:
            out_scale, out_zero_point = self._q(x)
        ax = self.const(np.array(axes, np.int32), "int32", name=self._name(None, "axes"))
        return self._op("MEAN", [x, ax], out, out_scale, out_zero_point,
                        {"keep_dims": bool(keep_dims)}, name=name)

    def pad(self, x, paddings, name=None):
        """PAD with an int32 [rank, 2] constant; pads with the zero point."""
        paddings = np.asarray(paddings, np.int32).reshape(-1, 2)
        shape = np.asarray(self.tensors[x].shape) + paddings.sum(axis=1)
        p = self.const(paddings, "int32", name=self._name(None, "paddings"))
        return self._op("PAD", [x, p], shape, *self._q(x), name=name)

    def reshape(self, x, new_shape, name=None):
        """RESHAPE with ``new_shape`` as an int32 constant input (and option)."""
        shape = np.empty(self.tensors[x].shape).reshape(new_shape).shape
        s = self.const(np.asarray(new_shape, np.int32), "int32", name=self._name(None, "shape"))
        return self._op("RESHAPE", [x, s], shape, *self._q(x),
                        {"new_shape": [int(d) for d in new_shape]}, name=name)

    def squeeze(self, x, axes=None, name=None):
        """SQUEEZE ``axes`` (all size-1 axes when None)."""
        shape = self.tensors[x].shape
        dims = [i for i, d in enumerate(shape) if d == 1] if axes is None else \
            [a % len(shape) for a in axes]
        out = [d for i, d in enumerate(shape) if i not in dims]
        opts = {} if axes is None else {"squeeze_dims": [int(a) for a in axes]}
        return self._op("SQUEEZE", [x], out, *self._q(x), opts, name=name)

    def concatenation(self, xs, axis, activation="NONE", name=None):
        """CONCATENATION along ``axis``; output keeps the quantization of ``xs[0]``."""
        shapes = [self.tensors[x].shape for x in xs]
        ax = axis % len(shapes[0])
        out = list(shapes[0])
        out[ax] = sum(s[ax] for s in shapes)
        return self._op("CONCATENATION", xs, out, *self._q(xs[0]),
                        {"axis": int(axis), "fused_activation_function": activation}, name=name)

    def build(self, outputs=None):
        """Serialize to ``.tflite`` bytes; ``outputs`` defaults to the last op's output."""
        outputs = [self.ops[-1].outputs[0]] if outputs is None else list(outputs)
        return build_model(list(self.tensors.values()), self.ops, self.inputs, outputs)
