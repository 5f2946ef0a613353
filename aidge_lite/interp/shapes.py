"""Shape inference by abstract evaluation: run the reference on zeros.

Every node gets `meta["shape"]`, its output shape for a batch of one (free or
unknown dimensions of the graph inputs are taken as 1).
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, OpType
from ..ir.node import META_SHAPE
from .reference import ReferenceInterpreter


def infer_shapes(graph: Graph) -> None:
    feeds = {}
    for name in graph.inputs:
        node = graph.node(name)
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in node.attrs["shape"]]
        if dims:
            dims[0] = 1
        feeds[name] = np.zeros(dims, dtype=node.attrs["dtype"])
    values = ReferenceInterpreter().run(graph, feeds, intermediates=True)
    for node in graph.topo_order():
        node.meta[META_SHAPE] = tuple(np.shape(values[node.name]))
