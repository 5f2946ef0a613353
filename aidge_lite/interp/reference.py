"""The NumPy reference interpreter: the float specification of every op.

A float graph runs in the dtype of its feeds' float type (float32 by default,
float64 on request). A quantized graph (`graph.meta["quantized"]`) always runs
in float64 holding integers: this is the fake-quant engine, and its integer
rules (rounding, clipping, integer pools) live in `quant_ops`.
"""
from __future__ import annotations

import numpy as np

from ..ir import OpType
from . import float_ops
from .base import Interpreter
from .geometry import window_geometry
from .quant_common import ACCUMULATING, AccumulatorPolicy, graph_target

op = OpType


class ReferenceInterpreter(Interpreter):
    def __init__(self, dtype=None, target=None):
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.target = target
        self.integer = False

    def begin(self, graph):
        super().begin(graph)
        if graph.meta.get("quantized"):
            self.compute_dtype = np.dtype(np.float64)
        else:
            self.compute_dtype = self.dtype or np.dtype(np.float32)
        self.integer = bool(graph.meta.get("integer"))
        if self.integer:
            from aidge_lite import kernels

            self.policy = AccumulatorPolicy(graph_target(graph, self.target), kernels.fit_accumulator_ref)

    def run_node(self, node, operands):
        value = super().run_node(node, operands)
        if self.integer and node.op in ACCUMULATING and not node.attrs.get("excluded"):
            value = self._fit_accumulator(node, value)
        return value

    def _fit_accumulator(self, node, value):
        """The accumulator policy on a float64 accumulator: what ``astype(int64)``, the
        policy and ``astype(float64)`` give, without the two conversions when the values
        fit (the usual case). `value` is the fresh output of an accumulating op."""
        limit = float(1 << (self.policy.bits - 1))
        # a wrapped `apply` (the report's AccumulatorObserver) must see every accumulator
        unwrapped = getattr(self.policy.apply, "__func__", None) is type(self.policy).apply
        if unwrapped and value.dtype == np.float64 and value.flags.writeable and value.size and \
                np.trunc(value, out=value).max() < limit and value.min() >= -limit:
            return value  # trunc in place: the cast's rounding toward zero
        return self.policy.apply(node, value.astype(np.int64)).astype(np.float64)

    def run(self, graph, feeds, *, intermediates=False):
        self.keep_all = intermediates
        try:
            return super().run(graph, feeds, intermediates=intermediates)
        finally:
            self.keep_all = True  # a caller stepping `run_node` by hand keeps every value

    #: A subclass that reads each value as it is produced and keeps no reference to it (the
    #: calibration observers) sets this: its ops may then overwrite operands like the plain walk's.
    observes_only = False

    def owns(self, node) -> bool:
        """True when `node` may overwrite its first operand: a fresh array (the output of
        an arithmetic op) that no other node reads and that is no graph output. Only the
        plain walk without intermediates, or an `observes_only` subclass: another analysis
        subclass may keep what it saw.
        (A new array per activation costs page faults, most at batch 8.)"""
        memo = getattr(self, "memo", None)
        if not _may_overwrite(self) or getattr(self, "keep_all", True) or memo is None:
            return False
        key = ("sole reader", node.name)
        owned = memo.get(key)
        if owned is None:
            src = node.inputs[0]
            owned = memo[key] = (self.graph.node(src).op in _FRESH and src not in self.graph.outputs
                                 and len(self.graph.consumers(src)) == 1 and node.inputs.count(src) == 1)
        return owned

    def count_clipped(self, node, view, out):
        """Hook for the report: the plain engine does not count."""

    def prepare_input(self, node, value):
        return np.asarray(value, dtype=self.compute_dtype)


reg = ReferenceInterpreter.register
#: Ops whose reference implementation always returns a new array (see `owns`).
#: SCALING writes into its operand only when it owns it, which is then as fresh.
_FRESH = frozenset({op.CONV, op.GEMM, op.MATMUL, op.ADD, op.SUB, op.MUL, op.DIV, op.SCALING})


@reg(op.CONSTANT)
def _constant(self, node):
    value = node.attrs["value"]
    if value.dtype.kind in "fiub" and value.dtype != self.compute_dtype:
        # converted once per graph state (weights: 4.7 ms per EfficientNet-Lite0 image in
        # float64), read-only so that no op can change the cached copy
        memo, key = getattr(self, "memo", None), ("constant", node.name, self.compute_dtype)
        cached = None if memo is None else memo.get(key)
        if cached is None or cached[0] is not value:
            converted = value.astype(self.compute_dtype)
            converted.flags.writeable = False
            cached = (value, converted)
            if memo is not None:
                memo[key] = cached
        return cached[1]
    return value


@reg(op.CONV)
def _conv(self, node, x, w, b=None):
    strides, dilations, pads, out_hw, _ = window_geometry(node, x.shape[2:], w.shape[2:])
    return float_ops.conv2d(x, w, b, strides, dilations, pads, out_hw, node.attrs.get("group", 1),
                            _weight_facts(self, node, w))


def _weight_facts(self, node, w):
    """The walk plan's cache of facts about a read-only weight (the cached constants of
    `_constant`), kept while the same array comes back; None for any other weight."""
    memo = getattr(self, "memo", None)
    if memo is None or w.flags.writeable:
        return None
    key = ("weight facts", node.name)
    facts = memo.get(key)
    if facts is None or facts["of"] is not w:
        facts = memo[key] = {"of": w}
    return facts


@reg(op.GEMM)
def _gemm(self, node, a, b, c=None):
    a = a.T if node.attrs.get("transA", 0) else a
    b = b.T if node.attrs.get("transB", 0) else b
    y = float_ops.matmul(a, b)
    alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
    if alpha != 1.0:
        y = y * y.dtype.type(alpha)
    if c is not None:
        y = y + (c if beta == 1.0 else c * c.dtype.type(beta))
    return y


@reg(op.MATMUL)
def _matmul(self, node, a, b):
    return float_ops.matmul(a, b)


_BINARY = {op.ADD: np.add, op.SUB: np.subtract, op.MUL: np.multiply, op.DIV: np.divide}


@reg(*_BINARY)
def _binary(self, node, a, b):
    return _BINARY[node.op](a, b)


@reg(op.CONCAT)
def _concat(self, node, *xs):
    return np.concatenate(xs, axis=node.attrs["axis"])


def _may_overwrite(self) -> bool:
    # `self` may be another engine running a float island (`quant_common.run_float`): never
    return type(self) is ReferenceInterpreter or isinstance(self, ReferenceInterpreter) and self.observes_only


def _spare(self, node, x):
    """`x` itself when the op may write its result there (`owns`), else None (a new array)."""
    return x if _may_overwrite(self) and type(x) is np.ndarray and x.flags.writeable \
        and self.owns(node) else None


@reg(op.RELU)
def _relu(self, node, x):
    return np.maximum(x, x.dtype.type(0), out=_spare(self, node, x))


@reg(op.LEAKY_RELU)
def _leaky_relu(self, node, x):
    alpha = x.dtype.type(node.attrs.get("alpha", 0.01))
    return np.where(x >= 0, x, x * alpha)


@reg(op.CLIP)
def _clip(self, node, x):
    lo, hi = node.attrs.get("min"), node.attrs.get("max")
    if lo is not None and hi is not None:  # one pass (ReLU6 after every conv of EfficientNet-Lite)
        return np.clip(x, x.dtype.type(lo), x.dtype.type(hi), out=_spare(self, node, x))
    if lo is not None:
        x = np.maximum(x, x.dtype.type(lo))
    if hi is not None:
        x = np.minimum(x, x.dtype.type(hi))
    return x


@reg(op.SIGMOID)
def _sigmoid(self, node, x):
    return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)


@reg(op.TANH)
def _tanh(self, node, x):
    return np.tanh(x)


@reg(op.SOFTMAX)
def _softmax(self, node, x):
    axis = node.attrs.get("axis", -1)
    if node.attrs.get("legacy_flatten"):  # opset < 13: softmax over the flattened tail
        axis = axis % x.ndim
        flat = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
        return _softmax_along(flat, 1).reshape(x.shape)
    return _softmax_along(x, axis)


def _softmax_along(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@reg(op.MAXPOOL)
def _maxpool(self, node, x):
    kernel = tuple(node.attrs["kernel_shape"])
    strides, dilations, pads, out_hw, extra = window_geometry(node, x.shape[2:], kernel)
    return float_ops.max_pool2d(x, kernel, strides, dilations, pads, out_hw, extra)


@reg(op.AVGPOOL)
def _avgpool(self, node, x):
    kernel = tuple(node.attrs["kernel_shape"])
    strides, dilations, pads, out_hw, extra = window_geometry(node, x.shape[2:], kernel)
    sums = float_ops.window_sums(x, kernel, strides, dilations, pads, out_hw, extra)
    counts = float_ops.window_counts(
        x.shape[2:], kernel, strides, dilations, pads, out_hw, extra,
        bool(node.attrs.get("count_include_pad", 0)),
    )
    return (sums / counts).astype(x.dtype)


@reg(op.GLOBAL_AVGPOOL)
def _global_avgpool(self, node, x):
    return np.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)


@reg(op.BATCHNORM)
def _batchnorm(self, node, x, scale, bias, mean, var):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    eps = x.dtype.type(node.attrs.get("epsilon", 1e-5))
    factor = scale / np.sqrt(var + eps)
    return (x - mean.reshape(shape)) * factor.reshape(shape) + bias.reshape(shape)


@reg(op.FLATTEN)
def _flatten(self, node, x):
    axis = node.attrs.get("axis", 1) % max(x.ndim, 1) if x.ndim else 0
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(lead, -1) if x.size else x.reshape(lead, int(np.prod(x.shape[axis:])))


@reg(op.RESHAPE)
def _reshape(self, node, x):
    shape = list(node.attrs["shape"])
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


@reg(op.TRANSPOSE)
def _transpose(self, node, x):
    return np.transpose(x, node.attrs.get("perm"))


@reg(op.SQUEEZE)
def _squeeze(self, node, x):
    axes = node.attrs.get("axes")
    return np.squeeze(x, axis=None if axes is None else tuple(axes))


@reg(op.UNSQUEEZE)
def _unsqueeze(self, node, x):
    return np.expand_dims(x, tuple(a % (x.ndim + len(node.attrs["axes"])) for a in node.attrs["axes"]))


@reg(op.PAD)
def _pad(self, node, x):
    pads, rank = node.attrs["pads"], x.ndim
    axes = [a % rank for a in node.attrs.get("axes", range(rank))]
    widths = [(0, 0)] * rank
    for k, axis in enumerate(axes):
        widths[axis] = (pads[k], pads[k + len(axes)])
    mode = node.attrs.get("mode", "constant")
    if mode == "constant":
        return np.pad(x, widths, constant_values=x.dtype.type(node.attrs.get("value", 0.0)))
    return np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


@reg(op.IDENTITY, op.DROPOUT)
def _identity(self, node, x):
    return x


def run(graph, inputs, *, intermediates=False, engine="reference", dtype=None, target=None):
    """Run `graph` on `inputs` (an array, or a dict name -> array).

    engine="reference" is the NumPy interpreter (the fake-quant simulation for a
    quantized graph); engine="integer" runs a quantized graph in true integer
    arithmetic through the Numba kernels. Returns a dict name -> array.
    """
    if engine == "reference":
        interp = ReferenceInterpreter(dtype, target)
    elif engine == "integer":
        from .integer import IntegerInterpreter

        interp = IntegerInterpreter(target=target)
    else:
        from ..errors import InputError

        raise InputError(f"unknown engine '{engine}': use 'reference' or 'integer'")
    return interp.run(graph, inputs, intermediates=intermediates)


from . import float_ops_extra  # noqa: E402,F401  (registers the ops of exported models)
