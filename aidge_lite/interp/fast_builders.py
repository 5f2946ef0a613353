"""The step builders of `fast_steps`: one per op the compiled list runs without `run_node`.

Each takes the compiler, the node and its record from the traced walk (operand shapes
and dtypes, whether its value went to a fused quantizer, its output shape) and returns
``step(interp, env)`` or None (the node then runs through `run_node`). A builder
specialises a node only when the traced walk left, for exactly these operand shapes and
dtypes, what the walk's own fast paths use (`integer.py`'s memo: prepared fused convs,
quantizer calls, pool geometry, the prepared Gemm; the operand checks' verdict), so a
step computes what the walk would, with the same kernels.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..ir import OpType
from ..kernels.conv_packed import conv2d_requant_prepare
from . import integer
from . import reference as ref_ops

op = OpType
#: The ops compiled into specialised steps (`fast_steps.KNOWN` holds their impls).
SPECIALISED = (op.CONV, op.QUANTIZER, op.RELU, op.MAXPOOL, op.GEMM, op.RESHAPE, op.FLATTEN)
_ZERO_POINT_MODES = frozenset({"gemmlowp", "tflite_quantize", "double"})  # interp/zero_point.py
_SMALL_ACC = 64  # elements: an accumulator this small is range-checked in Python


def _through_walk(interp, nodes, operands):
    """`nodes` (a chain, each reading the previous) as the walk runs them."""
    value = interp.run_node(nodes[0], operands)
    for node in nodes[1:]:
        value = interp.run_node(node, [value])
    return value


def _conv(c, node, record):
    """Conv -> Quantizer [-> Relu] through the prepared fused kernel; a policy that would
    act on the accumulators sends the chain through the walk."""
    attrs = node.attrs
    if not record[1] or attrs.get("layout") == "NHWC" or attrs.get("input_zero_point", 0) \
            or not c.proved(node, record):
        return None
    x_shape, x_dtype = record[0][0]
    w = c.constant(node.inputs[1])
    b = c.constant(node.inputs[2]) if len(node.inputs) > 2 else None
    fused = c.memo.get(("fused", node.name, x_shape, x_dtype, True))
    if w is False or b is False or not fused or fused[0] is not w or fused[1] is not b:
        return None
    _, _, prepared, q, out_shape = fused
    chain = [node, q]
    relu = c.folded_relu(q)
    if relu is not None:
        prepared = _relu_prepared(c, node, x_shape, x_dtype, w, b, q)
        if prepared is None:
            relu = None
            prepared = fused[2]
        else:
            chain.append(relu)
    operands = [w] if b is None else [w, b]
    c.work = max(c.work, prepared.work)
    xi, out = c.slot[node.inputs[0]], c.slot[chain[-1].name]
    out_dtype, limit = prepared.out_dtype, c.limit

    def step(interp, env):
        x = env[xi]
        y = np.empty(out_shape, out_dtype)
        minmax = prepared(x, y)
        if limit is None or (int(minmax[1]) < limit and int(minmax[0]) >= -limit):
            env[out] = y
        else:
            env[out] = _through_walk(interp, chain, [x, *operands])

    c.mark(node, "fused conv" + (" + relu" if relu is not None else ""), *chain)
    return step


def _relu_prepared(c, node, x_shape, x_dtype, w, b, q):
    """The fused conv prepared again with the quantizer's lower bound raised to 0."""
    plan = c.memo.get(("conv", node.name, x_shape[1:], w.shape, True))
    layer = c.memo.get(("layer", node.name, x_shape[1:]))
    if plan is None or layer is None or layer.w is not w or plan[1] is not q:
        return None
    _, _, multiplier, params, _ = plan
    params = params.copy()
    params[1] = max(int(params[1]), 0)
    bias = np.zeros(w.shape[0], np.int64) if b is None else b
    return conv2d_requant_prepare(x_shape, x_dtype, layer, bias, multiplier, params, q.attrs["dtype"])


def quantizer_call(c, node, record):
    """The walk's memoized call of a quantizer (`integer._quantizer_call`), if a step may make it."""
    source = node.inputs[0]
    if node.attrs.get("mode", "float") in _ZERO_POINT_MODES \
            or c.records.get(source, ((), c.graph.node(source).op is not op.INPUT))[1]:
        return None  # (a fused conv hands its quantizer the value through `interp.fused`)
    x_shape, x_dtype = record[0][0]
    return c.memo.get(("qcall", node.name, x_shape, x_dtype))


def _quantizer(c, node, record):
    """A quantizer's memoized requant call [+ a folded Relu]; its float64 conversion of a
    float input is the engine's `prepare_input` too (`_Compiler.read_raw`)."""
    call = quantizer_call(c, node, record)
    if call is None:
        return None
    x_shape = record[0][0][0]
    cast, view_shape, kernel, args, out_dtype = call
    relu = c.folded_relu(node)
    if relu is not None:
        bounds = args[-1].copy()
        bounds[0] = max(int(bounds[0]), 0)
        args = (*args[:-1], bounds)
    xi, out = c.slot[node.inputs[0]], c.slot[(relu or node).name]

    def step(interp, env):
        y = np.empty(view_shape, out_dtype)
        kernel(np.ascontiguousarray(env[xi], cast).reshape(view_shape), *args, y)
        env[out] = y.reshape(x_shape)

    c.mark(node, "quantizer" + (" + relu" if relu is not None else ""), node, *([relu] if relu else []))
    return step


def _relu(c, node, record):
    if record[0][0][1].kind not in "iu":
        return None
    xi, out, relu = c.slot[node.inputs[0]], c.slot[node.name], kernels.relu

    def step(interp, env):
        env[out] = relu(np.ascontiguousarray(env[xi]))

    c.mark(node, "relu")
    return step


def _maxpool(c, node, record):
    x_shape, x_dtype = record[0][0]
    if node.attrs.get("layout") == "NHWC" or node.attrs.get("input_zero_point", 0) \
            or x_dtype.kind not in "iu" or not c.proved(node, record):
        return None
    cached = c.memo.get(("pool", node.name, x_shape[1:]))
    if cached is None:
        return None
    geometry, maxpool = cached[0], kernels.maxpool2d
    xi, out = c.slot[node.inputs[0]], c.slot[node.name]

    def step(interp, env):
        env[out] = maxpool(np.ascontiguousarray(env[xi]), geometry)

    c.mark(node, "maxpool")
    return step


def _gemm(c, node, record):
    attrs = node.attrs
    if attrs.get("input_zero_point", 0) or attrs.get("weight_zero_point", 0) or attrs.get("transA", 0) \
            or not c.proved(node, record):
        return None
    w = c.constant(node.inputs[1])
    b = c.constant(node.inputs[2]) if len(node.inputs) > 2 else integer._NO_GEMM_BIAS
    cached = c.memo.get(("gemm", node.name))
    if w is False or b is False or cached is None or cached[0] is not w or cached[3] is not b:
        return None
    prepared = cached[5]
    x_shape, x_dtype = record[0][0]
    if prepared is None or prepared.a_shape != x_shape or prepared.a_dtype != x_dtype:
        return None
    c.work = max(c.work, prepared.work)
    xi, out, limit = c.slot[node.inputs[0]], c.slot[node.name], c.limit

    def step(interp, env):
        acc = prepared(env[xi])
        if limit is not None:
            if acc.size <= _SMALL_ACC:
                values = acc.ravel().tolist()
                if not values or (max(values) < limit and min(values) >= -limit):
                    env[out] = acc
                    return
            acc = interp.policy.apply(node, acc)  # what the walk does after the impl
        env[out] = acc

    c.mark(node, "gemm")
    return step


def _reshape(c, node, record):
    """Reshape / Flatten: a view of the shape the traced walk gave (it depends on the
    input's shape and the attributes only)."""
    if record[2] is None or integer.IntegerInterpreter.impls.get(node.op) is not _RESHAPES.get(node.op):
        return None
    shape, xi, out = record[2], c.slot[node.inputs[0]], c.slot[node.name]

    def step(interp, env):
        env[out] = env[xi].reshape(shape)

    c.mark(node, "reshape")
    return step


_RESHAPES = {kind: ref_ops.ReferenceInterpreter.impls[kind] for kind in (op.RESHAPE, op.FLATTEN)}
BUILDERS = {op.CONV: _conv, op.QUANTIZER: _quantizer, op.RELU: _relu, op.MAXPOOL: _maxpool, op.GEMM: _gemm,
             op.RESHAPE: _reshape, op.FLATTEN: _reshape}
