"""ModelProto rewrites run before import, after constant folding (`normalize`).

- Shared initializers are copied: each reader gets its own tensor, so every
  weight is quantized for the one node that uses it (two Convs reading one
  weight used to get one scale fitted to neither).
- A zero constant Pad on spatial dims only, read by Convs alone, becomes part
  of their `pads` (exact: the Conv pads with the same zeros).
- 1-D Conv / ConvTranspose / MaxPool / AveragePool become 2-D ones over a unit
  height, so every engine and kernel runs them unchanged. The (N, C, 1, L)
  tensor then flows through every op that works the same at rank 4
  (activations, BatchNormalization, elementwise ops with a scalar or another
  lifted tensor, channel Concat, global pools): a Squeeze back to (N, C, L) is
  only inserted where an op needs the 3-D tensor, and an Unsqueeze only where
  a 1-D op reads a tensor that was never lifted. Lifted nodes keep their names.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_fold import fold_constants


def normalize(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants, copy shared initializers, fuse pads into convs, lift 1-D ops to 2-D."""
    folded = fold_constants(proto)
    if folded is proto:
        folded = onnx.ModelProto()
        folded.CopyFrom(proto)
    opset = next((e.version for e in folded.opset_import if e.domain in ("", "ai.onnx")), 13)
    copy_shared_initializers(folded.graph)
    fuse_pads(folded.graph, opset)
    lift_1d(folded.graph, opset)
    return folded


def copy_shared_initializers(graph: onnx.GraphProto) -> None:
    inits = {t.name: t for t in graph.initializer}
    taken = set(inits) | {o for n in graph.node for o in n.output}
    seen: set[str] = set()
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[name])
                copy.name = _unique(f"{name}/copy", taken)
                graph.initializer.append(copy)
                node.input[k] = copy.name
            seen.add(name)


def _unique(base: str, taken: set) -> str:
    k = 1
    while f"{base}{k}" in taken:
        k += 1
    taken.add(f"{base}{k}")
    return f"{base}{k}"


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node, name, value):
    for k, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[k]
            break
    node.attribute.append(helper.make_attribute(name, value))


def fuse_pads(graph: onnx.GraphProto, opset: int) -> None:
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        for x in node.input:
            readers.setdefault(x, []).append(node)
    dead = []
    for pad in graph.node:
        if pad.op_type != "Pad" or pad.output[0] in outputs:
            continue
        convs = readers.get(pad.output[0], [])
        if not convs or any(c.op_type != "Conv" or c.input[0] != pad.output[0] or c.input[1] not in inits
                            or _attr(c, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") for c in convs):
            continue
        rank = len(inits[convs[0].input[1]].dims)
        begin_end = _zero_pads(pad, inits, opset, rank)
        if begin_end is None or any(len(inits[c.input[1]].dims) != rank for c in convs):
            continue
        begin, end = begin_end
        spatial = rank - 2
        for conv in convs:
            old = list(_attr(conv, "pads", [0] * (2 * spatial)))
            _set_attr(conv, "pads", [old[i] + begin[2 + i] for i in range(spatial)]
                      + [old[spatial + i] + end[2 + i] for i in range(spatial)])
            conv.input[0] = pad.input[0]
        dead.append(pad)
    for pad in dead:
        graph.node.remove(pad)


def _zero_pads(pad, inits, opset, rank):
    """(begin, end) per axis of a zero constant Pad that leaves N and C alone, else None."""
    mode = _attr(pad, "mode", b"constant")
    if mode not in (b"constant", "constant"):
        return None
    if opset < 11:
        pads, value, axes = _attr(pad, "pads"), _attr(pad, "value", 0.0), None
    else:
        operands = list(pad.input) + [""] * (4 - len(pad.input))
        if any(x and x not in inits for x in operands[1:]):
            return None
        pads = numpy_helper.to_array(inits[operands[1]]).tolist()
        value = float(numpy_helper.to_array(inits[operands[2]])) if operands[2] else 0.0
        axes = numpy_helper.to_array(inits[operands[3]]).tolist() if operands[3] else None
    if value != 0.0 or pads is None:
        return None
    axes = [a % rank for a in axes] if axes is not None else list(range(len(pads) // 2))
    if len(pads) != 2 * len(axes) or any(p < 0 for p in pads):
        return None
    begin, end = [0] * rank, [0] * rank
    for k, axis in enumerate(axes):
        if axis >= rank:
            return None
        begin[axis], end[axis] = int(pads[k]), int(pads[k + len(axes)])
    if begin[:2] != [0, 0] or end[:2] != [0, 0]:
        return None
    return begin, end


# Ops computing the same values on (N, C, 1, L) as on (N, C, L), reading their
# data operand first (the others are per-channel or scalar constants).
_UNARY_SAFE = frozenset({
    "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu",
    "Softplus", "Erf", "Gelu", "Identity", "Dropout", "BatchNormalization", "Neg", "Abs",
    "GlobalAveragePool", "GlobalMaxPool",
})
_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min"})
_ONE_D = frozenset({"Conv", "ConvTranspose", "MaxPool", "AveragePool"})


def _is_1d(node, inits) -> bool:
    if node.op_type in ("Conv", "ConvTranspose"):
        return len(node.input) > 1 and node.input[1] in inits and len(inits[node.input[1]].dims) == 3
    return node.op_type in _ONE_D and len(_attr(node, "kernel_shape", [])) == 1


def lift_1d(graph: onnx.GraphProto, opset: int) -> None:
    inits = {t.name: t for t in graph.initializer}
    if not any(_is_1d(n, inits) for n in graph.node):
        return
    outputs = {o.name for o in graph.output}
    taken = set(inits) | {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    lifted: dict[str, str] = {}       # 3-D tensor -> its 4-D twin
    flat: dict[str, str] = {}         # 3-D tensor -> name of its materialized 3-D copy
    axis2 = _unique("aidge_lite/axis2_", taken)
    nodes = []

    def as_3d(name):  # materialize a lifted tensor for a reader that needs rank 3
        if name in lifted and name not in flat:
            flat[name] = name if name in outputs else _unique(f"{name}/1d", taken)
            nodes.append(_squeeze_like("Squeeze", lifted[name], flat[name], axis2, opset))
        return flat.get(name, name)

    def as_4d(name):
        if name not in lifted:
            lifted[name], flat[name] = _unique(f"{name}/2d", taken), name  # the 3-D original stays
            nodes.append(_squeeze_like("Unsqueeze", name, lifted[name], axis2, opset))
        return lifted[name]

    def lift_output(node):  # the 4-D result keeps the node's name unless a graph output needs it
        y = node.output[0]
        lifted[y] = _unique(f"{y}/2d", taken) if y in outputs else y
        node.output[0] = lifted[y]

    for node in list(graph.node):
        data = [x for x in node.input if x and x not in inits]
        if _is_1d(node, inits):
            _widen_1d(node, inits)
            node.input[0] = as_4d(node.input[0])
            lift_output(node)
        elif (node.op_type in _UNARY_SAFE and node.input[0] in lifted
              and all(x == node.input[0] for x in data)):
            node.input[0] = lifted[node.input[0]]
            lift_output(node)
        elif (node.op_type in _ELEMENTWISE and data and all(x in lifted for x in data)
              and all(x in lifted or _scalar(inits.get(x)) for x in node.input)):
            for k, x in enumerate(node.input):
                node.input[k] = lifted.get(x, x)
            lift_output(node)
        elif node.op_type == "Concat" and data and all(x in lifted for x in node.input):
            axis = _attr(node, "axis") % 3
            _set_attr(node, "axis", 3 if axis == 2 else axis)
            for k, x in enumerate(node.input):
                node.input[k] = lifted[x]
            lift_output(node)
        else:
            for k, x in enumerate(node.input):
                if x in lifted:
                    node.input[k] = as_3d(x)
        nodes.append(node)
    for out in outputs:
        if out in lifted:
            as_3d(out)
    del graph.node[:]
    graph.node.extend(nodes)
    if opset >= 13:
        graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), axis2))
    graph.ClearField("value_info")  # 1-D shapes recorded by the exporter no longer hold


def _scalar(t) -> bool:
    return t is not None and int(np.prod(t.dims, dtype=np.int64)) == 1


def _squeeze_like(op, x, y, axes_name, opset):
    if opset >= 13:
        return helper.make_node(op, [x, axes_name], [y])
    return helper.make_node(op, [x], [y], axes=[2])


def _widen_1d(node, inits) -> None:
    """Rewrite a 1-D window op's weights and attributes for a (N, C, 1, L) input."""
    if node.op_type in ("Conv", "ConvTranspose"):
        t = inits[node.input[1]]
        w = numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array(w[:, :, None, :], t.name))
    for name, unit in (("kernel_shape", 1), ("strides", 1), ("dilations", 1), ("output_padding", 0)):
        value = _attr(node, name)
        if value is not None:
            _set_attr(node, name, [unit] + list(value))
    pads = _attr(node, "pads")
    if pads is not None:
        _set_attr(node, "pads", [0, pads[0], 0, pads[1]])
    shape = _attr(node, "output_shape")
    if shape is not None:
        _set_attr(node, "output_shape", [1] + list(shape))
