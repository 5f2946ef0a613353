"""Read a `.tflite` flatbuffer into plain Python records.

The flatbuffer is parsed by the `tflite` package (flatc-generated from TFLite's
schema); this module only copies what the importer needs into `TflTensor` /
`TflOperator` records and checks what a hostile or broken file can get wrong:
the file identifier, one subgraph, tensor and buffer indices in range, and every
constant buffer of exactly the size its shape and dtype need. Every failure is a
`ModelLoadError` naming the tensor or operator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError

# TensorType enum values of the schema -> NumPy dtypes we can hold.
DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_,
          7: np.int16, 9: np.int8, 10: np.float64, 16: np.uint16}
TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string",
              6: "bool", 7: "int16", 8: "complex64", 9: "int8", 10: "float64",
              11: "complex128", 12: "uint64", 13: "resource", 14: "variant", 15: "uint32",
              16: "uint16", 17: "int4", 18: "bfloat16"}


@dataclass
class TflTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str                      # TYPE_NAMES entry
    scale: np.ndarray | None = None  # float32, one per tensor or per channel
    zero_point: np.ndarray | None = None  # int64
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # constant buffer, shaped

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale.size > 0


@dataclass
class TflOperator:
    index: int
    opcode: str            # BuiltinOperator name, e.g. "CONV_2D"
    inputs: list[int]      # tensor indices, -1 = optional input absent
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class TflModel:
    tensors: list[TflTensor]
    operators: list[TflOperator]
    inputs: list[int]
    outputs: list[int]
    description: str = ""


def read_tflite(source) -> TflModel:
    """Parse a `.tflite` file (path or bytes) into a `TflModel`."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf, where = bytes(source), "<bytes>"
    else:
        where = str(source)
        try:
            buf = Path(source).read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read TFLite model '{where}': {exc}") from exc
    import tflite

    if len(buf) < 8 or not tflite.Model.ModelBufferHasIdentifier(buf, 0):
        raise ModelLoadError(f"'{where}' is not a TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        return _read(tflite, buf)
    except ModelLoadError as exc:
        raise ModelLoadError(f"'{where}': {exc}") from None
    except Exception as exc:  # flatbuffers reads out of range on a truncated/corrupt file
        raise ModelLoadError(f"'{where}' is truncated or corrupted ({type(exc).__name__}: {exc})") from exc


def _read(tflite, buf: bytes) -> TflModel:
    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() != 1:
        raise ModelLoadError(f"{model.SubgraphsLength()} subgraphs; only single-subgraph models are supported")
    graph = model.Subgraphs(0)
    opcodes = [_opcode_name(tflite, model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    n_buffers = model.BuffersLength()
    tensors = [_tensor(tflite, model, buf, graph.Tensors(i), i, n_buffers)
               for i in range(graph.TensorsLength())]
    n_tensors = len(tensors)
    operators = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = op.OpcodeIndex()
        if not 0 <= code < len(opcodes):
            raise ModelLoadError(f"operator #{i}: opcode index {code} out of range")
        ins = [int(t) for t in _as_list(op.InputsAsNumpy())]
        outs = [int(t) for t in _as_list(op.OutputsAsNumpy())]
        for t in ins + outs:
            if not -1 <= t < n_tensors:
                raise ModelLoadError(f"operator #{i} ({opcodes[code]}): tensor index {t} out of range")
        operators.append(TflOperator(i, opcodes[code], ins, outs, _options(tflite, op)))
    inputs = [int(t) for t in _as_list(graph.InputsAsNumpy())]
    outputs = [int(t) for t in _as_list(graph.OutputsAsNumpy())]
    for t in inputs + outputs:
        if not 0 <= t < n_tensors:
            raise ModelLoadError(f"graph input/output tensor index {t} out of range")
    description = (model.Description() or b"").decode("utf-8", "replace")
    return TflModel(tensors, operators, inputs, outputs, description)


def _as_list(array):
    return [] if isinstance(array, int) else list(array)  # flatbuffers gives 0 for an absent vector


def _opcode_name(tflite, code) -> str:
    value = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # codes > 127 live in the new field
    if value == tflite.BuiltinOperator.CUSTOM:
        return "CUSTOM:" + (code.CustomCode() or b"").decode("utf-8", "replace")
    names = _builtin_names(tflite)
    return names.get(value, f"BUILTIN_{value}")


_NAMES: dict[int, str] = {}


def _builtin_names(tflite) -> dict[int, str]:
    if not _NAMES:
        _NAMES.update({v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")})
    return _NAMES


def _tensor(tflite, model, buf, t, index, n_buffers) -> TflTensor:
    name = (t.Name() or b"").decode("utf-8", "replace") or f"tensor_{index}"
    dtype = TYPE_NAMES.get(t.Type(), f"type_{t.Type()}")
    shape = tuple(int(d) for d in _as_list(t.ShapeAsNumpy()))
    tensor = TflTensor(index, name, shape, dtype)
    q = t.Quantization()
    if q is not None and not q.ScaleIsNone() and q.ScaleLength() > 0:
        tensor.scale = np.asarray(q.ScaleAsNumpy(), np.float32).copy()
        zp = _as_list(q.ZeroPointAsNumpy())
        tensor.zero_point = (np.asarray(zp, np.int64) if len(zp) else
                             np.zeros(tensor.scale.size, np.int64))
        tensor.quantized_dimension = int(q.QuantizedDimension())
        if tensor.zero_point.size != tensor.scale.size:
            raise ModelLoadError(f"tensor '{name}': {tensor.scale.size} scales but "
                                 f"{tensor.zero_point.size} zero points")
        if not np.all(np.isfinite(tensor.scale)) or not np.all(tensor.scale > 0):
            bad = tensor.scale[~(np.isfinite(tensor.scale) & (tensor.scale > 0))][0]
            raise ModelLoadError(f"tensor '{name}': quantization scale {float(bad)!r}; "
                                 f"scales must be finite and > 0")
    if t.Sparsity() is not None:
        raise ModelLoadError(f"tensor '{name}': sparse tensors are not supported")
    b = t.Buffer()
    if not 0 <= b < max(n_buffers, 1):
        raise ModelLoadError(f"tensor '{name}': buffer index {b} out of range ({n_buffers} buffers)")
    raw = _buffer_bytes(model.Buffers(b), buf, name) if n_buffers else b""
    if raw:
        if dtype not in ("float32", "float16", "int32", "uint8", "int64", "bool", "int16",
                         "int8", "float64", "uint16"):
            raise ModelLoadError(f"tensor '{name}': constant of dtype {dtype} is not supported")
        np_dtype = np.dtype(DTYPES[t.Type()]).newbyteorder("<")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if len(raw) != count * np_dtype.itemsize:
            raise ModelLoadError(f"tensor '{name}': buffer holds {len(raw)} bytes, shape {shape} "
                                 f"of {dtype} needs {count * np_dtype.itemsize}")
        tensor.data = np.frombuffer(raw, np_dtype).astype(np_dtype.newbyteorder("="))
        tensor.data = tensor.data.reshape(shape)
    return tensor


def _buffer_bytes(buffer, buf: bytes, name: str) -> bytes:
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1:  # large models keep buffers after the flatbuffer, at an absolute offset
        if offset + size > len(buf):
            raise ModelLoadError(f"tensor '{name}': buffer [{offset}, {offset + size}) lies past "
                                 f"the end of the file ({len(buf)} bytes)")
        return buf[offset:offset + size]
    data = buffer.DataAsNumpy()
    return b"" if isinstance(data, int) else data.tobytes()


# ------------------------------------------------------------------ options
_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH",
                5: "SIGN_BIT", 6: "SIGN_BIT"}
_PADDING = {0: "SAME", 1: "VALID"}


def _options(tflite, op) -> dict:
    """The builtin options the importer reads, as a plain dict (absent table -> defaults)."""
    table = op.BuiltinOptions()
    kind = op.BuiltinOptionsType()
    names = {v: k for k, v in vars(tflite.BuiltinOptions).items() if not k.startswith("_")}
    cls_name = names.get(kind, "NONE")
    if table is None or cls_name == "NONE":
        return {}
    opts = getattr(tflite, cls_name)()
    opts.Init(table.Bytes, table.Pos)
    out = {"_kind": cls_name}
    for attr in ("Padding", "StrideW", "StrideH", "DilationWFactor", "DilationHFactor",
                 "FusedActivationFunction", "DepthMultiplier", "FilterWidth", "FilterHeight",
                 "KeepNumDims", "KeepDims", "Beta", "Axis", "WeightsFormat",
                 "PotScaleInt16", "AsymmetricQuantizeInputs"):
        getter = getattr(opts, attr, None)
        if getter is not None:
            out[attr] = getter()
    if hasattr(opts, "SqueezeDimsAsNumpy"):
        out["SqueezeDims"] = [int(d) for d in _as_list(opts.SqueezeDimsAsNumpy())]
    if hasattr(opts, "NewShapeAsNumpy"):
        out["NewShape"] = [int(d) for d in _as_list(opts.NewShapeAsNumpy())]
    if "Padding" in out:
        out["Padding"] = _PADDING.get(out["Padding"], f"padding_{out['Padding']}")
    if "FusedActivationFunction" in out:
        out["FusedActivationFunction"] = _ACTIVATIONS.get(out["FusedActivationFunction"], "UNKNOWN")
    return out
