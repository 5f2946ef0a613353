"""Graph walks the PTQ passes share: scale propagation and branch lookup."""
from __future__ import annotations

from typing import Any, Callable

from ..ir import SEAMLESS, Graph, Node, OpType

RESCALING = frozenset({OpType.SCALING, OpType.QUANTIZER})


def propagate(graph: Graph, rule: Callable[[Node, list[Any]], Any]) -> dict[str, Any]:
    """Walk in topological order computing one value per tensor.

    `rule(node, operand_values)` sees the values of the node's non-constant
    operands and returns the node's value (a scale, a sign, a divisor, ...).
    """
    values: dict[str, Any] = {}
    for node in graph.topo_order():
        if node.op is OpType.CONSTANT:
            continue
        operands = [values[i] for i in node.inputs if not graph.is_constant(i)]
        values[node.name] = rule(node, operands)
    return values


def branch_rescaler(graph: Graph, tensor: str) -> Node | None:
    """The rescaling node that feeds `tensor` through a private chain, if any.

    Walks back through single-input seamless ops whose output has no other
    reader; returns the SCALING/QUANTIZER found, or None when the chain reaches
    a fork, an input or another kind of op first (a purely residual branch).
    """
    node = graph.node(tensor)
    while True:
        if len(graph.consumers(node.name)) > 1:
            return None  # a fork: rescaling here would move the other readers too
        if node.op in RESCALING:
            return node
        if node.op not in SEAMLESS or len(node.inputs) != 1:
            return None
        node = graph.node(node.inputs[0])


def joining_operands(graph: Graph, node: Node) -> list[str]:
    return [i for i in node.inputs if not graph.is_constant(i)]
