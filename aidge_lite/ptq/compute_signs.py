"""compute_signs: decide which rescaling nodes may quantize to unsigned levels.

With `optimize_signs`, a tensor known to be non-negative is quantized to
[0, 2^n - 1] (2^n - 1 levels) instead of [-2^(n-1), 2^(n-1) - 1], doubling
its resolution. The sign map, per tensor (True = non-negative):
- a graph input is non-negative when every calibration value is >= 0;
- Relu, Clip(lo >= 0), Sigmoid and HardSigmoid outputs are non-negative (a
  float island's as calibrated); sign-preserving ops (pools, layout, Pad 0)
  keep their input's sign; Concat and Add are non-negative only if every
  operand is; an affine output is signed;
- a rescaling node is unsigned when its input is non-negative, or when every
  reader is a Relu (the quantizer's [0, 2^n - 1] clip then does the Relu's
  work, the reference library's backward propagation).
The operands of a joining node must arrive at one level (Sa), so a join whose
operand rescalers disagree makes them all signed. That is where the reference
library goes wrong: it marks a mixed-sign Add unsigned and loses every
negative value (48-52 % relative error on a residual block, aidge-ptq.md §4.5).

compat "aidge" keeps the input quantizer signed: the reference treats the
network input as signed in +-1 (its caller feeds x * (2^(n-1) - 1)), so the
first layer's input level is 2^(n-1) - 1 even for non-negative pixels.

Requires: `calibrate` (input min). Ensures: every rescaling node has
`meta["signed"]`; without `optimize_signs` all are signed.
"""
from __future__ import annotations

from ..ir import JOINING, NON_NEGATIVE, SIGN_PRESERVING, Graph, OpType
from ..ir.node import META_SIGNED
from .config import PassReport, PTQConfig
from .float_islands import is_float
from .quantize import LOOKUP_OPS

# lookup ops whose output is never negative
NON_NEGATIVE_LOOKUPS = frozenset({OpType.SIGMOID, OpType.HARD_SIGMOID})


def _clamps_negatives(node) -> bool:
    """A quantized Clip with lo >= 0 (ReLU6): non-negative output, like a Relu."""
    low = node.attrs.get("min")
    return node.op is OpType.CLIP and not is_float(node) and low is not None and float(low) >= 0.0
from .walk import RESCALING, branch_rescaler, propagate


def sign_map(graph: Graph) -> dict[str, bool]:
    """Non-negativity of every tensor, True where the tensor is never negative."""

    def rule(node, operands):
        if node.op is OpType.INPUT or is_float(node):  # float values: as calibrated
            return node.meta.get("min", -1.0) >= 0.0
        if node.op in NON_NEGATIVE or _clamps_negatives(node):
            return True
        if node.op in LOOKUP_OPS:
            return node.op in NON_NEGATIVE_LOOKUPS
        if node.op in RESCALING:
            readers = graph.consumers(node.name)
            relu_only = bool(readers) and all(r.op in NON_NEGATIVE or _clamps_negatives(r) for r in readers)
            return operands[0] or (relu_only and node.name not in graph.outputs)
        if node.op in SIGN_PRESERVING or node.op in (OpType.ADD, OpType.CONCAT, OpType.MUL,
                                                       OpType.DEQUANTIZE, OpType.CLIP):
            return all(operands)  # (Sub of non-negatives can be negative)
        return False

    return propagate(graph, rule)


def compute_signs(graph: Graph, cfg: PTQConfig) -> PassReport:
    rescalers = [n for n in graph.topo_order() if n.op in RESCALING]
    if not cfg.optimize_signs:
        for node in rescalers:
            node.meta[META_SIGNED] = True
        return PassReport("compute_signs", False, {})
    non_negative = sign_map(graph)
    for node in rescalers:
        # compat "aidge": the reference's input is signed in +-1, whatever the data
        input_signed = cfg.compat == "aidge" and node.attrs.get("role") == "input"
        node.meta[META_SIGNED] = input_signed or not non_negative[node.name]
    forced = _align_join_levels(graph)
    unsigned = [n.name for n in rescalers if not n.meta[META_SIGNED]]
    return PassReport("compute_signs", bool(unsigned), {"unsigned": unsigned, "forced_signed": forced})


def _align_join_levels(graph: Graph) -> list[str]:
    """Joins need one level for all operands: mixed operand rescalers all go signed."""
    forced = []
    for node in graph.topo_order():
        if node.op not in JOINING or is_float(node):
            continue
        rescalers = [branch_rescaler(graph, src) for src in node.inputs]
        if len({r.meta[META_SIGNED] for r in rescalers}) > 1:
            for rescaler in rescalers:
                if not rescaler.meta[META_SIGNED]:
                    rescaler.meta[META_SIGNED] = True
                    forced.append(rescaler.name)
    return forced
