"""insert_scaling: put a scaling node wherever a tensor's scale must be decided.

A SCALING node (a float multiply, initially 1) goes after every graph input
(the future input quantizer), after every affine node, after every joining
node (its sum can outgrow its inputs: max arbitration multiplies branches up),
and on every operand of a joining node whose branch has no rescaling node of
its own since the last fork (a purely residual branch, `<join>_res<k>`), so
that aligning that branch never disturbs the fork's other readers.

Requires: `prepare` has run. Ensures: every operand of every joining node is
fed by a private rescaling chain (`walk.branch_rescaler` finds it).
"""
from __future__ import annotations

from ..errors import QuantizationError
from ..ir import AFFINE, JOINING, Graph, Node, OpType
from ..ir.node import META_SHAPE
from .config import PassReport, PTQConfig
from .walk import branch_rescaler


def insert_scaling(graph: Graph, cfg: PTQConfig) -> PassReport:
    for node in graph.topo_order():  # shapes are those `prepare` inferred: before any insertion
        if node.op in JOINING:
            _refuse_broadcasting(graph, node)
    inserted: list[str] = []
    for name in list(graph.inputs):
        inserted.append(_add_after(graph, name, "input"))
    for node in graph.topo_order():
        if node.op in AFFINE:
            inserted.append(_add_after(graph, node.name, "affine"))
    for node in graph.topo_order():
        if node.op not in JOINING:
            continue
        for operand, source in enumerate(list(node.inputs)):
            if branch_rescaler(graph, source) is None:
                scaling = _scaling_node(graph, f"{node.name}_res{operand}", "residual")
                graph.insert_before(node.name, scaling, operand)
                inserted.append(scaling.name)
        inserted.append(_add_after(graph, node.name, "join"))
    return PassReport("insert_scaling", bool(inserted), {"inserted": inserted})


def _refuse_broadcasting(graph: Graph, node: Node) -> None:
    """An element-wise join must see operands of one shape: one scale per element
    stream, and the integer kernels do not broadcast."""
    if node.op is OpType.CONCAT:
        return
    shapes = {tuple(graph.node(i).meta[META_SHAPE]) for i in node.inputs
              if graph.node(i).meta.get(META_SHAPE) is not None}
    if len(shapes) > 1:
        raise QuantizationError(f"node '{node.name}' ({node.op.value}): operands of shapes "
                                f"{sorted(shapes)} broadcast; the quantized graph needs equal shapes")


def _scaling_node(graph: Graph, base: str, role: str) -> Node:
    return Node(graph.unique_name(base), OpType.SCALING, attrs={"scale": 1.0, "role": role})


def _add_after(graph: Graph, name: str, role: str) -> str:
    return graph.insert_after(name, _scaling_node(graph, f"{name}_scaling", role)).name
