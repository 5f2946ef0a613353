"""Import handlers for the operators of exported ImageNet / audio models.

Registered on `onnx_io`'s handler table when this module is imported. As in
`onnx_io`, operands that only describe the operation (axes, starts, scales,
split sizes, slopes) must be constants after folding and become attributes.
ONNX Split becomes one Slice node per output; n-ary Sum a chain of Adds (the
PTQ already knows Add); both keep every output's tensor name as node name.
"""
from __future__ import annotations

import numpy as np

from .errors import UnsupportedOperatorError
from .ir import Node, OpType
from .onnx_io import _HANDLERS, _handles, _plain, _pop_unsupported_attr

for _t, _op in {
    "HardSigmoid": OpType.HARD_SIGMOID, "HardSwish": OpType.HARD_SWISH, "Erf": OpType.ERF,
    "LRN": OpType.LRN, "DepthToSpace": OpType.DEPTH_TO_SPACE, "Pow": OpType.POW,
}.items():
    _HANDLERS[_t] = _plain(_op)


def _ints(imp, node, name, what):
    return [int(v) for v in np.asarray(imp.const(node, name, what)).reshape(-1)]


def _operand(inputs, k):
    return inputs[k] if len(inputs) > k and inputs[k] else None


@_handles("ReduceMean")
def _reduce_mean(imp, name, inputs, attrs):
    axes = attrs.get("axes")
    if imp.opset >= 18 and _operand(inputs, 1):
        axes = _ints(imp, name, inputs[1], "ReduceMean axes")
    if not axes:
        if attrs.pop("noop_with_empty_axes", 0):
            return OpType.IDENTITY, inputs[:1], {}
        axes = None
    attrs.pop("noop_with_empty_axes", None)
    attrs["axes"] = axes
    return OpType.REDUCE_MEAN, inputs[:1], attrs


@_handles("Resize", "Upsample")
def _resize(imp, name, inputs, attrs):
    mode = attrs.get("mode", "nearest")
    if mode != "nearest":
        raise UnsupportedOperatorError(name, imp.op_type, f"mode={mode!r} (only 'nearest')")
    scales_in, sizes_in = (1, None) if imp.op_type == "Upsample" or imp.opset < 11 else (2, 3)
    if "scales" not in attrs and _operand(inputs, scales_in):
        scales = imp.const(name, inputs[scales_in], "Resize scales")
        if scales.size:
            attrs["scales"] = [float(s) for s in scales]
    if sizes_in is not None and _operand(inputs, sizes_in):
        sizes = _ints(imp, name, inputs[sizes_in], "Resize sizes")
        if "axes" not in attrs and sizes and sizes[0] == imp.leading_dim(inputs[0]):
            sizes[0] = 0  # 0 keeps dim 0: the batch stays free (as folding writes it)
        attrs["sizes"] = sizes
        attrs.pop("scales", None)
    if "scales" not in attrs and "sizes" not in attrs:
        raise UnsupportedOperatorError(name, imp.op_type, "neither scales nor sizes given")
    axes, policy = attrs.pop("axes", None), attrs.pop("keep_aspect_ratio_policy", "stretch")
    if axes is not None or policy != "stretch":
        _resize_axes(imp, name, inputs[0], attrs, axes, policy)
    if imp.op_type == "Upsample" or imp.opset < 11:
        attrs["coordinate_transformation_mode"] = "asymmetric"
        attrs["nearest_mode"] = "floor"
    for key in ("cubic_coeff_a", "exclude_outside", "extrapolation_value", "antialias"):
        attrs.pop(key, None)
    attrs["mode"] = "nearest"
    return OpType.RESIZE, inputs[:1], attrs


def _resize_axes(imp, name, x, attrs, axes, policy):
    """Scales / sizes given for some axes only, or sizes under an aspect-ratio policy -> every axis."""
    dims = [imp.static_dim(x, k) for k in range(imp.static_rank(x) or 0)]
    if not dims or (policy != "stretch" and None in [dims[a] for a in axes or range(len(dims))]):
        raise UnsupportedOperatorError(name, "Resize", f"axes/keep_aspect_ratio_policy need the static shape of '{x}'")
    axes = [a % len(dims) for a in (axes if axes is not None else range(len(dims)))]
    if "sizes" in attrs:
        given = dict(zip(axes, attrs["sizes"]))
        if policy != "stretch":  # one scale for every listed axis, sizes rounded from it
            pick = min if policy == "not_larger" else max
            scale = pick(given[a] / dims[a] for a in axes)
            given = {a: int(scale * dims[a] + 0.5) for a in axes}
            attrs["scales"] = [scale if a in given else 1.0 for a in range(len(dims))]
        attrs["sizes"] = [given.get(a, 0) for a in range(len(dims))]  # 0 keeps the dim
    else:
        given = dict(zip(axes, attrs["scales"]))
        attrs["scales"] = [float(given.get(a, 1.0)) for a in range(len(dims))]


@_handles("Slice")
def _slice(imp, name, inputs, attrs):
    if imp.opset >= 10:
        attrs["starts"] = _ints(imp, name, inputs[1], "Slice starts")
        attrs["ends"] = _ints(imp, name, inputs[2], "Slice ends")
        if _operand(inputs, 3):
            attrs["axes"] = _ints(imp, name, inputs[3], "Slice axes")
        if _operand(inputs, 4):
            attrs["steps"] = _ints(imp, name, inputs[4], "Slice steps")
    attrs.setdefault("axes", list(range(len(attrs["starts"]))))
    return OpType.SLICE, inputs[:1], attrs


@_handles("Split")
def _split(imp, name, inputs, attrs):
    outputs = imp.outputs
    axis = attrs.get("axis", 0)
    sizes = attrs.get("split")
    if imp.opset >= 13 and _operand(inputs, 1):
        sizes = _ints(imp, name, inputs[1], "Split sizes")
    if not sizes:
        total = imp.static_dim(inputs[0], axis)
        if total is None:
            raise UnsupportedOperatorError(name, "Split", f"axis {axis} has no static size")
        n = attrs.get("num_outputs", len(outputs))
        chunk = -(-total // n)
        sizes = [min(chunk, total - k * chunk) for k in range(n)]
    if len(sizes) != len(outputs):
        raise UnsupportedOperatorError(name, "Split", f"{len(sizes)} sizes for {len(outputs)} outputs")
    starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    nodes = [Node(out, OpType.SLICE, inputs[:1],
                  {"starts": [starts[k]], "ends": [starts[k + 1]], "axes": [axis]},
                  {"onnx_name": imp.onnx_name})
             for k, out in enumerate(outputs)]
    for node in nodes[1:]:
        if node.name:
            imp.graph.add(node)
    return OpType.SLICE, inputs[:1], nodes[0].attrs


@_handles("Sum")
def _sum(imp, name, inputs, attrs):
    if len(inputs) == 1:
        return OpType.IDENTITY, inputs, {}
    acc = inputs[0]
    for k, x in enumerate(inputs[1:-1], start=1):
        partial = imp.graph.unique_name(f"{name}/sum{k}")
        imp.graph.add(Node(partial, OpType.ADD, [acc, x], {}, {"onnx_name": imp.onnx_name}))
        acc = partial
    return OpType.ADD, [acc, inputs[-1]], {}


@_handles("ConvTranspose")
def _conv_transpose(imp, name, inputs, attrs):
    if imp.static_rank(inputs[1]) not in (3, 4):
        raise UnsupportedOperatorError(name, "ConvTranspose", "only 1-D and 2-D transposed convolutions")
    attrs.pop("kernel_shape", None)  # implied by the weights
    return OpType.CONV_TRANSPOSE, [i for i in inputs if i], attrs


@_handles("PRelu")
def _prelu(imp, name, inputs, attrs):
    imp.const(name, inputs[1], "PRelu slope")
    return OpType.PRELU, inputs, attrs


@_handles("Gelu")
def _gelu(imp, name, inputs, attrs):
    _pop_unsupported_attr(name, "Gelu", attrs, "approximate", ("none", "tanh"))
    return OpType.GELU, inputs, attrs


@_handles("Shape", "Size")
def _shape(imp, name, inputs, attrs):
    # Folding replaces every Shape whose input shape is static at a fixed batch size.
    raise UnsupportedOperatorError(
        name, imp.op_type, f"the shape of '{inputs[0]}' is not static: only the batch dimension "
        "of the graph inputs may be dynamic (give the other dimensions fixed sizes)")
