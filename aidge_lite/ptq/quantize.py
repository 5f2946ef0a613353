"""quantize: turn the normalised graph into an n-bit integer graph.

With Sw = 2^(n-1) - 1 (weights are always signed) and Sa = 2^(n-1) - 1 for a
signed tensor or 2^n - 1 for an unsigned one (sign optimisation):
W <- round(W * Sw), b <- round(b * Sw * Sa(in)), and a rescaling node's scale
s <- s * Sa(out) / (Sa(in) * Sw) after an affine node, s * Sa(out) / Sa(in)
after a residual or joining node. Every SCALING node becomes a QUANTIZER:
rescale, round (the target's rule, half away from zero by default — never
NumPy's silent half-to-even), clip to [-2^(n-1), 2^(n-1)-1] or [0, 2^n-1].
The input's scaling node becomes the explicit input quantizer (float64 product).
compat "aidge" marks the other float quantizers `float32=True`: the scale is
rounded to float32 and the product computed in float32, as the reference's
float32 Mul does (its float64 scale is cast to float32 after PTQ). Average pools
become integer pools (exact sum, rounded division). `no_quant` keeps every
scale but skips rounding and clipping (a check of the scale bookkeeping).
n is per node (`float_islands.bits_of`: an affine node's weights and every
rescaler have their own width). A Mul of two activations carries the product
of its operands' levels; lookup-table ops, float islands and their DEQUANTIZE
operands work on real values (level 1), like the graph input.

Ensures: weights in int8/int16, biases in int32 (int64 if needed), each
quantizer records its multiplier, rounding rule, clip range and output dtype,
and `graph.meta["output_scale"]` maps each output to q / float.
"""
from __future__ import annotations

import numpy as np

from aidge_lite.kernels.rounding import ROUNDING_NAMES, round_float_ref

from ..errors import QuantizationError
from ..ir import AFFINE, JOINING, SEAMLESS, Graph, OpType
from ..ir.node import META_SIGNED
from .config import PassReport, PTQConfig
from .float_islands import bits_of, from_float, is_float
from .rescale import GEMMLOWP_DTYPES, effective_multiplier, encode_rescale
from .walk import RESCALING, propagate

# ops quantized as lookup tables (lookup_tables.py): in the float passes they see and
# produce real values, so their output restarts at factor 1, like a graph input
LOOKUP_OPS = frozenset({OpType.SIGMOID, OpType.TANH, OpType.LEAKY_RELU, OpType.HARD_SIGMOID,
                        OpType.HARD_SWISH, OpType.GELU, OpType.ERF})


def restarts(node) -> bool:
    """True when `node`'s output is a real (unscaled) value in the float passes."""
    return node.op is OpType.INPUT or is_float(node) or node.op is OpType.DEQUANTIZE \
        or node.op in LOOKUP_OPS


def act_max(cfg: PTQConfig, signed: bool, nb_bits: int | None = None) -> int:
    bits = cfg.nb_bits if nb_bits is None else nb_bits
    return (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1


def clip_bounds(nb_bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (nb_bits - 1)), (1 << (nb_bits - 1)) - 1) if signed else (0, (1 << nb_bits) - 1)


def int_dtype(nb_bits: int, signed: bool) -> str:
    width = 8 if nb_bits <= 8 else 16
    return f"{'' if signed else 'u'}int{width}"


def round_half_away(values: np.ndarray) -> np.ndarray:
    return round_float_ref(np.asarray(values, dtype=np.float64), ROUNDING_NAMES["half_away"])


def quantize(graph: Graph, cfg: PTQConfig) -> PassReport:
    integer = not cfg.no_quant

    def rule(node, levels):
        if node.op is OpType.DEQUANTIZE:
            node.attrs["scale"] = node.attrs["scale"] / levels[0]
            return 1.0
        if restarts(node):
            return 1.0
        if node.op in AFFINE:
            sw = act_max(cfg, True, bits_of(node, cfg))
            _quantize_affine(graph, node, sw, levels[0], integer, bits_of(node, cfg))
            return levels[0] * sw
        if node.op in RESCALING:
            signed = node.meta.get(META_SIGNED, True)
            top = act_max(cfg, signed, bits_of(node, cfg))
            node.attrs["scale"] = node.attrs["scale"] * top / levels[0]
            return top
        if node.op in JOINING and len(set(levels)) > 1:
            raise AssertionError(f"join '{node.name}' operands at levels {levels}")
        if node.op is OpType.MUL:
            return levels[0] * levels[1]
        return levels[0]

    propagate(graph, rule)
    if integer:
        for node in graph.topo_order():
            if node.op is OpType.SCALING:
                _to_quantizer(graph, node, cfg)
            elif node.op is OpType.MUL and not is_float(node):
                # a product of two activations: symmetric codes, so zero points of 0 (the
                # integer Mul of interp/zero_point.py: an exact int64 product)
                node.attrs["input_zero_points"] = [0, 0]
            elif node.op in (OpType.AVGPOOL, OpType.GLOBAL_AVGPOOL) and not is_float(node):
                node.attrs["rounding"] = cfg.target.rounding
    graph.meta.update(quantized=True, integer=integer, nb_bits=cfg.nb_bits, target=cfg.target.to_dict())
    if cfg.node_bits:
        graph.meta["node_bits"] = dict(cfg.node_bits)
    return PassReport("quantize", True, {"nb_bits": cfg.nb_bits, "integer": integer})


def _quantize_affine(graph, node, sw, level_in, integer, nb_bits):
    w_name, b_name = node.inputs[1], node.inputs[2]
    weight = graph.constant(w_name) * sw
    bias = graph.constant(b_name) * (sw * level_in)
    node.attrs["weight_scale"] = node.attrs.get("weight_scale", 1.0) * sw
    if integer:
        weight = round_half_away(weight).astype(int_dtype(nb_bits, True))
        bias = round_half_away(bias)
        bias = bias.astype(np.int32 if np.abs(bias).max(initial=0) < 2**31 else np.int64)
    graph.set_constant(w_name, weight)
    graph.set_constant(b_name, bias)


def _to_quantizer(graph, node, cfg):
    signed = node.meta.get(META_SIGNED, True)
    bits = bits_of(node, cfg)
    lo, hi = clip_bounds(bits, signed)
    node.op = OpType.QUANTIZER
    node.attrs.update(
        rounding=cfg.target.rounding, lo=lo, hi=hi, dtype=int_dtype(bits, signed),
        signed=signed,
    )
    float_in = from_float(graph, node)
    mode = "float" if float_in else cfg.target.rescale
    if mode == "gemmlowp":
        check_gemmlowp_quantizer(node, cfg)
    node.attrs.update(encode_rescale(node.attrs["scale"], mode, node.name))
    if cfg.compat == "aidge" and mode == "float" and not float_in:
        # the reference's quantizer multiplies float32 tensors: float32 scale, float32 product
        node.attrs["float32"] = True


def check_gemmlowp_quantizer(node, cfg):
    """What a gemmlowp quantizer needs beyond an encodable multiplier: TFLite rescales
    int32 accumulators (so the target's must be 32 bits or narrower) into int8, uint8 or
    int16 (no uint16 output)."""
    if cfg.target.acc_bits > 32:
        raise QuantizationError(
            f"node '{node.name}': the gemmlowp rescale takes int32 accumulators (TFLite's), "
            f"but the target has acc_bits={cfg.target.acc_bits}; use acc_bits <= 32")
    if node.attrs["dtype"] not in GEMMLOWP_DTYPES:
        raise QuantizationError(
            f"node '{node.name}': the gemmlowp rescale writes {'/'.join(GEMMLOWP_DTYPES)}, not "
            f"{node.attrs['dtype']} (an unsigned {cfg.nb_bits}-bit activation); quantize with "
            "nb_bits <= 8 or another rescale")


def factor_rule(node, factors):
    """F of `node`'s output (quantized = F * real) from its operands' F, in a quantized graph."""
    if node.op is OpType.INPUT or is_float(node) or node.op is OpType.DEQUANTIZE:
        return 1.0  # real values (a float island and its dequantized operands)
    if node.op is OpType.LOOKUP and "out_factor" in node.attrs:
        return node.attrs["out_factor"]
    if node.op in AFFINE:
        return factors[0] * node.attrs.get("weight_scale", 1.0)
    if node.op in RESCALING:
        return _collapse(factors[0] * effective_multiplier(node.attrs))
    if node.op is OpType.MUL and len(factors) == 2:
        return factors[0] * factors[1]
    return factors[0]


def output_scales(graph: Graph) -> dict[str, object]:
    """For each graph output, the factor F with quantized value = F * float value."""
    factors = propagate(graph, factor_rule)
    return {name: factors[name] for name in graph.outputs}


def collapse_factor(factor) -> float:
    """The one factor of a rescaler's output (see `_collapse`)."""
    return _collapse(factor)


def _collapse(factor) -> float:
    """A rescaler's output has one scale by design; per-channel multipliers that
    approximate it (fixed point, shifts) differ only by their rounding."""
    return float(np.median(np.ravel(factor)))


_BOUND_PRESERVING = (frozenset(SEAMLESS) - {OpType.LEAKY_RELU}) | {OpType.CONCAT}


def check_gemmlowp_headroom(graph: Graph, cfg: PTQConfig) -> None:
    """Refuse a gemmlowp quantizer whose left shift (a real multiplier >= 1) can push its
    input out of int32: TFLite computes acc * 2^shift in int32 (overflow is undefined
    behaviour there; both engines would raise at run time). Worst-case |input| bounds are
    propagated exactly from the integer graph: a quantizer's clip, sum |W| * bound + |b|
    for Conv/Gemm, sums for Add/Sub, products for Mul, a lookup table's largest entry,
    the operands' bound through seamless ops and Concat,
    and the target's accumulator range for anything else (it caps every bound)."""
    limit = 1 << (cfg.target.acc_bits - 1)

    def rule(node, bounds):
        if node.op in (OpType.INPUT, OpType.DEQUANTIZE) or is_float(node):
            return None  # float
        if node.op is OpType.LOOKUP:  # its entries, whatever its input
            return int(np.abs(np.asarray(node.attrs["table"], np.int64)).max(initial=0))
        if node.op is OpType.QUANTIZER:
            _check_left_shift(node, bounds[0] if bounds else None)
            return max(abs(int(node.attrs["lo"])), abs(int(node.attrs["hi"])))
        if None in bounds:
            return limit
        if node.op in AFFINE:
            w = graph.constant(node.inputs[1])
            b = np.abs(np.ravel(graph.constant(node.inputs[2])).astype(np.int64))
            rows = np.abs(w.reshape(w.shape[0], -1).astype(np.int64)).sum(axis=1)
            b = np.broadcast_to(b, rows.shape) if b.size == 1 else b
            worst = max((int(r) * bounds[0] + int(c) for r, c in zip(rows, b)), default=0)
            return min(worst, limit)
        if node.op in (OpType.ADD, OpType.SUB):
            return min(sum(bounds), limit)
        if node.op is OpType.MUL and len(bounds) == 2:
            return min(bounds[0] * bounds[1], limit)
        if node.op in _BOUND_PRESERVING and bounds:
            return max(bounds)
        return limit

    propagate(graph, rule)


def _check_left_shift(node, bound):
    if node.attrs.get("mode") != "gemmlowp" or bound is None:
        return
    left = max(max(node.attrs["shift"]), 0) + int(node.attrs.get("pre_shift", 0))
    if left and bound > ((1 << 31) - 1) >> left:
        raise QuantizationError(
            f"node '{node.name}': the gemmlowp rescale shifts its input left by {left} bits "
            f"(multiplier >= 1), but that input can reach |{bound}| (worst case), beyond "
            f"int32 once shifted (TFLite computes it in int32)")
