"""Building the QDQ model of `aidge_lite.export_onnx`: tensor factors and float32
scales, Q/DQ pairs, initializers and the final `onnx.ModelProto`.

`_Emitter` walks the graph and calls one handler per node from its `HANDLERS`
table; the table lives in `export_onnx_ops`, whose `_Exporter` is the class to use.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import QuantizationError, UnsupportedOperatorError
from .ir import Graph, OpType
from .ir.node import META_SHAPE

OPSET = 21
PRODUCER = "aidge_lite.export_onnx"

# QDQ element type name -> numpy dtype (all in QuantizeLinear-21's T2).
_QTYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16}
_WEIGHT_TYPES = {np.dtype(np.int8): np.int8, np.dtype(np.int16): np.int16}

# Relative spread below which a per-channel factor is one per-tensor factor
# (float32, the type of every ONNX scale, cannot tell such values apart).
_COLLAPSE_RTOL = 2.0 ** -22

# Ops that carry integers through unchanged: float op + requantization at the same scale.
_SEAMLESS_ONNX = {
    OpType.RELU: "Relu", OpType.MAXPOOL: "MaxPool", OpType.FLATTEN: "Flatten",
    OpType.RESHAPE: "Reshape", OpType.TRANSPOSE: "Transpose", OpType.SQUEEZE: "Squeeze",
    OpType.UNSQUEEZE: "Unsqueeze", OpType.PAD: "Pad", OpType.IDENTITY: "Identity",
    OpType.DROPOUT: "Identity",
}
# Ops that keep axis 1 in place: a per-channel scale survives them.
_KEEP_CHANNEL_AXIS = {OpType.RELU, OpType.MAXPOOL, OpType.PAD, OpType.IDENTITY, OpType.DROPOUT,
                      OpType.AVGPOOL, OpType.GLOBAL_AVGPOOL}

_FLOAT_INPUT = "float"  # qtype of a graph input: float data, read by the input QUANTIZER only


# --------------------------------------------------------------------------- helpers
def _collapse(factor):
    """A float64 factor as a float when uniform across channels, else a vector."""
    flat = np.ravel(np.asarray(factor, dtype=np.float64))
    ref = float(np.mean(flat))
    if flat.size == 1 or np.all(np.abs(flat - ref) <= _COLLAPSE_RTOL * abs(ref)):
        return ref
    return flat


def _is_vector(value) -> bool:
    return np.ndim(value) > 0


def _f32(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64).astype(np.float32)


def _py(value):
    """An attribute value as plain Python (make_attribute rejects numpy types)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_py(v) for v in value]
    return value


class _Emitter:
    HANDLERS: dict = {}  # OpType -> handler(exporter, node): filled in by export_onnx_ops

    def __init__(self, graph: Graph, batch_dim, opset):
        self.g, self.batch_dim, self.opset = graph, batch_dim, opset
        self.build = True
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.factor: dict[str, object] = {}     # tensor -> F (float or float64 vector)
        self.scale: dict[str, np.ndarray] = {}  # tensor -> float32 QDQ scale (0-d or 1-d)
        self.qtype: dict[str, str | None] = {}  # tensor -> QDQ type; None: accumulator
        self.qname: dict[str, str] = {}         # tensor -> its QuantizeLinear output
        self._shared: dict[tuple, str] = {}
        self._counter = 0

    # ------------------------------------------------------------ emission
    def _unique(self, base: str) -> str:
        self._counter += 1
        return f"{base}#{self._counter}"

    def _init(self, name: str, array) -> str:
        if name in self.inits:
            raise QuantizationError(f"initializer name '{name}' used twice")
        self.inits[name] = numpy_helper.from_array(np.asarray(array), name)
        return name

    def _constant(self, name: str, array) -> str:
        """A constant of the graph as an initializer of the same name (once, if shared)."""
        if name not in self.inits:
            self._init(name, array)
        return name

    def _shared_init(self, kind: str, array: np.ndarray) -> str:
        """An activation scale / zero point initializer, shared by identical values."""
        array = np.asarray(array)
        key = (kind, array.dtype.str, array.shape, array.tobytes())
        if key not in self._shared:
            self._shared[key] = self._init(f"{kind}/{len(self._shared)}", array)
        return self._shared[key]

    def _node(self, op_type: str, inputs, output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output,
                                           **{k: _py(v) for k, v in attrs.items()}))
        return output

    def _dq_args(self, scale: np.ndarray, qtype: str):
        scale = np.asarray(scale, np.float32)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise QuantizationError(f"QDQ scale {scale} is not finite and positive")
        s_name = self._shared_init("scale", scale)
        zp = self._shared_init(f"zero_point_{qtype}", np.zeros(scale.shape, _QTYPES[qtype]))
        return s_name, zp, ({"axis": 1} if scale.ndim else {})

    def _qdq(self, src: str, out: str, scale: np.ndarray, qtype: str) -> str:
        """src (float) -> QuantizeLinear -> `out/q` -> DequantizeLinear -> `out`."""
        s_name, zp, axis = self._dq_args(scale, qtype)
        qname = self._node("QuantizeLinear", [src, s_name, zp], f"{out}/q", **axis)
        self._node("DequantizeLinear", [qname, s_name, zp], out, **axis)
        self.qname[out] = qname
        return out

    def _onnx_attrs(self, op_type: str, attrs: dict) -> dict:
        schema = onnx.defs.get_schema(op_type, self.opset)
        return {k: v for k, v in attrs.items() if k in schema.attributes and v is not None}

    # ----------------------------------------------------------------- walk
    def run(self, build: bool = True):
        self.build = build
        for node in self.g.topo_order():
            if node.op is OpType.CONSTANT:
                continue
            handler = self.HANDLERS.get(node.op)
            if handler is None:
                raise UnsupportedOperatorError(node.name, node.op.value, "no QDQ export")
            handler(self, node)
        for name in self.g.outputs:
            if self.qtype.get(name) in (None, _FLOAT_INPUT):
                raise QuantizationError(
                    f"graph output '{name}' is not a quantized tensor ({self.g.node(name).op.value} "
                    "with no QUANTIZER after it): a QDQ model must end with a DequantizeLinear "
                    "and QuantizeLinear has no int32"
                )
        return self._model() if build else None

    def _model(self) -> onnx.ModelProto:
        inputs = []
        for name in self.g.inputs:
            node = self.g.node(name)
            shape = list(node.attrs["shape"])
            if self.batch_dim is not None and shape:
                shape[0] = self.batch_dim
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(node.attrs.get("dtype", "float32")))
            inputs.append(helper.make_tensor_value_info(name, elem, shape))
        outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, self._output_shape(name))
                   for name in self.g.outputs]
        graph = helper.make_graph(self.nodes, self.g.name or "qdq", inputs, outputs,
                                  list(self.inits.values()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name=PRODUCER)
        model.ir_version = min(model.ir_version, 10)
        if any(not o.type.tensor_type.HasField("shape") for o in model.graph.output):
            self._infer_output_shapes(model)
        for key, value in (("output_scale", {k: _py(self.factor[k]) for k in self.g.outputs}),
                           ("nb_bits", self.g.meta.get("nb_bits")),
                           ("target", self.g.meta.get("target"))):
            entry = model.metadata_props.add()
            entry.key, entry.value = f"aidge_lite.{key}", repr(value)
        return model

    def _output_shape(self, name):
        """Recorded shape of an output, with its batch dim free (or named); None if unknown."""
        node = self.g.node(name)
        while node.meta.get(META_SHAPE) is None and node.op is OpType.QUANTIZER:
            node = self.g.node(node.inputs[0])  # quantizers keep the shape, not always recorded
        shape = node.meta.get(META_SHAPE)
        if shape is None:
            return None
        dims = list(shape)
        if dims:
            batches = {tuple(self.g.node(i).attrs["shape"][:1]) for i in self.g.inputs}
            declared = batches.pop()[0] if len(batches) == 1 and () not in batches else None
            dims[0] = self.batch_dim if self.batch_dim is not None else declared
        return dims

    @staticmethod
    def _infer_output_shapes(model):
        """Output shapes the graph did not record, from ONNX shape inference."""
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
        except Exception as exc:
            raise QuantizationError(f"cannot infer the shape of the graph outputs: {exc}") from exc
        known = {v.name: v for v in (*inferred.value_info, *inferred.output)}
        for out in model.graph.output:
            if not out.type.tensor_type.HasField("shape"):
                found = known.get(out.name)
                if found is None or not found.type.tensor_type.HasField("shape"):
                    raise QuantizationError(f"graph output '{out.name}' has no known shape")
                out.type.tensor_type.shape.CopyFrom(found.type.tensor_type.shape)

    def _require_quantized(self, node, tensor):
        if self.qtype.get(tensor) in (None, _FLOAT_INPUT):
            kind = "an accumulator" if self.qtype.get(tensor) is None else "a float graph input"
            raise QuantizationError(
                f"node '{node.name}' ({node.op.value}): its input '{tensor}' is {kind}, not a "
                "quantized tensor (a QUANTIZER must come first)"
            )
