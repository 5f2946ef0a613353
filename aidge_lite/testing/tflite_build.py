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
