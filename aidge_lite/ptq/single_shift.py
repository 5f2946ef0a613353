"""single_shift: replace every rescale by a power of two, compensated.

For each quantizer with scale s: k = ceil(log2 s), so 2^k >= s and the ratio
rho = s / 2^k lies in (0.5, 1] (ceil, as the reference library: weights only
shrink, never overflow). If the quantizer follows an affine node, rho is
folded into that node's integer weights and bias (W <- round(W * rho),
b <- round(b * rho), per channel when rho is) and the quantizer becomes a pure
shift by -k. Elsewhere (residual, join: no weights to absorb rho) an integer
compensation multiplier m = round(rho * 2^(n-1)) is kept, and the quantizer
computes round(x * m / 2^(n-1-k)) — one integer multiply and one shift, with a
single rounding where the reference library rounds twice. The shift rounds
with the target's rule (floor = a bare arithmetic shift).

With the "gemmlowp" rescale (profile "tflite") each quantizer keeps TFLite's
form: the real multiplier 2^k or m / 2^(n-1-k) (both exact in a Q31 multiplier
and a signed shift) is applied with TFLite's double rounding, like every other
gemmlowp quantizer.

Requires: `quantize` (integer weights). The input quantizer and the quantizers
after float islands (float in) keep their float multiplier: they are the
boundary with the float world.
"""
from __future__ import annotations

import numpy as np

from ..ir import AFFINE, Graph, OpType
from .config import PassReport, PTQConfig
from .float_islands import FLOAT_IN, bits_of
from .quantize import round_half_away
from .rescale import gemmlowp_rescale, int_rescale, power_of_two


def single_shift(graph: Graph, cfg: PTQConfig) -> PassReport:
    if not cfg.single_shift or cfg.no_quant:
        return PassReport("single_shift", False, {})
    shifted, compensated = [], []
    for node in graph.topo_order():
        if node.op is not OpType.QUANTIZER or node.attrs["role"] in ("input", FLOAT_IN):
            continue
        scales = np.atleast_1d(np.asarray(node.attrs["scale"], dtype=np.float64))
        exponents = np.array([power_of_two(s, "ceil") for s in scales], dtype=np.int64)
        ratios = scales / np.exp2(exponents)
        parent = graph.node(node.inputs[0])
        if parent.op in AFFINE and len(graph.consumers(parent.name)) == 1:
            _fold_into_weights(graph, parent, ratios)
            node.attrs.update(_rescale(cfg, node, np.ones_like(exponents), -exponents))
            shifted.append(node.name)
        else:
            bits = bits_of(node, cfg)
            multipliers = round_half_away(ratios * (1 << (bits - 1))).astype(np.int64)
            node.attrs.update(_rescale(cfg, node, multipliers, (bits - 1) - exponents))
            compensated.append(node.name)
    return PassReport("single_shift", True, {"shifted": shifted, "compensated": compensated})


def _rescale(cfg, node, multipliers, shifts) -> dict:
    """The quantizer attrs of multiplier / 2^shift per channel, in the target's form."""
    if cfg.target.rescale == "gemmlowp":  # m / 2^s (m < 2^15) is exact in float64 and in Q31
        return gemmlowp_rescale([float(m) * 2.0 ** -int(s) for m, s in zip(multipliers, shifts)],
                                node.name)
    return int_rescale(multipliers, shifts)


def _fold_into_weights(graph, affine, ratios):
    w_name, b_name = affine.inputs[1], affine.inputs[2]
    weight, bias = graph.constant(w_name), graph.constant(b_name)
    per_row = ratios.reshape((-1,) + (1,) * (weight.ndim - 1)) if ratios.size > 1 else ratios[0]
    graph.set_constant(w_name, round_half_away(weight * per_row).astype(weight.dtype))
    graph.set_constant(b_name, round_half_away(bias * ratios).astype(bias.dtype))
    affine.attrs["weight_scale"] = affine.attrs["weight_scale"] * (ratios if ratios.size > 1 else ratios[0])
