"""normalize_parameters: bring every weight tensor into [-1, 1].

For each affine node k, in topological order, alpha_k = max|W_k| (per output
channel with `per_channel`), W_k <- W_k / alpha_k, and the bias is divided by
the product of the alphas accumulated along the path (the network value at the
node is now ref / prod(alpha)). At a joining node the accumulated factors are
arbitrated by max: the branch that arrives smaller has its private scaling node
multiplied up so every operand carries the same factor (reference library,
aidge-ptq.md §3). With per-channel alphas, the scaling node after the affine
node brings the channels back to one common factor.

An all-zero weight tensor (or channel) keeps alpha = 1: nothing to normalise,
and no division by zero. `attrs["weight_scale"]` records 1/alpha, the factor
applied to the float weights, for the report and the export.

Lookup-table ops and Clip compute on real values: the private rescaler before
each divides by the factor it receives, so they see (and the table op returns)
real values while calibrating. Float islands do the same through their
DEQUANTIZE operands; a Mul of two activations multiplies the factors.

Requires: `insert_scaling`. Ensures: |W| <= 1 for every affine node.
"""
from __future__ import annotations

import numpy as np

from ..ir import AFFINE, JOINING, Graph, OpType
from .config import PassReport, PTQConfig
from .elementwise_affine import LOWERED
from .float_islands import is_float
from .quantize import LOOKUP_OPS, restarts
from .walk import RESCALING, branch_rescaler, propagate


DEAD_CHANNEL_RATIO = 2.0 ** -8
# bound of the accumulated factor (_bound_factor): far from float64 overflow, and activations stay
# well below 2^53, where integer-valued floats would take the float engine's int64 GEMM path
FACTOR_LIMIT = 2.0 ** 20


def weight_ranges(weight: np.ndarray, per_channel: bool, nb_bits: int = 16) -> np.ndarray | float:
    """max|W| per tensor, or per output channel (axis 0); zeros become 1.

    A nearly dead channel (max|W| below 1/256 of the tensor's max, i.e. under
    one 8-bit step) is normalised by that floor instead: dividing by 1e-15
    would blow its bias past any accumulator for weights that are noise.
    """
    if per_channel:
        ranges = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1, initial=0.0)
        floor = ranges.max(initial=0.0) * DEAD_CHANNEL_RATIO
        ranges = np.maximum(ranges, floor)
        return np.where(ranges > 0, ranges, 1.0).astype(np.float64)
    peak = float(np.abs(weight).max(initial=0.0))
    return peak if peak > 0 else 1.0


def normalize_parameters(graph: Graph, cfg: PTQConfig) -> PassReport:
    alphas: dict[str, object] = {}

    def rule(node, factors):
        if node.op is OpType.DEQUANTIZE:  # a float island's operand: back to real values
            node.attrs["scale"] = 1.0 / float(factors[0])
            return 1.0
        if node.op in LOOKUP_OPS or node.op is OpType.CLIP:
            if not is_float(node):  # the op must see real values: its private rescaler undoes the factor
                rescaler = graph.node(node.inputs[0])
                rescaler.attrs["scale"] = rescaler.attrs["scale"] / float(factors[0])
            return 1.0
        if restarts(node):
            return 1.0
        if node.op is OpType.MUL:
            return factors[0] * factors[1]
        if node.op in AFFINE:
            # a per-channel affine made from arithmetic with constants (one weight per channel):
            # per channel, every weight quantizes to exactly +-(2^(n-1) - 1)
            per_channel = cfg.per_channel or bool(node.meta.get(LOWERED))
            return _normalize_affine(graph, node, factors[0], per_channel, cfg.nb_bits, alphas)
        if node.op in RESCALING:
            return _bound_factor(node, _settle_channels(node, factors[0]))
        if node.op in JOINING:
            return _arbitrate_max(graph, node, factors)
        return factors[0]

    propagate(graph, rule)
    return PassReport("normalize_parameters", bool(alphas), {"alpha": alphas})


def _normalize_affine(graph, node, factor_in, per_channel, nb_bits, alphas):
    w_name, b_name = node.inputs[1], node.inputs[2]
    weight = graph.constant(w_name).astype(np.float64)
    alpha = weight_ranges(weight, per_channel, nb_bits)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    graph.set_constant(w_name, weight / np.reshape(alpha, shape) if per_channel else weight / alpha)
    factor_out = factor_in / np.asarray(alpha) if per_channel else factor_in / alpha
    graph.set_constant(b_name, graph.constant(b_name).astype(np.float64) * factor_out)
    node.attrs["weight_scale"] = 1.0 / np.asarray(alpha) if per_channel else 1.0 / alpha
    alphas[node.name] = alpha
    return factor_out


def _settle_channels(node, factor_in):
    """A scaling node's output carries one factor; per-channel inputs are aligned to the smallest."""
    if np.ndim(factor_in) == 0:
        return factor_in * node.attrs["scale"]
    common = float(np.min(factor_in))
    node.attrs["scale"] = node.attrs["scale"] * common / factor_in
    return common


def _bound_factor(node, factor):
    """Keep the accumulated factor within 2^-20..2^20: past it, the scaling node absorbs its power of two.

    The factor is a product of 1/alpha along the path, and max arbitration at each join carries
    the largest one on: a deep network of small weights (DenseNet's Concat chain) overflowed
    float64 to inf (then inf * 0 = nan biases). A power of two is exact in binary floating point:
    every later value (bias, calibrated range, the scale ratios of normalize_activations) is the
    same as without it, scaled by that power of two.
    """
    if 1.0 / FACTOR_LIMIT <= factor <= FACTOR_LIMIT:
        return factor
    shift = 2.0 ** -int(np.frexp(factor)[1])
    node.attrs["scale"] = node.attrs["scale"] * shift
    return factor * shift


def _arbitrate_max(graph, node, factors):
    common = max(factors)
    operands = [i for i in node.inputs if not graph.is_constant(i)]
    for source, factor in zip(operands, factors):
        if factor != common:
            branch_rescaler(graph, source).attrs["scale"] *= common / factor
    return common
