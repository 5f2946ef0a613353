"""Shared helpers of the tests of the exporter ops (`test_new_ops*.py`): quantize and
check both engines, per-output SQNR, factors, a lookup table run alone."""
from __future__ import annotations

import numpy as np

import aidge_lite
from aidge_lite.ir import Graph, Node, OpType
from aidge_lite.ptq.quantize import factor_rule
from aidge_lite.ptq.walk import propagate

F32 = np.float32


def sqnr(ref, got) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return float(10 * np.log10((ref ** 2).sum() / max(((ref - got) ** 2).sum(), 1e-300)))


def quantize_and_check(graph, calib, test, **options):
    """Quantize, run both engines (bit-exact), return (qgraph, SQNR of each output vs float)."""
    q = aidge_lite.quantize_network(graph, calib, **options)
    fake = aidge_lite.run(q, test)
    integer = aidge_lite.run(q, test, engine="integer")
    for name in q.outputs:
        np.testing.assert_array_equal(fake[name], integer[name], err_msg=name)
    ref = aidge_lite.run(graph, test, dtype=np.float64)
    deq = aidge_lite.dequantize(q, fake)
    return q, {name: sqnr(ref[name], deq[name]) for name in graph.outputs}


def ops(graph) -> list[OpType]:
    return [n.op for n in graph.topo_order() if n.op is not OpType.CONSTANT]


def factors(q) -> dict:
    return propagate(q, factor_rule)


def run_table_alone(q, table_node, codes):
    """The LOOKUP node alone, fed every code, in both engines."""
    pre = q.node(table_node.inputs[0])
    g = Graph("one_table")
    g.add(Node("c", OpType.INPUT, attrs={"shape": [None, codes.size], "dtype": pre.attrs["dtype"]}))
    g.add(Node("t", OpType.LOOKUP, ["c"], attrs=dict(table_node.attrs)))
    g.outputs = ["t"]
    g.meta.update(quantized=True, integer=True, target=q.meta["target"])
    feed = codes.reshape(1, -1).astype(pre.attrs["dtype"])
    return (aidge_lite.run(g, feed)["t"].reshape(-1),
            aidge_lite.run(g, feed, engine="integer")["t"].reshape(-1))
