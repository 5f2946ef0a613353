"""normalize_activations: bring every rescaled tensor into [-1, 1].

With r_k the calibrated range of scaling node k (its clipped range once a
clipping mode has run) and r_prev the range of the nearest rescaling node
upstream, node k's scale becomes s_k * r_prev / r_k and an affine node's bias
is divided by r_prev. At a joining node every operand is aligned to the max of
the operands' ranges (max arbitration: nothing overflows), so the operands
share one scale. A constant-zero tensor (range 0) keeps range 1: any scale
represents it, and no division by zero reaches the graph.

A Clip's rescaler is normalised by min(range, max(|lo|, |hi|)) (ReLU6: at most
6). Lookup-table ops and float islands produce real values: their output
restarts at divisor 1; a Mul of two activations multiplies the divisors.

Requires: `calibrate` (meta["range"]) after `normalize_parameters`.
Ensures: on the calibration set, every scaling node's output lies in [-1, 1]
up to clipping, and the operands of every join carry the same divisor.
"""
from __future__ import annotations

import numpy as np

from ..ir import AFFINE, JOINING, Graph, OpType
from ..ir.node import META_RANGE
from .config import PassReport, PTQConfig
from .float_islands import is_float
from .quantize import restarts
from .walk import RESCALING, branch_rescaler, propagate


def effective_range(node) -> float:
    """The range a rescaling node normalises by: its clip if set, else its max |x|."""
    value = node.meta.get("clip", node.meta.get(META_RANGE, 0.0))
    return float(value) if value > 0 else 1.0


def normalize_activations(graph: Graph, cfg: PTQConfig) -> PassReport:
    aligned: dict[str, float] = {}
    clamped = _clamp_ranges(graph)

    def rule(node, divisors):
        if node.op is OpType.DEQUANTIZE:  # the float island's operand stays real
            node.attrs["scale"] = node.attrs["scale"] * float(divisors[0])
            return 1.0
        if restarts(node):
            return 1.0
        if node.op is OpType.MUL:
            return divisors[0] * divisors[1]
        if node.op in AFFINE:
            b_name = node.inputs[2]
            graph.set_constant(b_name, graph.constant(b_name) / divisors[0])
            return divisors[0]
        if node.op in RESCALING:
            own = effective_range(node)
            node.attrs["scale"] = node.attrs["scale"] * divisors[0] / own
            return own
        if node.op in JOINING:
            common = max(divisors)
            operands = [i for i in node.inputs if not graph.is_constant(i)]
            for source, divisor in zip(operands, divisors):
                if divisor != common:
                    rescaler = branch_rescaler(graph, source)
                    rescaler.attrs["scale"] = rescaler.attrs["scale"] * divisor / common
                    aligned[rescaler.name] = common
            return common
        return divisors[0]

    propagate(graph, rule)
    return PassReport("normalize_activations", True, {"aligned_at_joins": aligned, "clamped": clamped})


def _clamp_ranges(graph: Graph) -> dict[str, float]:
    """A Clip's private rescaler needs no range beyond the Clip's bounds (ReLU6: 6)."""
    clamped = {}
    for node in graph.topo_order():
        if node.op is not OpType.CLIP or is_float(node):
            continue
        bounds = [abs(float(b)) for b in (node.attrs.get("min"), node.attrs.get("max")) if b is not None]
        rescaler = graph.node(node.inputs[0])
        if node.attrs.get("min") is None or node.attrs.get("max") is None or max(bounds) == 0:
            continue  # one-sided: the other side is the data's
        limit = min(effective_range(rescaler), max(bounds))
        if limit < effective_range(rescaler):
            rescaler.meta["clip"] = limit
            clamped[rescaler.name] = limit
    return clamped


def scale_is_uniform(scale) -> bool:
    return np.ndim(scale) == 0 or bool(np.all(scale == np.ravel(scale)[0]))
