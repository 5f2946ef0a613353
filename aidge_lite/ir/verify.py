"""`verify(graph)`: the invariants every pass must preserve.

Checked: acyclicity, every operand exists and matches an edge, arity and
required attributes per op, each node's own attributes (`validate.check_node`:
window geometry, Gemm flags, quantizer parameters), graph inputs/outputs exist,
and, where shapes are known (`meta["shape"]`), that affine weights fit their input.
Linear in the graph size (a PTQ pass calls it after every step).
"""
from __future__ import annotations

from ..errors import GraphError
from .graph import Graph
from .node import META_SHAPE, Node
from .ops import OPS, OpType
from .validate import check_node


def verify(graph: Graph) -> None:
    """Raise `GraphError` naming the first broken invariant; return None if sound."""
    verified_order(graph)


def verified_order(graph: Graph) -> list[Node]:
    """`verify`, returning the topological order it walked (`graph.topo_order()`,
    which refuses a cycle), so a caller need not sort again."""
    order = graph.topo_order()
    edges = graph.edges()
    incoming: dict[str, set] = {}  # per destination, built once: scanning `edges` per node is O(n^2)
    for src, dst in edges:
        incoming.setdefault(dst, set()).add(src)
    for node in order:
        _check_operands(graph, node, edges, incoming.get(node.name, set()))
        _check_spec(node)
        check_node(node)
        _check_shapes(graph, node)
    for name in graph.inputs:
        if name not in graph or graph.node(name).op is not OpType.INPUT:
            raise GraphError(f"graph input '{name}' is not an Input node")
    if not graph.outputs:
        raise GraphError(f"graph '{graph.name}' has no outputs")
    for name in graph.outputs:
        if name not in graph:
            raise GraphError(f"graph output '{name}' does not exist")
    return order


def _check_operands(graph: Graph, node: Node, edges: set, incoming: set) -> None:
    for src in node.inputs:
        if not isinstance(src, str) or src not in graph:
            raise GraphError(f"node '{node.name}': input {src!r} does not exist")
        if (src, node.name) not in edges:
            raise GraphError(f"node '{node.name}': input '{src}' has no edge")
    if incoming != set(node.inputs):
        raise GraphError(f"node '{node.name}': edges {sorted(incoming)} != inputs {node.inputs}")


def _check_spec(node: Node) -> None:
    spec = OPS[node.op]
    if not spec.min_inputs <= len(node.inputs) <= spec.max_inputs:
        raise GraphError(
            f"node '{node.name}' ({node.op.value}): {len(node.inputs)} inputs, "
            f"expected {spec.min_inputs}..{spec.max_inputs}"
        )
    missing = [a for a in spec.required_attrs if a not in node.attrs]
    if missing:
        raise GraphError(f"node '{node.name}' ({node.op.value}): missing attribute(s) {missing}")


def _check_shapes(graph: Graph, node: Node) -> None:
    if node.op not in (OpType.CONV, OpType.GEMM) or len(node.inputs) < 2:
        return
    if node.attrs.get("layout", "NCHW") != "NCHW":  # imported NHWC convs: checked at import
        return
    x_shape = graph.node(node.inputs[0]).meta.get(META_SHAPE)
    w_node = graph.node(node.inputs[1])
    if x_shape is None or w_node.op is not OpType.CONSTANT:
        return
    w_shape = w_node.attrs["value"].shape
    if node.op is OpType.CONV:
        group = node.attrs.get("group", 1)
        ok = len(x_shape) == len(w_shape) >= 2 and x_shape[1] == w_shape[1] * group
    elif len(w_shape) != 2 or not len(x_shape):
        ok = False
    else:
        k_in = w_shape[1] if node.attrs.get("transB", 0) else w_shape[0]
        k_x = x_shape[0] if node.attrs.get("transA", 0) else x_shape[-1]
        ok = k_in == k_x
    if not ok:
        raise GraphError(
            f"node '{node.name}' ({node.op.value}): input shape {tuple(x_shape)} "
            f"does not fit weight shape {tuple(w_shape)}"
        )
