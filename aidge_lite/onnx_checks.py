"""Checks on an untrusted ONNX model, run by `load_onnx` before anything is allocated or imported.

Three concerns, in the order `load_onnx` applies them:

* **External data** (`resolve_external_data`, in `onnx_external`): read only from inside the
  folder the caller names (a model given as a path: its folder; bytes or a ModelProto: none
  unless `base_dir` is given); `..`, absolute paths, symlinks leaving it and non-regular files
  are refused.
* **Memory budget** (`check_model`): every tensor the model declares (initializers, Constant
  values, graph inputs at their declared batch, and every intermediate tensor whose shape ONNX
  shape inference can work out, e.g. the target of a Reshape, ConstantOfShape or Pad) must fit in
  `max_tensor_bytes`; sizes are computed in Python integers from the declared dims, so a
  10**10-element tensor is refused without allocating it.
* **Malformed nodes** (`check_model`, `check_nodes`): what onnxruntime refuses and our engines
  would otherwise compute something for: ONNX strict type/shape inference (ORT's own load-time
  check), plus the checks ORT makes in its kernels: Conv `kernel_shape` and channels vs the
  weights, `auto_pad` values, strides/dilations >= 1, pads >= 0 and, in pools, < kernel, Conv
  bias, BatchNormalization and Gemm `C` shapes, scalar Clip bounds, GlobalAveragePool rank.
  NaN/Inf constants are refused too. `check_graph` then runs on the imported graph (float
  inputs only).

Geometry checks here are ONNX-level and run before the import; `aidge_lite.ir.validate` checks
the same geometry again on every graph (saved graphs too) before a kernel runs.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import shape_inference

from .errors import ModelLoadError, UnsupportedOperatorError
from .onnx_external import declared_bytes, has_external_data, itemsize, resolve_external_data, tensors

__all__ = ["MAX_TENSOR_BYTES", "budget", "check_graph", "check_model", "check_nodes", "check_tensors",
           "has_external_data", "resolve_external_data"]

# Default per-tensor memory budget (bytes) of `load_onnx(..., max_tensor_bytes=None)`. Read at
# call time, so `aidge_lite.onnx_checks.MAX_TENSOR_BYTES = ...` changes it process-wide. 2 GiB:
# VGG-19's largest weight (411 MB) and a batch-64 224x224x64 float activation (822 MB) fit.
MAX_TENSOR_BYTES = 2 << 30

_EXTERNAL = onnx.TensorProto.EXTERNAL
_FLOATS = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
           onnx.TensorProto.FLOAT16: np.float16}
_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def budget(max_tensor_bytes) -> int:
    """The effective budget: the caller's, else the module default (an int > 0)."""
    value = MAX_TENSOR_BYTES if max_tensor_bytes is None else max_tensor_bytes
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelLoadError(f"max_tensor_bytes={value!r}: expected a positive int (bytes)")
    return value


# ------------------------------------------------------------------ memory budget + nodes
def check_model(proto: onnx.ModelProto, max_bytes: int):
    """Refuse any declared tensor over `max_bytes`, stored data that contradicts its dims, and the
    malformed nodes ORT refuses in its kernels (`check_nodes`).

    Returns the error of ONNX strict type/shape inference, or None: `load_onnx` raises it only
    after its own import, whose errors name the node and the op more precisely.
    """
    check_tensors(proto, max_bytes)
    for vi in proto.graph.input:
        _check_value_info(vi, "graph input", max_bytes)
    infos, error = _infer(proto)
    for vi in infos.values():
        _check_value_info(vi, "tensor", max_bytes)
    check_nodes(proto, infos)
    return error


def check_tensors(proto: onnx.ModelProto, max_bytes: int) -> None:
    """Every stored tensor: declared size within the budget, stored data matching its dims, and
    float values finite (NaN/Inf weights: ORT's kernels and ours disagree on where NaN goes,
    e.g. its Relu maps NaN to 0, and no quantizer has a range for them)."""
    for tensor, what in tensors(proto):
        size = declared_bytes(tensor, what)
        if size > max_bytes:
            raise ModelLoadError(f"tensor '{tensor.name}' ({what}) declares {size:,} bytes, over the "
                                 f"budget of {max_bytes:,} (max_tensor_bytes)")
        _check_stored(tensor, what)
        if not _finite(tensor):
            raise ModelLoadError(f"tensor '{tensor.name}' ({what}) holds NaN or Inf values")


def _finite(tensor: onnx.TensorProto) -> bool:
    dtype = _FLOATS.get(tensor.data_type)
    if dtype is None or tensor.data_location == _EXTERNAL:
        return True
    if tensor.HasField("raw_data"):
        return bool(np.isfinite(np.frombuffer(tensor.raw_data, dtype)).all())
    stored = tensor.double_data if tensor.data_type == onnx.TensorProto.DOUBLE else tensor.float_data
    return bool(np.isfinite(np.asarray(stored, np.float64)).all())  # float16: int32_data bits, skipped


def _check_stored(tensor: onnx.TensorProto, what: str) -> None:
    """The stored values match the dims (else numpy_helper.to_array fails or reads garbage)."""
    if tensor.data_location == _EXTERNAL or tensor.data_type in (0, onnx.TensorProto.STRING):
        return
    try:
        field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
    except KeyError:
        raise ModelLoadError(f"tensor '{tensor.name}' ({what}): unknown data type {tensor.data_type}") from None
    count = math.prod(tensor.dims)
    if tensor.HasField("raw_data"):
        stored, need = len(tensor.raw_data), count * itemsize(tensor.data_type)
        if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            need = (count + 1) // 2
    else:
        stored, need = len(getattr(tensor, field)), count
        if tensor.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
            need = 2 * count
    if stored != need:
        raise ModelLoadError(f"tensor '{tensor.name}' ({what}): {stored} stored values/bytes, its dims "
                             f"{list(tensor.dims)} need {need}")


def _check_value_info(vi, what: str, max_bytes: int) -> None:
    ttype = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not ttype.HasField("shape"):
        return
    dims = [d.dim_value if d.HasField("dim_value") else 1 for d in ttype.shape.dim]
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"{what} '{vi.name}': negative dimension in {dims}")
    # a zero dim counts as 1: the batch is free (shape inference runs at batch 1, a caller may
    # feed any), and the other dims of a (0, 23, 1e10, 1e10) input are no smaller for it
    size = math.prod(max(d, 1) for d in dims) * itemsize(ttype.elem_type)
    if size > max_bytes:
        raise ModelLoadError(f"{what} '{vi.name}' has shape {dims}: {size:,} bytes, over the budget "
                             f"of {max_bytes:,} (max_tensor_bytes)")


def _infer(proto: onnx.ModelProto):
    """ONNX strict type and shape inference, the check onnxruntime makes when it loads a model.

    Runs on a copy whose free input dims are 1 (as `interp.shapes` does), without the declared
    outputs and intermediate shapes: ORT merges a wrong declaration leniently, so do we.
    Returns (name -> inferred ValueInfoProto, the strict-mode error or None); after an error
    the shapes come from a lenient run, for the budget.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.graph.value_info[:]
    del copy.graph.output[:]  # an output named after an initializer silently stops the inference
    for vi in copy.graph.input:
        if vi.type.HasField("tensor_type"):
            for d in vi.type.tensor_type.shape.dim:
                if not d.HasField("dim_value"):
                    d.dim_value = 1
    error = None
    try:
        g = shape_inference.infer_shapes(copy, check_type=True, strict_mode=True, data_prop=True).graph
    except Exception as exc:  # noqa: BLE001 -- InferenceError, ValidationError, ValueError (data type 99)...
        error = ModelLoadError(f"invalid ONNX model: {_first_line(exc)}")
        try:
            g = shape_inference.infer_shapes(copy, data_prop=True).graph
        except Exception:  # noqa: BLE001 -- the strict error is reported
            g = copy.graph
    return {vi.name: vi for vi in (*g.input, *g.value_info, *g.output)}, error


def _first_line(exc) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


# ------------------------------------------------------------------ malformed nodes
def check_nodes(proto: onnx.ModelProto, infos: dict) -> None:
    """ORT's kernel-level checks on the main graph, with the shapes `_infer` found."""
    g = proto.graph
    consts = {t.name: t for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            consts[node.output[0]] = next((a.t for a in node.attribute if a.name == "value"), None)
    names = [n.name for n in g.node if n.name]
    if len(set(names)) != len(names):  # ORT refuses the model
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ModelLoadError(f"two nodes are named '{twice[0]}': node names must be unique")
    for node in g.node:
        check = _NODE_CHECKS.get(node.op_type)
        if check is not None and node.domain in ("", "ai.onnx"):
            check(node, node.name or (node.output[0] if node.output else "?"),
                  {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute},
                  lambda name: _shape(name, consts, infos))


def _shape(name: str, consts: dict, infos: dict):
    """Static shape of tensor `name` (tuple, None for unknown dims), or None if unknown."""
    if name in consts and consts[name] is not None:
        return tuple(consts[name].dims)
    vi = infos.get(name)
    if vi is None or not vi.type.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim)


def _refuse(label: str, node, detail: str):
    raise ModelLoadError(f"node '{label}' ({node.op_type}): {detail}")


def _check_window(node, label, attrs, kernel):
    """auto_pad, strides, dilations and pads of a windowed op with `kernel` spatial sizes."""
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in _AUTO_PADS:
        _refuse(label, node, f"auto_pad={auto_pad!r} is not one of {', '.join(_AUTO_PADS)}")
    rank = len(kernel)
    for key in ("strides", "dilations"):
        values = list(attrs.get(key, [1] * rank))
        if len(values) != rank or any(v < 1 for v in values):
            _refuse(label, node, f"{key}={values}: expected {rank} values >= 1")
    pads = list(attrs.get("pads", [0] * 2 * rank))
    if len(pads) != 2 * rank or any(p < 0 for p in pads):
        _refuse(label, node, f"pads={pads}: expected {2 * rank} values >= 0")
    return pads


def _check_conv(node, label, attrs, shape):
    w = shape(node.input[1]) if len(node.input) > 1 else None
    if w is None or len(w) < 3 or None in w:
        return
    kernel = list(w[2:])
    if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != kernel:
        _refuse(label, node, f"kernel_shape={list(attrs['kernel_shape'])} contradicts the weights "
                             f"'{node.input[1]}' of shape {list(w)}")
    _check_window(node, label, attrs, kernel)
    if "pads" in attrs and attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        _refuse(label, node, "has both auto_pad and pads (ORT refuses it)")
    group = attrs.get("group", 1)
    if group < 1 or w[0] % group:
        _refuse(label, node, f"group={group} does not divide the {w[0]} output channels")
    x = shape(node.input[0])
    if x is not None and len(x) > 1 and x[1] is not None and x[1] != w[1] * group:
        _refuse(label, node, f"input '{node.input[0]}' has {x[1]} channels, the weights "
                             f"'{node.input[1]}' {list(w)} with group={group} take {w[1] * group}")
    if len(node.input) > 2 and node.input[2]:
        b = shape(node.input[2])
        if b is not None and b != (w[0],):
            _refuse(label, node, f"bias '{node.input[2]}' has shape {list(b)}, expected [{w[0]}]")


def _check_pool(node, label, attrs, shape):
    kernel = list(attrs.get("kernel_shape", []))
    if not kernel or any(k < 1 for k in kernel):
        _refuse(label, node, f"kernel_shape={kernel}: expected values >= 1")
    pads = _check_window(node, label, attrs, kernel)
    rank = len(kernel)
    if any(pads[i] >= kernel[i] or pads[i + rank] >= kernel[i] for i in range(rank)):
        _refuse(label, node, f"pads={pads} must be smaller than kernel_shape={kernel}")
    if attrs.get("ceil_mode", 0) not in (0, 1):
        _refuse(label, node, f"ceil_mode={attrs['ceil_mode']}: expected 0 or 1")


def _check_gemm(node, label, attrs, shape):
    if len(node.input) < 3 or not node.input[2]:
        return
    a, b, c = (shape(n) for n in node.input[:3])
    if a is None or b is None or c is None or len(a) != 2 or len(b) != 2:
        return
    out = (a[1] if attrs.get("transA", 0) else a[0], b[0] if attrs.get("transB", 0) else b[1])
    # C must broadcast one way into (M, N): ORT refuses anything else, numpy would grow the output
    fits = len(c) <= 2 and all(cd in (1, od) or od is None or cd is None
                               for cd, od in zip(reversed(c), reversed(out)))
    if not fits:
        _refuse(label, node, f"C '{node.input[2]}' of shape {list(c)} does not broadcast to the "
                             f"output shape {[d if d is not None else '?' for d in out]}")


def _check_scalar_operand(pos: int, what: str):
    def check(node, label, attrs, shape):
        if len(node.input) > pos and node.input[pos]:
            s = shape(node.input[pos])
            if s is not None and (len(s) > 1 or s not in ((), (1,))):  # ORT's IsScalar: () or (1,)
                _refuse(label, node, f"{what} '{node.input[pos]}' of shape {list(s)} is not a scalar")
    return check


def _check_batchnorm(node, label, attrs, shape):
    """scale, B, mean and var: 1-D of the input's channel count (ORT checks NumDimensions() == 1)."""
    x = shape(node.input[0])
    channels = x[1] if x is not None and len(x) > 1 else None
    for name in node.input[1:5]:
        s = shape(name)
        if s is not None and (len(s) != 1 or None not in (channels, s[0]) and s[0] != channels):
            _refuse(label, node, f"'{name}' has shape {list(s)}, expected [{channels or 'C'}]")


def _check_global_pool(node, label, attrs, shape):
    x = shape(node.input[0])
    if x is not None and len(x) < 3:  # ORT: "Input dimension cannot be less than 3"
        _refuse(label, node, f"input '{node.input[0]}' has rank {len(x)}, expected >= 3 (N, C, spatial...)")


_NODE_CHECKS = {
    "Conv": _check_conv, "MaxPool": _check_pool, "AveragePool": _check_pool,
    "Gemm": _check_gemm, "Pad": _check_scalar_operand(2, "constant_value"),
    "BatchNormalization": _check_batchnorm, "GlobalAveragePool": _check_global_pool,
    "Clip": lambda *args: [_check_scalar_operand(pos, key)(*args) for pos, key in ((1, "min"), (2, "max"))],
    "Dropout": lambda *args: [_check_scalar_operand(pos, key)(*args)
                              for pos, key in ((1, "ratio"), (2, "training_mode"))],
}


# ------------------------------------------------------------------ after import
def check_graph(graph) -> None:
    """Checks on the imported graph: its inputs are float tensors (an integer input would be
    computed in float: ORT keeps its integer type and wraps where we would not)."""
    for name in graph.inputs:  # after the import: an operand-specific error comes first
        dtype = graph.node(name).attrs["dtype"]
        if dtype not in ("float32", "float64", "float16"):
            raise UnsupportedOperatorError(name, "Input", f"a {dtype} graph input: the float reference "
                                           "computes in float (only float inputs)")
