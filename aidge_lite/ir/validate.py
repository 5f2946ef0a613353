"""The one validation layer: what every entry point checks before a kernel runs.

Three levels, all raising an `aidge_lite.errors` exception that names the node:

- `check_node(node)`: a node's own attributes, without looking at tensors: window
  geometry (strides, dilations, pads, kernel, group: integers, > 0, pads >= 0 and,
  for pools, < kernel as ONNX requires), Gemm flags, quantizer parameters
  (rounding, dtype and bounds, finite scales, multipliers below 2^31 and shifts in
  the kernels' range, compared as Python ints), zero points. `verify` calls it on
  every node, so the importers and every PTQ pass go through it.
- `validate(graph)`: `verify` plus what only the whole graph tells: names, graph
  input shapes and dtypes, constant dtypes, the stored target, and for an integer
  graph integer weights, no Gemm alpha/beta, only ops the integer engine has.
  Both engines call it on entry (`Interpreter.run`, once per graph state: the walk plan
  of `interp.walk_plan` is rebuilt, and the graph validated again, whenever something a run
  depends on changed), and so does `serialize.load`.
- `check_operands(graph, node, operands)` (in `operand_checks`): the arrays an op is
  about to read. Called by the shared graph walk for both engines, before the op.

Geometry that depends on the input size (kernel larger than the padded input,
windows entirely in the padding) is checked in `interp.geometry.window_geometry`,
which both engines call.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import GraphError, UnsupportedOperatorError
from .node import Node
from .operand_checks import EXACT_LIMIT, check_operands, max_abs  # noqa: F401  (the runtime level)
from .ops import OpType

op = OpType

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
ROUNDINGS = ("half_away", "half_up", "half_even", "floor")
# QUANTIZER modes the engines implement (interp/quant_ops.py, interp/zero_point.py).
QUANTIZER_MODES = ("float", "int", "gemmlowp", "tflite_quantize", "double")
# Activation dtypes a quantizer may produce, with their [min, max].
_DTYPE_LIMITS = {t: (int(np.iinfo(t).min), int(np.iinfo(t).max))
                 for t in ("int8", "uint8", "int16", "uint16", "int32", "int64")}
# A requant_int shift: right shifts up to 62, left shifts up to 31 (kernels/requant.py).
SHIFT_RANGE = (-31, 62)
MULTIPLIER_LIMIT = 1 << 31  # |multiplier| < 2^31: the kernels form acc * m exactly
MAX_DIM = 1 << 40  # a declared dimension beyond this is a corrupted file, not a model

WINDOW_OPS = frozenset({op.CONV, op.MAXPOOL, op.AVGPOOL})
# In an integer graph: ops a float tensor may cross on its way to a quantizer (data movement
# only), and the attributes each op's integer form needs (without them the fake-quant engine
# would fall back to float arithmetic).
_FLOAT_PASS_THROUGH = frozenset({op.FLATTEN, op.RESHAPE, op.TRANSPOSE, op.SQUEEZE, op.UNSQUEEZE,
                                 op.IDENTITY, op.DROPOUT, op.PAD})
_INTEGER_ATTRS = {op.AVGPOOL: ("rounding",), op.GLOBAL_AVGPOOL: ("rounding",),
                  op.SOFTMAX: ("diff_min",), op.MUL: ("input_zero_points",),
                  op.CLIP: ("min", "max")}


def _fail(node: Node, message: str) -> GraphError:
    return GraphError(f"node '{node.name}' ({node.op.value}): {message}")


def is_int(value) -> bool:
    """An integer scalar (Python or NumPy), not a bool."""
    return type(value) is int or isinstance(value, np.integer)  # (the Integral ABC is slow)


def _int_list(node: Node, name: str, length: int, minimum: int, default=None) -> tuple[int, ...] | None:
    value = node.attrs.get(name, default)
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.dtype.kind in "iu" else list(value)
    if not isinstance(value, (list, tuple)) or len(value) != length or not all(map(is_int, value)):
        raise _fail(node, f"{name} must be {length} integers, got {value!r}")
    if min(value) < minimum:
        raise _fail(node, f"{name} {list(value)} must be >= {minimum}")
    return tuple(int(v) for v in value)


def _flag(node: Node, name: str) -> None:
    value = node.attrs.get(name, 0)
    if not (is_int(value) or isinstance(value, (bool, np.bool_))) or int(value) not in (0, 1):
        raise _fail(node, f"{name} must be 0 or 1, got {value!r}")


def _finite_number(node: Node, name: str, default=None):
    value = node.attrs.get(name, default)
    if value is None:
        return None
    if not (type(value) in (int, float) or isinstance(value, (np.integer, np.floating))) \
            or not math.isfinite(value):
        raise _fail(node, f"{name} must be a finite number, got {value!r}")
    return value


# ------------------------------------------------------------------ per node
def check_node(node: Node) -> None:
    """Raise `GraphError` when a node's attributes cannot describe a valid op."""
    if node.op in WINDOW_OPS:
        check_window_attrs(node)
    elif node.op is op.GEMM:
        for flag in ("transA", "transB"):
            _flag(node, flag)
        _finite_number(node, "alpha")
        _finite_number(node, "beta")
    elif node.op is op.QUANTIZER:
        check_quantizer(node)
    elif node.op is op.CONCAT:
        if not is_int(node.attrs["axis"]):
            raise _fail(node, f"axis must be an integer, got {node.attrs['axis']!r}")
    elif node.op is op.CONSTANT:
        value = node.attrs["value"]
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            what = type(value).__name__ if not isinstance(value, np.ndarray) else f"dtype {value.dtype}"
            raise _fail(node, f"value must be a numeric array, got {what}")
    elif node.op is op.INPUT:
        _check_input_attrs(node)
    elif node.op is op.LOOKUP:
        table = node.attrs["table"]
        if not isinstance(table, np.ndarray) or table.ndim != 1 or not table.size \
                or table.dtype.kind not in "iu":
            raise _fail(node, "table must be a non-empty 1-D integer array")
        _bounded_int(node, "offset", node.attrs["offset"], 0, table.size - 1)
    elif node.op is op.SOFTMAX and "diff_min" in node.attrs:
        _check_int_softmax(node)
    for name in ("input_zero_point", "weight_zero_point", "zero_point"):
        if name in node.attrs and node.op is not op.DEQUANTIZE:
            _bounded_int(node, name, node.attrs[name], -(1 << 31), (1 << 31) - 1)


def _bounded_int(node, name, value, lo, hi) -> int:
    if type(value) is int and lo <= value <= hi:
        return value
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iu":
        value = value.reshape(()).item()
    if not is_int(value) or not lo <= int(value) <= hi:
        raise _fail(node, f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def check_window_attrs(node: Node) -> None:
    """Strides, dilations, pads, kernel_shape, group, auto_pad, ceil_mode of a 2-D window op."""
    _int_list(node, "strides", 2, 1)
    _int_list(node, "dilations", 2, 1)
    pads = _int_list(node, "pads", 4, 0)
    kernel = _int_list(node, "kernel_shape", 2, 1)
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        raise _fail(node, f"auto_pad must be one of {AUTO_PADS}, got {auto_pad!r}")
    for flag in ("ceil_mode", "count_include_pad"):
        _flag(node, flag)
    if node.op is op.CONV:
        _bounded_int(node, "group", node.attrs.get("group", 1), 1, MAX_DIM)
        return
    if pads is not None and auto_pad == "NOTSET":
        # ONNX (and onnxruntime) require a pool's padding to be smaller than its kernel
        for axis in range(2):
            if max(pads[axis], pads[axis + 2]) >= kernel[axis]:
                raise _fail(node, f"pads {list(pads)} must be smaller than kernel_shape {list(kernel)}")
    if "rounding" in node.attrs and node.attrs["rounding"] not in ROUNDINGS:
        raise _fail(node, f"rounding must be one of {ROUNDINGS}, got {node.attrs['rounding']!r}")


def _check_int_softmax(node: Node) -> None:
    """TFLite's int8 softmax parameters, in the ranges its int32 arithmetic allows."""
    multiplier = _bounded_int(node, "input_multiplier", node.attrs.get("input_multiplier"), 0, (1 << 31) - 1)
    shift = _bounded_int(node, "input_left_shift", node.attrs.get("input_left_shift"), 0, 31)
    diff_min = _bounded_int(node, "diff_min", node.attrs["diff_min"], -(1 << 31), 0)
    if -diff_min << shift >= 1 << 31:
        raise _fail(node, f"diff_min {diff_min} with input_left_shift {shift} leaves int32")
    del multiplier


def _check_input_attrs(node: Node) -> None:
    shape, dtype = node.attrs["shape"], node.attrs["dtype"]
    if not isinstance(shape, (list, tuple)):
        raise _fail(node, f"shape must be a list, got {shape!r}")
    for dim in shape:
        if dim is None or isinstance(dim, str):
            continue  # a free (symbolic) dimension
        if not is_int(dim) or not 0 <= dim <= MAX_DIM:
            raise _fail(node, f"shape {list(shape)}: dimension {dim!r} is not a size")
    try:
        kind = np.dtype(dtype).kind
    except (TypeError, ValueError):
        kind = None
    if kind not in ("i", "u", "f") or not isinstance(dtype, (str, np.dtype, type)):
        raise _fail(node, f"dtype {dtype!r} is not a numeric dtype")


def check_quantizer(node: Node) -> None:
    """Rounding, mode, dtype and [lo, hi], and the rescale parameters of its mode."""
    attrs = node.attrs
    if attrs["rounding"] not in ROUNDINGS:
        raise _fail(node, f"rounding must be one of {ROUNDINGS}, got {attrs['rounding']!r}")
    mode = attrs.get("mode", "float")
    if mode not in QUANTIZER_MODES:
        raise _fail(node, f"mode must be one of {QUANTIZER_MODES}, got {mode!r}")
    _flag(node, "float32")
    dtype = attrs.get("dtype", "int64")
    limits = _DTYPE_LIMITS.get(dtype) if isinstance(dtype, str) else None
    if limits is None:
        try:
            limits = _DTYPE_LIMITS.get(np.dtype(dtype).name)
        except (TypeError, ValueError):
            pass
    if limits is None:
        raise _fail(node, f"dtype {dtype!r} is not one of {sorted(_DTYPE_LIMITS)}")
    lo = _bounded_int(node, "lo", attrs["lo"], *limits)
    hi = _bounded_int(node, "hi", attrs["hi"], *limits)
    if lo > hi:
        raise _fail(node, f"empty range lo={lo} > hi={hi}")
    if "signed" in attrs and not attrs["signed"] and lo < 0:
        raise _fail(node, f"unsigned quantizer with lo={lo} < 0")
    if mode == "float" or mode == "tflite_quantize":
        _finite_array(node, "scale", attrs["scale"])
    elif mode == "double":
        _finite_array(node, "multiplier", attrs["multiplier"])
    else:  # "int" and "gemmlowp": integer multiplier and shift
        m = _int_array(node, "multiplier", attrs["multiplier"])
        s = _int_array(node, "shift", attrs["shift"])
        if m.size != s.size and 1 not in (m.size, s.size):
            raise _fail(node, f"{m.size} multipliers for {s.size} shifts")
        # Python ints: np.abs(-2**63) is -2**63, which passes any `abs(m) < limit` test
        m_lo, m_hi = int(m.min()), int(m.max())  # Python ints from here
        if not -MULTIPLIER_LIMIT < m_lo <= m_hi < MULTIPLIER_LIMIT:
            raise _fail(node, f"fixed-point multiplier out of (-2^31, 2^31): [{m_lo}, {m_hi}]")
        s_lo, s_hi = int(s.min()), int(s.max())
        if not SHIFT_RANGE[0] <= s_lo <= s_hi <= SHIFT_RANGE[1]:
            raise _fail(node, f"shift out of {list(SHIFT_RANGE)}: [{s_lo}, {s_hi}]")
    if mode in ("gemmlowp", "tflite_quantize", "double"):
        _bounded_int(node, "zero_point", attrs.get("zero_point", 0), -(1 << 31), (1 << 31) - 1)


def _finite_array(node, name, value):
    if type(value) is float and math.isfinite(value):
        return value  # the common case, without NumPy's overhead
    try:
        if np.asarray(value).dtype.kind not in "iuf":  # no strings, bools or objects
            raise TypeError
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(node, f"{name} must be numbers, got {value!r}") from None
    if isinstance(value, (bool, np.bool_)) or array.size == 0 or array.ndim > 1 \
            or not np.all(np.isfinite(array)):
        raise _fail(node, f"{name} must be one or more finite numbers, got {value!r}")
    return array


def _int_array(node, name, value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "iu" or array.size == 0 or array.ndim > 1:
        raise _fail(node, f"{name} must be one or more integers, got {value!r}")
    return array


# ----------------------------------------------------------------- per graph
def validate(graph) -> list[Node]:
    """Raise an `aidge_lite.errors` exception if `graph` cannot be run safely by both
    engines; else return its topological order (the walk reuses it)."""
    from .verify import verified_order  # verify calls check_node on every node

    for node in graph.topo_order():  # (the checks below and the walk plan read them as dicts)
        if not isinstance(node.attrs, dict):
            raise GraphError(f"node '{node.name}': attrs must be a dict, got {type(node.attrs).__name__}")
    order = verified_order(graph)
    for node in order:
        if not isinstance(node.name, str) or not node.name:
            raise GraphError(f"node name {node.name!r} is not a non-empty string")
    meta = graph.meta if isinstance(graph.meta, dict) else {}
    if not isinstance(graph.meta, dict):
        raise GraphError(f"graph '{graph.name}': meta must be a dict")
    target = meta.get("target")
    if target is not None:
        from ..target import Target

        try:
            Target.from_dict(target)
        except Exception as exc:  # a TypeError for an unknown key, QuantizationError for a value
            raise GraphError(f"graph '{graph.name}': stored target {target!r} is invalid ({exc})") from None
    for key in ("quantized", "integer"):
        if key in meta and not isinstance(meta[key], bool):
            raise GraphError(f"graph '{graph.name}': meta '{key}' must be true or false, got {meta[key]!r}")
    if meta.get("integer"):
        if not meta.get("quantized"):  # the fake-quant engine would compute in float32
            raise GraphError(f"graph '{graph.name}': an integer graph must be quantized")
        _check_integer_graph(graph, order)
    return order


def _check_integer_graph(graph, order) -> None:
    """An integer graph computes on integers only: its weights are integer arrays, a float
    tensor (a float input or constant, a Dequantize) reaches only quantizers (through layout
    ops), its affine ops have no float alpha / beta, and every op carries the attributes of its
    integer form. Else the integer engine refuses the op while the fake-quant engine, whose
    float64 tensors hold anything, would compute it."""
    floats: set[str] = set()
    for node in order:
        if node.op is op.INPUT and np.dtype(node.attrs["dtype"]).kind == "f" or node.op is op.DEQUANTIZE \
                or node.op is op.CONSTANT and node.attrs["value"].dtype.kind not in "iu":
            floats.add(node.name)
            continue
        if node.attrs.get("excluded"):  # a float island (quantize_network's exclude): float64 in and out
            floats.add(node.name)
            continue
        read = [i for i in node.inputs if i in floats]
        if read and node.op in _FLOAT_PASS_THROUGH:
            floats.add(node.name)
        elif read and node.op is not op.QUANTIZER:
            raise _fail(node, f"reads the float tensor '{read[0]}' in an integer graph "
                              "(only a quantizer may)")
        missing = [a for a in _INTEGER_ATTRS.get(node.op, ()) if a not in node.attrs]
        if missing:  # e.g. a float Softmax: an op this integer graph has no integer form of
            raise UnsupportedOperatorError(node.name, node.op.value,
                                           f"no integer form (missing attribute(s) {missing})")
        if node.op in (op.CONV, op.GEMM):
            for name in node.inputs[1:]:
                src = graph.node(name)
                if src.op is op.CONSTANT and src.attrs["value"].dtype.kind not in "iu":
                    raise _fail(node, f"operand '{name}' of an integer graph is "
                                      f"{src.attrs['value'].dtype}, not an integer array")
        if node.op is op.GEMM:
            for name in ("alpha", "beta"):
                if node.attrs.get(name, 1.0) != 1.0:
                    raise _fail(node, f"{name}={node.attrs[name]!r} in an integer graph "
                                      "(only 1.0: a float factor has no exact integer form)")
