"""Shape inference by abstract evaluation: run the reference on zeros.

Every node gets `meta["shape"]`, its output shape for a batch of one (free or
unknown dimensions of the graph inputs are taken as 1). A graph that cannot run
at batch one (a graph input that is not batched, e.g. both operands of a MatMul,
or a Reshape that folds dim 0 into others) gets the shapes at its declared
static input shapes instead.
"""
from __future__ import annotations

import numpy as np

from ..errors import ExecutionError
from ..ir import Graph
from ..ir.node import META_SHAPE
from .reference import ReferenceInterpreter


def infer_shapes(graph: Graph) -> None:
    with np.errstate(all="ignore"):  # zeros make e.g. Div compute 0/0
        try:
            values = ReferenceInterpreter().run(graph, _zeros(graph, batch_one=True), intermediates=True)
        except ExecutionError:
            if not _all_static(graph):
                raise
            values = ReferenceInterpreter().run(graph, _zeros(graph, batch_one=False), intermediates=True)
    for node in graph.topo_order():
        node.meta[META_SHAPE] = tuple(np.shape(values[node.name]))


def _zeros(graph: Graph, batch_one: bool) -> dict[str, np.ndarray]:
    feeds = {}
    for name in graph.inputs:
        node = graph.node(name)
        dims = list(node.attrs["shape"])
        if batch_one:
            dims = [d if isinstance(d, int) and d > 0 else 1 for d in dims]
            if dims:
                dims[0] = 1
        feeds[name] = np.zeros(dims, dtype=node.attrs["dtype"])
    return feeds


def _all_static(graph: Graph) -> bool:
    return all(
        isinstance(d, int) and d >= 0 for name in graph.inputs for d in graph.node(name).attrs["shape"]
    )
