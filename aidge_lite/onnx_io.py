"""ONNX import: ModelProto -> `Graph` (opsets 7-21 of the default domain).

Operands that ONNX passes as tensors but that only describe the operation
(Reshape's shape, Clip's bounds, Pad's pads, Squeeze/Unsqueeze axes) must be
constants and become attributes, so interpreters never see dynamic shapes.
Every node is named after its (only) output tensor.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import onnx_checks
from .errors import AidgeLiteError, ModelLoadError, UnsupportedOperatorError
from .ir import Graph, Node, OpType, verify
from .onnx_rewrite import normalize

MIN_OPSET, MAX_OPSET = 7, 21


def load_onnx(model, *, base_dir=None, max_tensor_bytes=None) -> Graph:
    """Load an ONNX model (path, bytes or ModelProto) into a verified `Graph`.

    The model is untrusted (`aidge_lite.onnx_checks`): external data is read only from
    inside `base_dir` (default: the folder of a model given as a path; no file at all for
    bytes or a ModelProto), and every tensor the model declares must fit in
    `max_tensor_bytes` (default `onnx_checks.MAX_TENSOR_BYTES`, 2 GiB) before anything
    is allocated.
    """
    try:
        return _load(model, base_dir, max_tensor_bytes)
    except RecursionError as exc:
        raise ModelLoadError("ONNX model nests too deeply to import") from exc
    except MemoryError as exc:
        raise ModelLoadError(f"ONNX model does not fit in memory ({exc or 'MemoryError'}); "
                             "lower its declared shapes or max_tensor_bytes") from exc


def _load(model, base_dir, max_tensor_bytes) -> Graph:
    max_bytes = onnx_checks.budget(max_tensor_bytes)
    proto = _read_model(model, base_dir, max_bytes)
    invalid = onnx_checks.check_model(proto, max_bytes)  # raised after our import's own errors
    opset = _default_opset(proto)
    try:
        proto = normalize(proto)  # constant folding, shared weights copied, 1-D ops as 2-D
    except AidgeLiteError:
        raise
    except Exception as exc:  # a malformed model the rewrites trip over: say why, as a load error
        raise invalid or ModelLoadError(f"cannot fold the constants of the ONNX model: {exc}") from exc
    graph = Graph(proto.graph.name or "onnx_graph")
    graph.meta["opset"] = opset
    importer = _Importer(graph, proto, opset)
    importer.run()
    graph.prune()  # e.g. shape constants absorbed into attributes
    verify(graph)
    onnx_checks.check_graph(graph)
    from .interp.shapes import infer_shapes

    infer_shapes(graph)
    if invalid is not None:
        raise invalid
    return graph


def _read_model(model, base_dir=None, max_bytes=None) -> onnx.ModelProto:
    max_bytes = onnx_checks.budget(max_bytes)
    if isinstance(model, onnx.ModelProto):
        proto, label = model, model.graph.name or "<ModelProto>"
        if onnx_checks.has_external_data(proto):  # resolved into a copy: the caller's stays as is
            proto = onnx.ModelProto()
            proto.CopyFrom(model)
    else:
        is_bytes = isinstance(model, (bytes, bytearray))
        if not is_bytes and not isinstance(model, (str, os.PathLike)):
            raise ModelLoadError(f"cannot load a {type(model).__name__}: pass a path, bytes or a ModelProto")
        label = f"<{len(model)} bytes>" if is_bytes else os.fspath(model)  # never print the bytes
        if not is_bytes and not os.path.isfile(label):
            raise ModelLoadError(f"model file '{label}' does not exist")
        try:
            proto = (onnx.load_from_string(bytes(model)) if is_bytes
                     else onnx.load(label, load_external_data=False))
        except Exception as exc:
            raise ModelLoadError(f"cannot parse ONNX model '{label}': {exc}") from exc
        if not is_bytes and base_dir is None:
            base_dir = os.path.dirname(os.path.abspath(label))
    onnx_checks.resolve_external_data(proto, base_dir, max_bytes)
    onnx_checks.check_tensors(proto, max_bytes)  # before the checker: an error naming the size
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelLoadError(f"invalid ONNX model '{label}': {str(exc).splitlines()[0]}") from exc
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"ONNX model '{label}' has an empty graph")
    return proto


def _default_opset(proto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            if not MIN_OPSET <= entry.version <= MAX_OPSET:
                raise ModelLoadError(
                    f"opset {entry.version} is outside the supported range {MIN_OPSET}..{MAX_OPSET}"
                )
            return entry.version
    raise ModelLoadError("ONNX model imports no default-domain opset")


_DTYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT16: np.int16,
    onnx.TensorProto.UINT16: np.uint16, onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT64: np.int64,
}


class _Importer:
    def __init__(self, graph: Graph, proto: onnx.ModelProto, opset: int):
        self.graph, self.proto, self.onnx_graph, self.opset = graph, proto, proto.graph, opset
        self._shapes = None  # ONNX-inferred shapes, computed on first use
        self.secondary: dict[str, str] = {}  # extra outputs of multi-output nodes -> node
        self.op_type = ""  # ONNX op type of the node being imported

    def run(self):
        initializers = {t.name: t for t in self.onnx_graph.initializer}
        for name, tensor in initializers.items():
            self.graph.add_constant(name, numpy_helper.to_array(tensor))
        for value_info in self.onnx_graph.input:
            if value_info.name not in initializers:
                self._add_input(value_info)
        for onnx_node in self.onnx_graph.node:
            self._add_node(onnx_node)
        for out in self.onnx_graph.output:
            self._check_available(out.name, "graph output")
            self.graph.outputs.append(out.name)

    def _add_input(self, value_info):
        ttype = value_info.type.tensor_type
        if not value_info.type.HasField("tensor_type") or ttype.elem_type not in _DTYPES:
            raise UnsupportedOperatorError(value_info.name, "Input", "only numeric tensor inputs")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
        attrs = {"shape": dims, "dtype": np.dtype(_DTYPES[ttype.elem_type]).name}
        self.graph.add(Node(value_info.name, OpType.INPUT, attrs=attrs))

    def _check_available(self, name: str, user: str):
        if name in self.secondary:
            node = self.secondary[name]
            raise UnsupportedOperatorError(node, self.graph.node(node).op.value,
                                           f"its extra output '{name}' is read by {user}")
        if name not in self.graph:
            raise ModelLoadError(f"{user}: tensor '{name}' is not produced by any node")

    def _add_node(self, onnx_node):
        label = onnx_node.name or (onnx_node.output[0] if onnx_node.output else "?")
        handler = _HANDLERS.get(onnx_node.op_type)
        if onnx_node.domain not in ("", "ai.onnx") or handler is None:
            raise UnsupportedOperatorError(label, onnx_node.op_type)
        attrs = {a.name: _attr_value(a) for a in onnx_node.attribute}
        inputs = list(onnx_node.input)
        for name in inputs:
            if name:
                self._check_available(name, f"node '{label}'")
        out = onnx_node.output[0]
        self.op_type = onnx_node.op_type  # for const()'s error message
        self.outputs, self.onnx_name = list(onnx_node.output), onnx_node.name  # multi-output handlers
        op, inputs, attrs = handler(self, out, inputs, attrs)
        node = Node(out, op, inputs, attrs, {"onnx_name": onnx_node.name})
        if op is OpType.CONSTANT:
            node.inputs = []
        self.graph.add(node)
        for extra in onnx_node.output[1:]:
            if extra and extra not in self.graph:  # handlers may give extra outputs their own node
                self.secondary[extra] = out

    # helpers used by handlers
    def leading_dim(self, name: str):
        """Dim 0 of tensor `name` at the declared input shapes (ONNX shape inference), or None."""
        return self.static_dim(name, 0)

    def static_dim(self, name: str, axis: int):
        """Dim `axis` of tensor `name` at the declared input shapes (ONNX shape inference), or None."""
        if self._shapes is None:
            from .onnx_fold import infer_dims

            self._shapes = infer_dims(self.proto)
        shape = self._shapes.get(name)
        if not shape or not -len(shape) <= axis < len(shape):
            return None
        return shape[axis]

    def static_rank(self, name: str):
        """Rank of tensor `name` (a constant's, or ONNX shape inference's), or None."""
        if self.graph.is_constant(name):
            return self.graph.constant(name).ndim
        self.static_dim(name, 0)
        shape = self._shapes.get(name)
        return None if shape is None else len(shape)

    def const(self, node: str, name: str, what: str) -> np.ndarray:
        if not self.graph.is_constant(name):
            raise UnsupportedOperatorError(node, self.op_type, f"{what} '{name}' must be a constant")
        return self.graph.constant(name)


def _attr_value(attr):
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


Handler = Callable[[_Importer, str, list, dict], tuple]
_HANDLERS: dict[str, Handler] = {}


def _handles(*op_types):
    def deco(fn):
        for t in op_types:
            _HANDLERS[t] = fn
        return fn
    return deco


def _plain(op: OpType) -> Handler:
    def handler(imp, name, inputs, attrs):
        return op, [i for i in inputs if i], attrs
    return handler


for _t, _op in {
    "MatMul": OpType.MATMUL, "Add": OpType.ADD, "Sub": OpType.SUB, "Mul": OpType.MUL,
    "Div": OpType.DIV, "Concat": OpType.CONCAT, "Relu": OpType.RELU,
    "LeakyRelu": OpType.LEAKY_RELU, "Sigmoid": OpType.SIGMOID, "Tanh": OpType.TANH,
    "GlobalAveragePool": OpType.GLOBAL_AVGPOOL, "Flatten": OpType.FLATTEN,
    "Transpose": OpType.TRANSPOSE, "Identity": OpType.IDENTITY, "Gemm": OpType.GEMM,
}.items():
    _HANDLERS[_t] = _plain(_op)


def _pop_unsupported_attr(name, op_type, attrs, key, allowed):
    if attrs.get(key, allowed[0]) not in allowed:
        raise UnsupportedOperatorError(name, op_type, f"{key}={attrs[key]!r}")


@_handles("Conv")
def _conv(imp, name, inputs, attrs):
    if imp.graph.is_constant(inputs[1]) and imp.graph.constant(inputs[1]).ndim != 4:
        raise UnsupportedOperatorError(name, "Conv", "only 2-D convolutions")
    attrs.pop("kernel_shape", None)  # implied by the weights
    return OpType.CONV, [i for i in inputs if i], attrs




def _pool_handler(op):
    def handler(imp, name, inputs, attrs):
        if len(attrs.get("kernel_shape", ())) != 2:
            raise UnsupportedOperatorError(name, op.value, "only 2-D pooling")
        _pop_unsupported_attr(name, op.value, attrs, "storage_order", (0,))
        return op, inputs, attrs
    return handler


_HANDLERS["MaxPool"] = _pool_handler(OpType.MAXPOOL)
_HANDLERS["AveragePool"] = _pool_handler(OpType.AVGPOOL)


@_handles("BatchNormalization")
def _batchnorm(imp, name, inputs, attrs):
    _pop_unsupported_attr(name, "BatchNormalization", attrs, "training_mode", (0,))
    _pop_unsupported_attr(name, "BatchNormalization", attrs, "spatial", (1,))
    attrs.pop("momentum", None)
    return OpType.BATCHNORM, inputs, attrs


@_handles("Reshape")
def _reshape(imp, name, inputs, attrs):
    shape = [int(d) for d in imp.const(name, inputs[1], "Reshape shape")]
    # Keep the batch dimension free: a constant target whose first entry equals
    # the declared batch size copies dim 0 instead, when the data's dim 0 is
    # that size too (same result at the declared shapes; not after a Transpose
    # moved another axis to the front).
    source = imp.graph.node(inputs[0])
    batch = _declared_batch(imp.graph)
    if (source.op is not OpType.CONSTANT and shape and batch is not None and shape[0] == batch
            and imp.leading_dim(inputs[0]) == batch):
        shape[0] = 0
    attrs["shape"] = shape
    return OpType.RESHAPE, inputs[:1], attrs


def _declared_batch(graph):
    dims = [graph.node(i).attrs["shape"] for i in graph.inputs]
    batches = {d[0] for d in dims if d}
    return batches.pop() if len(batches) == 1 and None not in batches else None


@_handles("Clip")
def _clip(imp, name, inputs, attrs):
    if imp.opset >= 11:
        for key, pos in (("min", 1), ("max", 2)):
            if len(inputs) > pos and inputs[pos]:
                attrs[key] = float(imp.const(name, inputs[pos], f"Clip {key}").reshape(()))  # size 1: onnx_checks
    return OpType.CLIP, inputs[:1], attrs


@_handles("Pad")
def _pad(imp, name, inputs, attrs):
    if imp.opset >= 11:
        pads = [int(p) for p in imp.const(name, inputs[1], "Pad pads")]
        if len(inputs) > 2 and inputs[2]:
            attrs["value"] = float(imp.const(name, inputs[2], "Pad value").reshape(()))  # size 1: onnx_checks
        if len(inputs) > 3 and inputs[3]:
            attrs["axes"] = [int(a) for a in imp.const(name, inputs[3], "Pad axes")]
        attrs["pads"] = pads
    _pop_unsupported_attr(name, "Pad", attrs, "mode", ("constant", "reflect", "edge", "wrap"))
    return OpType.PAD, inputs[:1], attrs


def _axes_handler(op):
    def handler(imp, name, inputs, attrs):
        if len(inputs) > 1 and inputs[1]:
            attrs["axes"] = [int(a) for a in imp.const(name, inputs[1], "axes")]
        return op, inputs[:1], attrs
    return handler


_HANDLERS["Squeeze"] = _axes_handler(OpType.SQUEEZE)
_HANDLERS["Unsqueeze"] = _axes_handler(OpType.UNSQUEEZE)


@_handles("Softmax")
def _softmax(imp, name, inputs, attrs):
    if imp.opset < 13:
        attrs.setdefault("axis", 1)
        attrs["legacy_flatten"] = True
    return OpType.SOFTMAX, inputs, attrs


@_handles("Dropout")
def _dropout(imp, name, inputs, attrs):
    if len(inputs) > 2 and inputs[2]:
        if bool(imp.const(name, inputs[2], "Dropout training_mode")):
            raise UnsupportedOperatorError(name, "Dropout", "training_mode=True")
    return OpType.DROPOUT, inputs[:1], {}


@_handles("Constant")
def _constant(imp, name, inputs, attrs):
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return OpType.CONSTANT, [], {"value": np.asarray(attrs[key], dtype=dtype)}
    raise UnsupportedOperatorError(name, "Constant", f"attribute {sorted(attrs)}")


from . import onnx_handlers  # noqa: E402,F401  (registers the handlers of exported-model ops)
