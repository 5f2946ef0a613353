"""The integer engine: a quantized graph in true integer arithmetic.

Same walk as the reference, another op table: activations live in the
integer dtypes their quantizers declare (int8/uint8/int16/uint16),
accumulators in int64 brought to the target's width by `AccumulatorPolicy`,
and all arithmetic runs in the Numba kernels of `kernels`. Every operand is
checked here before a kernel sees it: Numba does no bounds checking.

Speed: a Conv whose only consumer is a float-mode QUANTIZER to int8/uint8/
int16 runs as `kernels.conv2d_requant_into` (the requantization is the epilogue
of each tile; the int64 accumulators are never stored; the quantizer's dtype is
written directly), unless the caller asks for intermediates. The kernel returns
the accumulators' min/max: if the accumulator policy would change any value,
the Conv is recomputed unfused, so the result is always the unfused one.
Constant weights are packed once per walk plan (`kernels.conv2d_pack`,
`kernels.gemm_pack`), kept while the weight is the same array object. Thread
count: `kernels.set_threads`.

One-sample calls: what depends only on the graph and the operands' shapes and
dtypes is derived once per walk plan (`self.memo`): a fused conv's kernel path,
packed weights and checks (`kernels.conv_packed.conv2d_requant_prepare`; a call
then runs the chosen jitted kernel, which checks only that the input is what it
was prepared for), a quantizer's parameters, a Gemm's packed weight and bias.
From the second call with an input signature, a plain `IntegerInterpreter` asked for
outputs only runs those as a compiled list of steps (`interp.fast_steps`); subclasses
and ``intermediates=True`` walk node by node.
"""
from __future__ import annotations

import numpy as np

from aidge_lite import kernels
from aidge_lite.kernels.conv_packed import conv2d_requant_prepare
from aidge_lite.kernels.dense import gemm_prepare

from ..errors import AidgeLiteError, ExecutionError, InputError, UnsupportedOperatorError
from ..ir import Node, OpType
from ..ir.operand_checks import OPERAND_CHECKED
from . import reference as ref_ops
from .base import Interpreter
from .geometry import window_geometry
from .quant_common import (ACCUMULATING, AccumulatorPolicy, channels_view, graph_target, quantizer_args,
                           rescale_params, run_float)

op = OpType


class IntegerInterpreter(Interpreter):
    def __init__(self, target=None):
        self.target = target
        self.memo: dict = {}  # per-node derived parameters; `run` hands in the walk plan's

    def run(self, graph, feeds, *, intermediates: bool = False):
        # Fusing Conv -> Quantizer hides the int64 accumulator: only when nobody asks for it.
        self.fuse = not intermediates
        if not intermediates and type(self) is IntegerInterpreter and "run_node" not in self.__dict__:
            return _fast.run_steps(self, graph, feeds)  # nothing observes the nodes: compiled steps
        return super().run(graph, feeds, intermediates=intermediates)

    def begin(self, graph):
        super().begin(graph)
        self.fused: dict[str, np.ndarray] = {}  # quantizer name -> its output, computed by a fused conv
        if not hasattr(self, "fuse"):
            self.fuse = False
        if not graph.meta.get("integer"):
            raise InputError(
                f"graph '{graph.name}' is not an integer graph: engine='integer' needs the output "
                "of quantize_network(..., no_quant=False)"
            )
        self.policy = AccumulatorPolicy(graph_target(graph, self.target), kernels.fit_accumulator)

    def prepare_input(self, node, value):
        declared = np.dtype(node.attrs.get("dtype", "float32"))
        if declared.kind in "iu":  # an integer model input (int8 TFLite): bind_inputs checked it
            return np.ascontiguousarray(value, dtype=declared)
        return np.asarray(value, dtype=np.float64)  # the input quantizer is the float boundary

    def run_node(self, node, operands):
        if node.attrs.get("excluded"):
            return run_float(self, node, operands)
        kind = node.op
        if kind is op.CONSTANT:
            return node.attrs["value"]
        impl = self.impls.get(kind)
        if impl is None or kind in OPERAND_CHECKED:  # the shared walk's checks first
            value = super().run_node(node, operands)
        else:  # what the shared walk does for the other ops, minus a call layer
            try:
                value = impl(self, node, *operands)
            except AidgeLiteError:
                raise
            except Exception as exc:
                raise ExecutionError(f"node '{node.name}' ({kind.value}): {exc}") from exc
        if kind in ACCUMULATING and value is not _FUSED:
            value = self.policy.apply(node, value)
        return value


reg = IntegerInterpreter.register


def _require_int(node, *arrays):
    for array in arrays:
        if array.dtype.kind not in "iu":
            raise ExecutionError(f"node '{node.name}' ({node.op.value}): operand dtype {array.dtype} is not an integer")


@reg(op.CONSTANT)
def _constant(self, node):
    return node.attrs["value"]


_NARROW = frozenset(np.dtype(t) for t in ("int8", "uint8", "int16", "uint16"))
_FUSED = np.empty(0, np.int64)  # stands for a conv output consumed by its fused quantizer
_FUSABLE_DTYPES = frozenset({"int8", "uint8", "int16"})


def _fusable_quantizer(self, node):
    """The float-mode QUANTIZER that alone consumes `node`'s accumulator, if it can be fused."""
    if not self.fuse or node.name in self.graph.outputs:
        return None
    consumers = self.graph.consumers(node.name)
    if len(consumers) != 1:
        return None
    q = consumers[0]
    q = q if isinstance(q, Node) else self.graph.node(q)
    if (q.op is not op.QUANTIZER or q.inputs != [node.name]
            or q.attrs.get("mode", "float") != "float" or q.attrs.get("float32")
            or str(np.dtype(q.attrs["dtype"])) not in _FUSABLE_DTYPES):
        return None
    return q


def _within_accumulator(policy, minmax):
    """True when the accumulator policy leaves values in [min, max] unchanged."""
    if policy.bits >= 64:
        return True
    limit = 1 << (policy.bits - 1)
    return int(minmax[1]) < limit and int(minmax[0]) >= -limit


@reg(op.QUANTIZER)
def _quantizer(self, node, x):
    fused = self.fused.pop(node.name, None)
    if fused is not None:
        return fused
    call = self.memo.get(("qcall", node.name, x.shape, x.dtype))
    if call is None:
        call = _quantizer_call(self, node, x)
    cast, view_shape, kernel, args, out_dtype = call
    out = np.empty(view_shape, out_dtype)
    kernel(np.ascontiguousarray(x, cast).reshape(view_shape), *args, out)
    return out.reshape(x.shape)


def _quantizer_call(self, node, x):
    """(operand dtype, (N, C, S) view shape, requant kernel, its parameters, output dtype)
    of a QUANTIZER for inputs of `x`'s shape and dtype: checked once, kept in the memo."""
    out_dtype = np.dtype(node.attrs["dtype"])
    requant_float = kernels.requant_float32 if node.attrs.get("float32") else kernels.requant_float
    if x.dtype.kind == "f":  # input quantizer: float64 product, same formula as the reference
        cast = np.dtype(np.float64)
    else:
        _require_int(node, x)
        # An int8/16 activation (a Concat join) goes in as is: float64(x) is the same number, and
        # no int64 copy is made. Accumulators and everything else: int64 (a small set of signatures).
        keep = node.attrs.get("mode", "float") == "float" and x.dtype in _NARROW
        cast = x.dtype if keep else np.dtype(np.int64)
    view, params, mode, bounds = _quantizer_args(self, node, np.empty(x.shape, cast))
    if node.attrs.get("mode", "float") == "float" or x.dtype.kind == "f":
        kernel, args = requant_float, (params[0], mode, bounds)
    else:
        kernel, args = kernels.requant_int, (params[0], params[1], mode, bounds)
    call = self.memo[("qcall", node.name, x.shape, x.dtype)] = (cast, view.shape, kernel, args, out_dtype)
    return call


def _conv_plan(self, node, x_shape, w_shape):
    """(geometry, fusable quantizer, its multipliers, [mode, lo, hi], (OH, OW)) of a Conv:
    derived from attributes only, so kept in the walk plan's memo (a one-sample call pays
    for it once)."""
    key = ("conv", node.name, x_shape[1:], w_shape, self.fuse)
    plan = self.memo.get(key)
    if plan is not None:
        return plan
    strides, dilations, pads, out_hw, _ = window_geometry(node, x_shape[2:], w_shape[2:])
    if min(out_hw) <= 0:
        raise ExecutionError(f"node '{node.name}' (Conv): empty output {out_hw} for input {x_shape}")
    group = node.attrs.get("group", 1)
    geometry = np.array([*strides, pads[0], pads[1], pads[2], pads[3], *dilations, group], np.int64)
    q = _fusable_quantizer(self, node)
    multiplier = params = None
    if q is not None:
        (multiplier,) = rescale_params(q, w_shape[0])
        params = np.array([kernels.ROUNDING_NAMES[q.attrs["rounding"]], q.attrs["lo"], q.attrs["hi"]],
                          np.int64)
    plan = self.memo[key] = (geometry, q, multiplier, params, tuple(int(v) for v in out_hw))
    return plan


@reg(op.CONV)
def _conv(self, node, x, w, b=None):
    # One-sample calls: the checks below and the kernel's path choice depend only on the
    # operands' shapes/dtypes and on w and b (constants: the same objects while the graph
    # is), so they were made once, by `_prepare_fused` (a plan time check, not a per-call one).
    fast = self.memo.get(("fused", node.name, x.shape, x.dtype, self.fuse))
    if fast is not None and fast[0] is w and fast[1] is b:
        _, _, prepared, q, out_shape = fast
        y = np.empty(out_shape, prepared.out_dtype)
        if _within_accumulator(self.policy, prepared(x, y)):
            self.fused[q.name] = y
            return _FUSED
    return _conv_checked(self, node, x, w, b)


def _conv_checked(self, node, x, w, b):
    b_given = b
    b = np.zeros(w.shape[0] if w.ndim else 0, np.int64) if b is None else b  # the bias is optional
    _require_int(node, x, w, b)
    group = node.attrs.get("group", 1)
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1] * group or w.shape[0] % group \
            or b.shape != (w.shape[0],):
        raise ExecutionError(
            f"node '{node.name}' (Conv): input {x.shape}, weight {w.shape}, bias {b.shape} "
            f"do not fit (group={group})"
        )
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    geometry, q, multiplier, params, out_hw = _conv_plan(self, node, x.shape, w.shape)
    if q is not None:  # Conv -> Quantizer in one pass: requantize each tile as it is computed
        y = np.empty((x.shape[0], w.shape[0], *out_hw), q.attrs["dtype"])
        minmax = kernels.conv2d_requant_into(x, _conv_layer(self, node, x.shape, w, geometry), b,
                                             multiplier, params, y)
        _prepare_fused(self, node, x, w, b, b_given, q, multiplier, params, geometry, y.shape)
        if _within_accumulator(self.policy, minmax):  # else: the policy acts, recompute unfused
            self.fused[q.name] = y
            return _FUSED
    return kernels.conv2d(x, w, b, geometry)


def _prepare_fused(self, node, x, w, b, b_given, q, multiplier, params, geometry, out_shape):
    """Keep in the memo what `_conv`'s fast path needs for inputs like `x`: the operands
    passed the checks above, so the kernel's own checks and path choice are made here once
    (`conv2d_requant_prepare`; None when they depend on the values: no fast path)."""
    key = ("fused", node.name, x.shape, x.dtype, self.fuse)
    cached = self.memo.get(key, False)
    if cached is None or (cached and cached[0] is w and cached[1] is b_given):
        return  # prepared already, or known to need the values (None)
    prepared = conv2d_requant_prepare(x.shape, x.dtype, _conv_layer(self, node, x.shape, w, geometry), b,
                                      multiplier, params, q.attrs["dtype"])
    self.memo[key] = None if prepared is None else (w, b_given, prepared, q, out_shape)


def _conv_layer(self, node, x_shape, w, geometry):
    """`kernels.conv2d_pack` of a Conv's weight, kept in the walk plan's memo per input
    shape (auto_pad makes the geometry depend on it) while the weight is the same array
    object (a constant: packed once, not per call)."""
    key = ("layer", node.name, x_shape[1:])
    layer = self.memo.get(key)
    if layer is None or layer.w is not w:
        layer = self.memo[key] = kernels.conv2d_pack(w, geometry)
    return layer


_NO_GEMM_BIAS = np.zeros(1, np.int64)  # one object: the memo below keys on the bias' identity


@reg(op.GEMM)
def _gemm(self, node, x, w, b=None):
    b = _NO_GEMM_BIAS if b is None else b  # Gemm's C is optional
    _require_int(node, x, w, b)
    x = x.T if node.attrs.get("transA", 0) else x  # shapes checked by validate.check_operands
    key = ("gemm", node.name)
    cached = self.memo.get(key)
    if cached is None or cached[0] is not w or cached[3] is not b:
        # the kernel wants (in, out): transposed and packed once
        w_t = np.ascontiguousarray(w.T if node.attrs.get("transB", 0) else w)
        if w_t.ndim != 2 or b.size not in (1, w_t.shape[1]):
            raise ExecutionError(
                f"node '{node.name}' (Gemm): weight {w.shape}, bias {b.shape} do not fit")
        # a (1, N) or one-element bias broadcasts over the rows like Gemm's C (and the fake-quant)
        bias = np.array(np.broadcast_to(b.reshape(-1), (w_t.shape[1],)), order="C")
        cached = self.memo[key] = [w, w_t, kernels.gemm_pack(w_t), b, bias, None]
    prepared = cached[5]
    if prepared is not None and x.shape == prepared.a_shape and x.dtype == prepared.a_dtype:
        return prepared(x)  # checked at preparation for this shape and dtype
    w_t = cached[1]
    if x.ndim != 2 or x.shape[1] != w_t.shape[0]:
        raise ExecutionError(
            f"node '{node.name}' (Gemm): input {x.shape}, weight {w.shape}, bias {b.shape} do not fit"
        )
    cached[5] = gemm_prepare(x.shape, x.dtype, cached[2], cached[4])  # None: gemm_packed decides per call
    return kernels.gemm_packed(np.ascontiguousarray(x), cached[2], cached[4])


@reg(op.ADD)
def _add(self, node, a, b):
    _require_int(node, a, b)
    if a.shape != b.shape:
        raise ExecutionError(f"node '{node.name}' (Add): operand shapes {a.shape} and {b.shape} differ")
    return kernels.add(np.ascontiguousarray(a), np.ascontiguousarray(b))


@reg(op.CONCAT)
def _concat(self, node, *xs):
    _require_int(node, *xs)
    return np.concatenate(xs, axis=node.attrs["axis"])


@reg(op.RELU)
def _relu(self, node, x):
    _require_int(node, x)
    return kernels.relu(np.ascontiguousarray(x))


def _quantizer_args(self, node, x):
    """`quantizer_args`, its parameters kept in the walk plan's memo (attributes only)."""
    key = ("quantizer", node.name, x.shape[1] if x.ndim > 1 else 1, x.ndim)
    cached = self.memo.get(key)
    if cached is None:
        cached = self.memo[key] = quantizer_args(node, x)[1:]
    return (channels_view(x), *cached)


def _pool_geometry_memo(self, node, x):
    """`_pool_geometry`, kept in the walk plan's memo per input shape (attributes only)."""
    key = ("pool", node.name, x.shape[1:])
    cached = self.memo.get(key)
    if cached is None:
        cached = self.memo[key] = _pool_geometry(node, x)
    return cached


def _pool_geometry(node, x):
    if x.ndim != 4:
        raise ExecutionError(f"node '{node.name}' ({node.op.value}): input rank {x.ndim}, expected 4")
    kernel = tuple(node.attrs["kernel_shape"])
    strides, dilations, pads, out_hw, extra = window_geometry(node, x.shape[2:], kernel)
    geometry = np.array([*kernel, *strides, pads[0], pads[1], pads[2] + extra[0],
                         pads[3] + extra[1], *dilations], np.int64)
    for axis, size in enumerate(x.shape[2:]):
        extent = (kernel[axis] - 1) * dilations[axis] + 1
        last_start = (out_hw[axis] - 1) * strides[axis] - pads[axis]
        if out_hw[axis] > 0 and (pads[axis] >= extent or last_start >= size):
            # the kernels need every window to see the input: integers have no -inf
            raise ExecutionError(f"node '{node.name}' ({node.op.value}): a pooling window lies "
                                 f"entirely in the padding along axis {axis + 2} (pads {pads}, "
                                 f"kernel {kernel}); the integer engine cannot pool nothing")
    return geometry, extra


@reg(op.MAXPOOL)
def _maxpool(self, node, x):
    _require_int(node, x)
    geometry, _ = _pool_geometry_memo(self, node, x)
    return kernels.maxpool2d(np.ascontiguousarray(x), geometry)


@reg(op.AVGPOOL)
def _avgpool(self, node, x):
    _require_int(node, x)
    geometry, extra = _pool_geometry_memo(self, node, x)
    include_pad = bool(node.attrs.get("count_include_pad", 0))
    if include_pad and any(extra):
        raise UnsupportedOperatorError(node.name, "AveragePool", "ceil_mode with count_include_pad")
    mode = kernels.ROUNDING_NAMES[node.attrs["rounding"]]
    return kernels.avgpool2d(np.ascontiguousarray(x), geometry, include_pad, mode)


@reg(op.GLOBAL_AVGPOOL)
def _global_avgpool(self, node, x):
    _require_int(node, x)
    if x.ndim != 4:
        raise ExecutionError(f"node '{node.name}' (GlobalAveragePool): input rank {x.ndim}, expected 4")
    return kernels.global_avgpool(np.ascontiguousarray(x), kernels.ROUNDING_NAMES[node.attrs["rounding"]])


# Pure data movement is exact on any dtype: the reference implementations serve.
for _op in (op.FLATTEN, op.RESHAPE, op.TRANSPOSE, op.SQUEEZE, op.UNSQUEEZE, op.PAD, op.SLICE,
            op.DEPTH_TO_SPACE, op.RESIZE):  # (Resize: mode nearest, an index gather)
    IntegerInterpreter.impls[_op] = ref_ops.ReferenceInterpreter.impls[_op]

from . import fast_steps as _fast  # noqa: E402  (it reads this module's names)
