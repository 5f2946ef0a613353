"""prepare: bring an imported float graph into the form the PTQ passes expect.

Ensures: every affine node is a CONV or a canonical GEMM (`y = x @ W.T + b`,
W of shape (out, in), transB=1, alpha=beta=1) with a constant bias; BatchNorm
is folded into the affine node before it; MatMul + Add(bias) and Conv +
Add(bias) are fused; constant sub-graphs (Reshape/Transpose of initializers)
are folded; Identity, Dropout, no-op Flatten and a final Softmax are removed.
Every remaining op is one the quantizer knows; anything else is refused with a
`QuantizationError` naming the node (the reference library needs this pass to
quantize mnist-8 at all). With `compat="aidge"` every float constant is first
cast to float64, as the reference casts its graph before its PTQ.
"""
from __future__ import annotations

import numpy as np

from ..errors import QuantizationError
from ..interp.reference import ReferenceInterpreter
from ..interp.shapes import infer_shapes
from ..ir import AFFINE, Graph, OpType
from ..ir.node import META_SHAPE
from .config import PassReport, PTQConfig
from .elementwise_affine import lower_constant_arithmetic
from .float_islands import is_float, refuse_or_fall_back, select
from .lookup_tables import LOOKUP_OPS

QUANTIZABLE = frozenset(
    {OpType.INPUT, OpType.CONSTANT, OpType.CONV, OpType.GEMM, OpType.ADD, OpType.CONCAT,
     OpType.RELU, OpType.MAXPOOL, OpType.AVGPOOL, OpType.GLOBAL_AVGPOOL, OpType.FLATTEN,
     OpType.RESHAPE, OpType.TRANSPOSE, OpType.SQUEEZE, OpType.UNSQUEEZE, OpType.PAD,
     OpType.SCALING, OpType.SUB, OpType.CLIP, OpType.MUL, OpType.SLICE, OpType.DEPTH_TO_SPACE,
     OpType.RESIZE}
) | LOOKUP_OPS


def prepare(graph: Graph, cfg: PTQConfig) -> PassReport:
    report = PassReport("prepare")
    notes = report.notes
    graph.meta.setdefault("float_outputs", list(graph.outputs))
    notes["selected"] = select(graph, cfg)  # on the float graph's names, before any fusion
    infer_shapes(graph)  # the rewrites below read shapes; hand-built graphs may lack them
    if cfg.compat == "aidge":
        notes["float64_constants"] = _float64_constants(graph)
    notes["folded_constants"] = _fold_constants(graph)
    notes["popped_softmax"] = _pop_final_softmax(graph)
    notes["removed_noops"] = _remove_noops(graph)
    notes["matmul_to_gemm"] = [_matmul_to_gemm(graph, n) for n in _ops(graph, OpType.MATMUL)
                               if _matmul_is_affine(graph, n)]  # (other MatMuls: refused below)
    fell_back: list[str] = []
    for node in _ops(graph, OpType.GEMM):
        if node.attrs.get("transA", 0) or not graph.is_constant(node.inputs[1]):
            refuse_or_fall_back(node, "Gemm with transA or a non-constant weight", cfg, fell_back)
            continue
        _canonical_gemm(graph, node)
    for node in _ops(graph, OpType.CONV):
        if not all(graph.is_constant(i) for i in node.inputs[1:]):
            refuse_or_fall_back(node, "Conv weights must be a constant", cfg, fell_back)
            continue
        _ensure_bias(graph, node, graph.constant(node.inputs[1]).shape[0])
    notes["fused_bias_adds"] = [n for n in (_fuse_bias_add(graph, a) for a in _affines(graph)) if n]
    notes["folded_batchnorms"] = [n.name for n in _ops(graph, OpType.BATCHNORM) if _fold_batchnorm(graph, n)]
    notes["constant_arithmetic"] = lower_constant_arithmetic(graph)
    graph.prune()
    infer_shapes(graph)
    notes["fell_back"] = fell_back + _check_quantizable(graph, cfg)
    report.modified = any(bool(v) for v in notes.values())
    return report


def _float64_constants(graph) -> list[str]:
    """compat "aidge": the reference casts the whole graph to float64 before its PTQ
    (setupDataType), so BatchNorm folding and CLE never round weights back to float32
    (which moved calibrated ranges by ~1e-7: enough to flip a float32 rescale)."""
    cast = []
    for node in graph.topo_order():
        if node.op is OpType.CONSTANT and graph.constant(node.name).dtype.kind == "f" \
                and graph.constant(node.name).dtype != np.float64:
            graph.set_constant(node.name, graph.constant(node.name).astype(np.float64))
            cast.append(node.name)
    return cast


def _ops(graph, op):
    """Nodes of type `op` the PTQ will quantize (excluded nodes keep their float form)."""
    return [n for n in graph.topo_order() if n.op is op and not is_float(n)]


def _affines(graph):
    return [n for n in graph.topo_order() if n.op in AFFINE and not is_float(n)]


def _matmul_is_affine(graph, node) -> bool:
    """x @ W with a constant 2-D W on a 2-D x becomes a Gemm; other MatMuls are left to the check."""
    return graph.is_constant(node.inputs[1]) and not graph.is_constant(node.inputs[0]) \
        and graph.constant(node.inputs[1]).ndim == 2 and len(node.meta.get(META_SHAPE, ())) == 2


def _fold_constants(graph) -> list[str]:
    interp = ReferenceInterpreter(np.float64)
    interp.begin(graph)
    folded = []
    for node in graph.topo_order():
        if node.op in (OpType.INPUT, OpType.CONSTANT) or not node.inputs:
            continue
        if all(graph.is_constant(i) for i in node.inputs):
            operands = [graph.constant(i) for i in node.inputs]
            value = interp.run_node(node, [np.asarray(v, np.float64) if v.dtype.kind == "f" else v
                                           for v in operands])
            dtype = operands[0].dtype
            _replace_with_constant(graph, node, np.asarray(value).astype(dtype))
            folded.append(node.name)
    return folded


def _replace_with_constant(graph, node, value):
    temp = graph.add_constant(graph.unique_name(node.name + "_folded"), value)
    graph.replace_uses(node.name, temp.name)
    graph.remove(node.name)
    graph.add_constant(node.name, value)
    graph.replace_uses(temp.name, node.name)
    graph.remove(temp.name)


def _pop_final_softmax(graph) -> list[str]:
    popped = []
    for name in list(graph.outputs):
        node = graph.node(name)
        if node.op is OpType.SOFTMAX and not is_float(node):  # (an excluded one stays, in float)
            graph.bypass(name)
            popped.append(name)
    return popped


def _remove_noops(graph) -> list[str]:
    removed = []
    for node in graph.topo_order():
        is_noop = node.op in (OpType.IDENTITY, OpType.DROPOUT) or (
            node.op is OpType.FLATTEN and len(graph.node(node.inputs[0]).meta.get(META_SHAPE, ())) == 2
            and node.attrs.get("axis", 1) == 1
        )
        if is_noop:
            graph.bypass(node.name)
            removed.append(node.name)
    return removed


def _matmul_to_gemm(graph, node) -> str:
    x, w = node.inputs
    if not graph.is_constant(w) or graph.constant(w).ndim != 2 or len(node.meta.get(META_SHAPE, ())) != 2:
        raise QuantizationError(f"node '{node.name}': MatMul needs a 2-D input and a constant 2-D weight")
    weight = graph.constant(w)
    w_name = graph.unique_name(node.name + "_weight")
    graph.add_constant(w_name, np.ascontiguousarray(weight.T))
    node.op = OpType.GEMM
    node.attrs = {"transB": 1}
    graph.set_inputs(node.name, [x, w_name])
    _ensure_bias(graph, node, weight.shape[1])
    return node.name


def _canonical_gemm(graph, node):
    attrs = node.attrs
    if attrs == {"transB": 1} and len(node.inputs) == 3:
        return  # already canonical (e.g. made from a MatMul)
    if attrs.get("transA", 0) or not graph.is_constant(node.inputs[1]):
        raise QuantizationError(f"node '{node.name}': Gemm with transA or a non-constant weight")
    weight = graph.constant(node.inputs[1]) * attrs.get("alpha", 1.0)
    weight = weight if attrs.get("transB", 0) else weight.T
    out = weight.shape[0]
    bias = np.zeros(out, weight.dtype)
    if len(node.inputs) > 2:
        c = graph.constant(node.inputs[2]) * attrs.get("beta", 1.0)
        if c.size not in (1, out) or (c.ndim == 2 and c.shape[0] != 1):
            raise QuantizationError(f"node '{node.name}': Gemm bias of shape {c.shape} is not per output")
        bias = bias + c.reshape(-1)
    w_name = graph.unique_name(node.name + "_weight")
    b_name = graph.unique_name(node.name + "_bias")
    graph.add_constant(w_name, np.ascontiguousarray(weight.astype(graph.constant(node.inputs[1]).dtype)))
    graph.add_constant(b_name, bias.astype(weight.dtype))
    node.attrs = {"transB": 1}
    graph.set_inputs(node.name, [node.inputs[0], w_name, b_name])


def _ensure_bias(graph, node, out_channels):
    if len(node.inputs) == 2:
        dtype = graph.constant(node.inputs[1]).dtype
        b_name = graph.add_constant(graph.unique_name(node.name + "_bias"),
                                    np.zeros(out_channels, dtype)).name
        graph.set_inputs(node.name, node.inputs + [b_name])


def _per_channel_constant(value, out_channels, channel_axis, rank):
    """`value` as a (out_channels,) vector if it only varies along the channel axis."""
    if value.ndim > rank:
        return None
    full = value.reshape((1,) * (rank - value.ndim) + value.shape)
    other = [d for axis, d in enumerate(full.shape) if axis != channel_axis]
    if any(d != 1 for d in other) or full.shape[channel_axis] not in (1, out_channels):
        return None
    return np.broadcast_to(full.reshape(-1), (out_channels,)).copy()


def _fuse_bias_add(graph, affine) -> str | None:
    users = graph.consumers(affine.name)
    if len(users) != 1 or users[0].op is not OpType.ADD or affine.name in graph.outputs \
            or is_float(users[0]):
        return None
    add = users[0]
    other = [i for i in add.inputs if i != affine.name]
    if len(other) != 1 or not graph.is_constant(other[0]):
        return None
    out_channels = graph.constant(affine.inputs[1]).shape[0]
    rank = len(affine.meta[META_SHAPE])
    vector = _per_channel_constant(graph.constant(other[0]), out_channels, 1, rank)
    if vector is None:
        return None
    b_name = affine.inputs[2]
    graph.set_constant(b_name, graph.constant(b_name) + vector.astype(graph.constant(b_name).dtype))
    _record_fused(affine, add)
    graph.replace_uses(add.name, affine.name)
    graph.remove(add.name)
    return add.name


def _record_fused(affine, folded) -> None:
    """meta["fused"]: the ONNX nodes folded into `affine`; meta["onnx_output"]: the tensor it now computes."""
    affine.meta["fused"] = list(affine.meta.get("fused", [])) + [folded.meta.get("onnx_name") or folded.name]
    affine.meta["onnx_output"] = folded.meta.get("onnx_output", folded.name)


def _fold_batchnorm(graph, bn) -> str | None:
    """Fold into the Conv/Gemm before it; None when there is none (the BatchNorm is then
    a per-channel affine node of its own: `elementwise_affine`)."""
    source = graph.node(bn.inputs[0])
    if source.op not in AFFINE or is_float(source) or len(graph.consumers(source.name)) != 1 \
            or source.name in graph.outputs or not all(graph.is_constant(i) for i in bn.inputs[1:]):
        return None
    scale, beta, mean, var = (graph.constant(i).astype(np.float64) for i in bn.inputs[1:])
    factor = scale / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
    w_name, b_name = source.inputs[1], source.inputs[2]
    weight, bias = graph.constant(w_name), graph.constant(b_name)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    graph.set_constant(w_name, (weight * factor.reshape(shape)).astype(weight.dtype))
    graph.set_constant(b_name, ((bias - mean) * factor + beta).astype(bias.dtype))
    _record_fused(source, bn)
    graph.replace_uses(bn.name, source.name)
    graph.remove(bn.name)
    return bn.name


def _check_quantizable(graph, cfg) -> list[str]:
    """Every node must be one the PTQ quantizes, else excluded (`fallback`) or refused."""
    fell_back: list[str] = []
    for node in graph.topo_order():
        if is_float(node):
            continue
        reason = _unquantizable(graph, node, cfg)
        if reason:
            refuse_or_fall_back(node, reason, cfg, fell_back)
    return fell_back


def _unquantizable(graph, node, cfg) -> str | None:
    if node.op not in QUANTIZABLE:
        return f"operator {node.op.value} cannot be quantized"
    if node.op is OpType.PAD and (node.attrs.get("mode", "constant") != "constant"
                                  or node.attrs.get("value", 0.0) != 0.0):
        return "only zero constant padding is quantizable"
    if node.op in (OpType.ADD, OpType.SUB, OpType.CONCAT, OpType.MUL) \
            and any(graph.is_constant(i) for i in node.inputs):
        return f"{node.op.value} with a constant operand that is not per channel"
    if node.op in AFFINE and not all(graph.is_constant(i) for i in node.inputs[1:]):
        return "weights and bias must be constants"
    if node.op in (OpType.ADD, OpType.SUB):  # one scale per element stream, no broadcasting kernels
        shapes = {tuple(graph.node(i).meta[META_SHAPE]) for i in node.inputs
                  if graph.node(i).meta.get(META_SHAPE) is not None}
        if len(shapes) > 1:
            return f"operands of shapes {sorted(shapes)} broadcast; the quantized graph needs equal shapes"
    if node.op is OpType.CLIP and node.attrs.get("min") is None and node.attrs.get("max") is None:
        return "Clip without bounds"
    if node.op is OpType.RESIZE and node.attrs.get("mode", "nearest") != "nearest":
        return f"Resize mode {node.attrs.get('mode')!r} (only 'nearest' moves codes without arithmetic)"
    if cfg.no_quant and node.op in LOOKUP_OPS:
        return f"{node.op.value} is a lookup table, which no_quant=True cannot express"
    return None
