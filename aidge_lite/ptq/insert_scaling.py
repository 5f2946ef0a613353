"""insert_scaling: put a scaling node wherever a tensor's scale must be decided.

A SCALING node (a float multiply, initially 1) goes after every graph input
(the future input quantizer), after every affine node, after every joining
node (its sum can outgrow its inputs: max arbitration multiplies branches up),
and on every operand of a joining node whose branch has no rescaling node of
its own since the last fork (a purely residual branch, `<join>_res<k>`), so
that aligning that branch never disturbs the fork's other readers.

Also: after every product of two activations (Mul: its result is an
accumulator), around every lookup-table op (one before it, private to it: the
table's input codes; one after it: merged into the table by `realize`), before
every Clip (private: the clamp folds into its bounds), and the boundaries of
float islands (`float_islands.insert_boundaries`). Each rescaler records the
bit width it quantizes to (`meta["nb_bits"]`): the width of the node it
follows, of the join it feeds, or of the table / clamp it serves.

Requires: `prepare` has run. Ensures: every operand of every joining node is
fed by a private rescaling chain (`walk.branch_rescaler` finds it).
"""
from __future__ import annotations

from ..errors import QuantizationError
from ..ir import AFFINE, JOINING, Graph, Node, OpType
from ..ir.node import META_SHAPE
from .config import PassReport, PTQConfig
from .float_islands import META_BITS, bits_of, insert_boundaries, is_float
from .quantize import LOOKUP_OPS
from .walk import RESCALING, branch_rescaler


def insert_scaling(graph: Graph, cfg: PTQConfig) -> PassReport:
    for node in graph.topo_order():  # shapes are those `prepare` inferred: before any insertion
        if node.op in JOINING and not is_float(node):
            _refuse_broadcasting(graph, node)
    inserted: list[str] = []
    for name in list(graph.inputs):
        inserted.append(_add_after(graph, name, "input", bits_of(graph.node(name), cfg)))
    inserted += insert_boundaries(graph, cfg, lambda base, role, bits: _scaling_node(graph, base, role, bits))
    for node in graph.topo_order():
        if is_float(node):
            continue
        if node.op in AFFINE:
            inserted.append(_add_after(graph, node.name, "affine", bits_of(node, cfg)))
        elif node.op is OpType.MUL:
            inserted.append(_add_after(graph, node.name, "product", bits_of(node, cfg)))
    for node in graph.topo_order():
        if is_float(node) or (node.op not in LOOKUP_OPS and node.op is not OpType.CLIP):
            continue
        source = graph.node(node.inputs[0])
        if source.op not in RESCALING or len(graph.consumers(source.name)) != 1 \
                or source.name in graph.outputs:
            scaling = _scaling_node(graph, f"{node.name}_in", "operand", bits_of(node, cfg))
            inserted.append(graph.insert_before(node.name, scaling, 0).name)
        if node.op in LOOKUP_OPS:
            inserted.append(_add_after(graph, node.name, "table", bits_of(node, cfg)))
    for node in graph.topo_order():
        if node.op not in JOINING or is_float(node):
            continue
        bits = bits_of(node, cfg)
        for operand, source in enumerate(list(node.inputs)):
            rescaler = branch_rescaler(graph, source)
            if rescaler is None:
                rescaler = _scaling_node(graph, f"{node.name}_res{operand}", "residual", bits)
                graph.insert_before(node.name, rescaler, operand)
                inserted.append(rescaler.name)
            rescaler.meta[META_BITS] = bits  # one level for every operand of a join
        inserted.append(_add_after(graph, node.name, "join", bits))
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


def _scaling_node(graph: Graph, base: str, role: str, bits: int) -> Node:
    return Node(graph.unique_name(base), OpType.SCALING, attrs={"scale": 1.0, "role": role},
                meta={META_BITS: bits})


def _add_after(graph: Graph, name: str, role: str, bits: int) -> str:
    return graph.insert_after(name, _scaling_node(graph, f"{name}_scaling", role, bits)).name
