"""Arithmetic with constants as per-channel affine nodes, folded where exact (part of `prepare`).

Exporters leave `x * (1/255)`, `(x - mean) / std`, scalings and BatchNorms that
follow no conv. Each such node computing y = g * x + d with g, d constant per
channel (axis 1; a scalar broadcasts) becomes an affine node the PTQ already
quantizes: a depthwise 1x1 Conv (4-D tensors, weight g, bias d) or a Gemm with
the diagonal weight diag(g) (2-D tensors). Then, repeatedly:

- into the affine node before it (sole reader, not an output): W <- g * W per
  output channel, b <- g * b + d. Always exact. A positive pure scale (d = 0)
  also crosses the private Relu / pools between them (f(g x) = g f(x)).
- into the affine node after it (its sole reader): W <- W * g per input channel,
  b <- b + sum(W * d). Exact when d = 0 (zero padding stays zero), or for a Gemm
  or an unpadded Conv; a padded Conv would see d where the float graph pads 0.

What is left is quantized as the conv/gemm it is (weights rounded to n bits,
per channel with `per_channel`). Mul/Add/Sub by a constant that varies along
another axis, `c / x`, and Div by a constant with a zero are not rewritten
(`prepare` then refuses them or keeps them in float). ReduceMean over the
spatial axes of a 4-D tensor becomes a GlobalAveragePool (+ Flatten without
keepdims): the integer pool's rounded division then applies.
"""
from __future__ import annotations

import numpy as np

from ..ir import AFFINE, Graph, Node, OpType
from ..ir.node import META_SHAPE
from .float_islands import is_float

LOWERED = "per_channel_affine"  # node.meta flag of a node made here


def lower_constant_arithmetic(graph: Graph) -> dict[str, list[str]]:
    lowered = [n.name for n in graph.topo_order() if not is_float(n) and _lower(graph, n)]
    folded = _fold_all(graph)
    means = [n.name for n in graph.topo_order() if n.op is OpType.REDUCE_MEAN and not is_float(n)
             and _reduce_mean_to_pool(graph, n)]
    return {"lowered": lowered, "folded": folded, "reduce_means": means}


def _per_channel(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """`value` as (channels,) float64 if it only varies along axis 1 of a rank-`rank` tensor."""
    value = np.asarray(value, np.float64)
    if value.ndim > rank:
        return None
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    if any(d != 1 for axis, d in enumerate(full.shape) if axis != 1) \
            or (rank > 1 and full.shape[1] not in (1, channels)):
        return None
    return np.broadcast_to(full.reshape(-1), (channels,)).astype(np.float64)


def _gain_shift(graph: Graph, node: Node, channels: int, rank: int):
    """(g, d, x) with node = g * x + d per channel, or None."""
    if node.op is OpType.BATCHNORM:
        if not all(graph.is_constant(i) for i in node.inputs[1:]):
            return None
        scale, beta, mean, var = (graph.constant(i).astype(np.float64).reshape(-1) for i in node.inputs[1:])
        gain = scale / np.sqrt(var + node.attrs.get("epsilon", 1e-5))
        return gain, beta - mean * gain, node.inputs[0]
    if node.op not in (OpType.MUL, OpType.ADD, OpType.SUB, OpType.DIV) or len(node.inputs) != 2:
        return None
    const = [graph.is_constant(i) for i in node.inputs]
    if const.count(True) != 1:
        return None
    k = const.index(True)
    c = _per_channel(graph.constant(node.inputs[k]), channels, rank)
    if c is None:
        return None
    ones, zeros = np.ones(channels), np.zeros(channels)
    if node.op is OpType.MUL:
        result = (c, zeros)
    elif node.op is OpType.ADD:
        result = (ones, c)
    elif node.op is OpType.SUB:
        result = (ones, -c) if k == 1 else (-ones, c)
    else:  # Div: only x / c, by a constant with no zero
        if k == 0 or not np.all(c != 0):
            return None
        result = (1.0 / c, zeros)
    return result[0], result[1], node.inputs[1 - k]


def _lower(graph: Graph, node: Node) -> bool:
    shape = node.meta.get(META_SHAPE)
    if shape is None or len(shape) not in (2, 4) or not isinstance(shape[1], int):
        return False
    found = _gain_shift(graph, node, shape[1], len(shape))
    if found is None or tuple(graph.node(found[2]).meta.get(META_SHAPE) or ()) != tuple(shape):
        return False  # a constant that broadcasts x to a larger shape is no per-channel affine
    gain, shift, x = found
    dtype = np.float32 if all(graph.constant(i).dtype == np.float32 for i in node.inputs
                              if graph.is_constant(i)) else np.float64
    channels = shape[1]
    if len(shape) == 4:  # depthwise 1x1 conv
        weight = gain.reshape(channels, 1, 1, 1)
        attrs = {"group": channels, "kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0],
                 "dilations": [1, 1]}
    else:
        weight = np.diag(gain)
        attrs = {"transB": 1}
    w = graph.add_constant(graph.unique_name(node.name + "_gain"), weight.astype(dtype)).name
    b = graph.add_constant(graph.unique_name(node.name + "_shift"), shift.astype(dtype)).name
    node.meta["onnx_op"] = node.meta.get("onnx_op", node.op.value)
    node.op = OpType.CONV if len(shape) == 4 else OpType.GEMM
    node.attrs = attrs
    node.meta[LOWERED] = True
    graph.set_inputs(node.name, [x, w, b])
    return True


def _fold_all(graph: Graph) -> list[str]:
    folded = []
    changed = True
    while changed:
        changed = False
        for node in graph.topo_order():
            if node.name in graph and node.meta.get(LOWERED) and (
                    _into_producer(graph, node) or _into_consumer(graph, node)):
                folded.append(node.name)
                changed = True
    return folded


def _gain_shift_of(graph, node):
    w, b = graph.constant(node.inputs[1]), graph.constant(node.inputs[2])
    gain = np.diagonal(w) if node.op is OpType.GEMM else w.reshape(-1)
    return gain.astype(np.float64), b.astype(np.float64)


def _foldable_affine(graph, node) -> bool:
    return (node.op in AFFINE and not is_float(node) and len(node.inputs) == 3
            and all(graph.is_constant(i) for i in node.inputs[1:]))


# ops with f(g * x) = g * f(x) per channel for g > 0: a pure positive scale crosses them
_CHANNEL_HOMOGENEOUS = frozenset({OpType.RELU, OpType.LEAKY_RELU, OpType.MAXPOOL, OpType.AVGPOOL,
                                  OpType.GLOBAL_AVGPOOL, OpType.IDENTITY})


def _private_source(graph, node, crossable: bool):
    """The node feeding `node`, walking back through private channel-wise homogeneous ops
    when `crossable` (the gain is positive and there is no shift)."""
    src = graph.node(node.inputs[0])
    while crossable and src.op in _CHANNEL_HOMOGENEOUS and not is_float(src) \
            and len(graph.consumers(src.name)) == 1 and src.name not in graph.outputs:
        src = graph.node(src.inputs[0])
    return src


def _into_producer(graph, node) -> bool:
    gain, shift = _gain_shift_of(graph, node)
    src = _private_source(graph, node, bool(np.all(gain > 0) and np.all(shift == 0)))
    if not _foldable_affine(graph, src) or len(graph.consumers(src.name)) != 1 or src.name in graph.outputs:
        return False
    w, b = graph.constant(src.inputs[1]), graph.constant(src.inputs[2])
    rows = gain.reshape((-1,) + (1,) * (w.ndim - 1))
    graph.set_constant(src.inputs[1], (w.astype(np.float64) * rows).astype(w.dtype))
    graph.set_constant(src.inputs[2], (b.astype(np.float64) * gain + shift).astype(b.dtype))
    _absorb(graph, src, node)
    return True


def _into_consumer(graph, node) -> bool:
    readers = graph.consumers(node.name)
    if len(readers) != 1 or node.name in graph.outputs:
        return False
    dst = readers[0]
    if not _foldable_affine(graph, dst) or dst.inputs[0] != node.name or dst.inputs.count(node.name) != 1:
        return False
    gain, shift = _gain_shift_of(graph, node)
    padded = dst.op is OpType.CONV and any(int(p) for p in dst.attrs.get("pads", [0]))
    if np.any(shift != 0) and (padded or dst.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")):
        return False
    w, b = graph.constant(dst.inputs[1]), graph.constant(dst.inputs[2])
    wf = w.astype(np.float64)
    if dst.op is OpType.CONV:
        group = int(dst.attrs.get("group", 1))
        per_group = wf.shape[1]
        out_per_group = wf.shape[0] // group
        channel = (np.arange(wf.shape[0])[:, None] // out_per_group) * per_group + np.arange(per_group)[None, :]
        g_in, d_in = gain[channel][:, :, None, None], shift[channel][:, :, None, None]
        bias = b.astype(np.float64) + (wf * d_in).sum(axis=(1, 2, 3))
        weight = wf * g_in
    else:
        if wf.shape[1] != gain.size:
            return False
        bias = b.astype(np.float64) + wf @ shift
        weight = wf * gain[None, :]
    graph.set_constant(dst.inputs[1], weight.astype(w.dtype))
    graph.set_constant(dst.inputs[2], bias.astype(b.dtype))
    graph.set_inputs(dst.name, [node.inputs[0]] + dst.inputs[1:])
    dst.meta["fused"] = list(dst.meta.get("fused", [])) + [node.meta.get("onnx_name") or node.name]
    graph.remove(node.name)
    return True


def _absorb(graph, affine, node):
    affine.meta["fused"] = list(affine.meta.get("fused", [])) + [node.meta.get("onnx_name") or node.name]
    if node.inputs[0] == affine.name:
        affine.meta["onnx_output"] = node.meta.get("onnx_output", node.name)
    graph.replace_uses(node.name, node.inputs[0])  # the affine, or the Relu / pool after it
    graph.remove(node.name)


def _reduce_mean_to_pool(graph: Graph, node: Node) -> bool:
    shape = graph.node(node.inputs[0]).meta.get(META_SHAPE)
    axes = node.attrs.get("axes")
    if shape is None or len(shape) != 4 or axes is None or sorted(int(a) % 4 for a in axes) != [2, 3]:
        return False
    keep = bool(node.attrs.get("keepdims", 1))
    node.meta["onnx_op"] = node.meta.get("onnx_op", node.op.value)
    node.op = OpType.GLOBAL_AVGPOOL
    node.attrs = {}
    if not keep:
        flat = Node(graph.unique_name(node.name + "_flatten"), OpType.FLATTEN, attrs={"axis": 1})
        graph.insert_after(node.name, flat)
    return True
