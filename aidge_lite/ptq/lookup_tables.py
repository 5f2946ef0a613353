"""realize: give the integer graph its lookup tables, folded clamps and dequantize scales.

Runs after `single_shift` (which may still change multipliers) and before
`bias_correction` (which runs the fake-quant engine). It walks the graph once,
computing F (quantized = F * real) of every tensor, the rule of
`quantize.output_scales`, and at the same time:

- Lookup tables. Sigmoid, Tanh, LeakyRelu, HardSigmoid, HardSwish, Gelu and Erf
  read a quantizer P (`insert_scaling` puts one right before them) and write
  into a quantizer Q (right after them). With F_P the factor of P's codes and
  F_Q Q's real multiplier, the op and Q become one LOOKUP node with one entry
  per code P can emit (2^n entries for n-bit codes, n <= 16):

      table[c - lo_P] = clip(round(F_Q * f(c / F_P)), lo_Q, hi_Q)

  with f the float reference's own implementation evaluated in float64 and
  Q's rounding rule and clip. The table enumerates every input, so the result
  is exact at any width up to 16 bits (an MCU library tabulates 8-bit inputs
  the same way); a 16-bit input costs a 65,536-entry table. The op's input is
  thus requantized to P's width first when it is not already P's output.
- Clamps. A Clip reads its own quantizer P; since rounding is monotone,
  round(F * clip(x, lo, hi)) = clip(round(F * x), round(F * lo), round(F * hi)):
  P's bounds become the intersection of its own and [round(F*lo), round(F*hi)]
  (P's rounding rule, F the per-tensor factor) and the Clip disappears (ReLU6
  costs nothing). With `no_quant` the Clip stays, its bounds multiplied by F.
- SiLU. x * Sigmoid(x) (the product of two activations exporters write for SiLU
  / Swish) becomes one table on x's codes into the product's quantizer, exact
  the same way; the Sigmoid's own table is then dropped.
- Dequantize. A float island's DEQUANTIZE gets scale = 1 / F of its operand, so
  the excluded node sees real values.
"""
from __future__ import annotations

import numpy as np

from aidge_lite.kernels.rounding import ROUNDING_NAMES, round_float_ref

from ..errors import QuantizationError
from ..ir import Graph, Node, OpType
from .config import PassReport, PTQConfig
from .compute_signs import NON_NEGATIVE_LOOKUPS
from .float_islands import is_float
from .quantize import LOOKUP_OPS, factor_rule

__all__ = ["LOOKUP_OPS", "NON_NEGATIVE_LOOKUPS", "realize", "float_function"]
MAX_TABLE_BITS = 16


def realize(graph: Graph, cfg: PTQConfig) -> PassReport:
    notes = {"tables": [], "clamps": [], "dequantize": []}
    factors: dict[str, object] = {}
    for node in graph.topo_order():
        if node.name not in graph or node.op is OpType.CONSTANT:
            continue  # (a quantizer merged into its table)
        ins = [factors[i] for i in node.inputs if not graph.is_constant(i)]
        if node.op in LOOKUP_OPS and not is_float(node):
            factors[node.name] = _make_table(graph, node, float(ins[0]))
            notes["tables"].append(node.name)
        elif node.op is OpType.CLIP and not is_float(node):
            _fold_clamp(graph, node, float(ins[0]), cfg)
            factors[node.name] = ins[0]
            notes["clamps"].append(node.name)
        elif node.op is OpType.MUL and not is_float(node) and _silu_parts(graph, node):
            factors[node.name] = _make_silu_table(graph, node, _silu_parts(graph, node), factors)
            notes["tables"].append(node.name)
        elif node.op is OpType.DEQUANTIZE and node.attrs.get("float64"):
            node.attrs["scale"] = 1.0 / float(ins[0])
            factors[node.name] = 1.0
            notes["dequantize"].append(node.name)
        else:
            factors[node.name] = factor_rule(node, ins)
    if notes["tables"]:
        graph.prune()  # the Sigmoid tables a SiLU table replaced
    return PassReport("realize", any(notes.values()), notes)


def float_function(node, x: np.ndarray) -> np.ndarray:
    """The float reference's implementation of `node`'s op, on float64 `x`."""
    from ..interp.reference import ReferenceInterpreter

    interp = ReferenceInterpreter(np.float64)
    interp.compute_dtype = np.dtype(np.float64)
    impl = ReferenceInterpreter.impls.get(node.op)
    if impl is None:
        raise QuantizationError(f"node '{node.name}': no float implementation of {node.op.value} "
                                "to tabulate")
    return np.asarray(impl(interp, node, np.asarray(x, np.float64)), np.float64)


def _make_table(graph, node, f_in: float):
    pre = graph.node(node.inputs[0])
    readers = graph.consumers(node.name)
    if pre.op not in (OpType.QUANTIZER, OpType.LOOKUP) or len(readers) != 1 \
            or readers[0].op is not OpType.QUANTIZER:
        raise QuantizationError(f"node '{node.name}' ({node.op.value}): a lookup table needs a "
                                "quantizer before and after it (insert_scaling)")
    post = readers[0]
    lo, hi = _codes_range(pre)
    if hi - lo >= 1 << MAX_TABLE_BITS:
        raise QuantizationError(f"node '{node.name}': {hi - lo + 1} input codes, more than a "
                                f"{MAX_TABLE_BITS}-bit table")
    from .quantize import collapse_factor
    from .rescale import effective_multiplier

    f_out = collapse_factor(effective_multiplier(post.attrs))
    codes = np.arange(lo, hi + 1, dtype=np.float64)
    values = float_function(node, codes / f_in) * f_out
    rounded = round_float_ref(values, ROUNDING_NAMES[post.attrs["rounding"]])
    table = np.clip(rounded, post.attrs["lo"], post.attrs["hi"]).astype(post.attrs["dtype"])
    function = node.op.value
    node.op = OpType.LOOKUP
    node.attrs = {"table": table, "offset": -lo, "function": function,
                  "in_factor": f_in, "out_factor": f_out, "dtype": post.attrs["dtype"]}
    for key in ("signed", "range", "min", "max", "clip", "nb_bits"):
        if key in post.meta:
            node.meta[key] = post.meta[key]
    node.meta["merged_quantizer"] = post.name
    graph.bypass(post.name)
    return f_out


def _silu_parts(graph, node):
    """(x, sigmoid table) when `node` is x * Sigmoid(x) (SiLU / Swish as exporters write it)
    with the Sigmoid read only here, reading x or a private requantizer of x; else None."""
    if len(node.inputs) != 2 or graph.is_constant(node.inputs[0]) or graph.is_constant(node.inputs[1]):
        return None
    readers = graph.consumers(node.name)
    if len(readers) != 1 or readers[0].op is not OpType.QUANTIZER or node.name in graph.outputs:
        return None
    for x_name, s_name in (node.inputs, node.inputs[::-1]):
        x, sig = graph.node(x_name), graph.node(s_name)
        if x.op not in (OpType.QUANTIZER, OpType.LOOKUP) or sig.op is not OpType.LOOKUP \
                or sig.attrs.get("function") != OpType.SIGMOID.value or len(graph.consumers(sig.name)) != 1:
            continue
        src = graph.node(sig.inputs[0])
        if sig.inputs[0] == x_name or (src.op is OpType.QUANTIZER and src.inputs[0] == x_name
                                       and len(graph.consumers(src.name)) == 1):
            return x_name, s_name
    return None


def _make_silu_table(graph, node, parts, factors):
    """x * Sigmoid(x) -> one table on x's codes into the product's quantizer: one rounding
    where the Sigmoid table, the product and its rescale round three times."""
    x_name, s_name = parts
    post = graph.consumers(node.name)[0]
    lo, hi = _codes_range(graph.node(x_name))
    from .quantize import collapse_factor
    from .rescale import effective_multiplier

    # the product's quantizer scales x_code * s_code: its output's factor is m * F_x * F_s
    f_in = float(factors[x_name])
    f_out = collapse_factor(effective_multiplier(post.attrs) * f_in * float(factors[s_name]))
    real = np.arange(lo, hi + 1, dtype=np.float64) / f_in
    values = real * float_function(Node("sigmoid", OpType.SIGMOID), real) * f_out
    rounded = round_float_ref(values, ROUNDING_NAMES[post.attrs["rounding"]])
    table = np.clip(rounded, post.attrs["lo"], post.attrs["hi"]).astype(post.attrs["dtype"])
    node.op = OpType.LOOKUP
    node.attrs = {"table": table, "offset": -lo, "function": "SiLU", "in_factor": f_in,
                  "out_factor": f_out, "dtype": post.attrs["dtype"]}
    graph.set_inputs(node.name, [x_name])
    node.meta["merged_quantizer"] = post.name
    graph.bypass(post.name)
    return f_out


def _codes_range(node) -> tuple[int, int]:
    """The codes a quantizer (its clip) or a table (its entries: a table whose output
    quantizer also fed the next table) can emit."""
    if node.op is OpType.LOOKUP:
        table = np.asarray(node.attrs["table"])
        lo, hi = int(table.min()), int(table.max())
    else:
        lo, hi = int(node.attrs["lo"]), int(node.attrs["hi"])
    return min(lo, 0), max(hi, 0)  # code 0 always in: the offset -lo indexes the table


def _fold_clamp(graph, node, factor: float, cfg):
    pre = graph.node(node.inputs[0])
    low, high = node.attrs.get("min"), node.attrs.get("max")
    if pre.op is OpType.SCALING:  # no_quant: the clip moves to the scaled domain
        node.attrs["min"] = None if low is None else float(low) * factor
        node.attrs["max"] = None if high is None else float(high) * factor
        return
    if pre.op not in (OpType.QUANTIZER, OpType.LOOKUP) or len(graph.consumers(pre.name)) != 1:
        raise QuantizationError(f"node '{node.name}' (Clip): needs a quantizer of its own before it")
    rounding = pre.attrs.get("rounding", cfg.target.rounding)  # (a table: its merged quantizer's)
    mode = ROUNDING_NAMES[rounding]
    if pre.op is OpType.LOOKUP:
        info = np.iinfo(pre.attrs["table"].dtype)
        lo, hi = int(info.min), int(info.max)
    else:
        lo, hi = int(pre.attrs["lo"]), int(pre.attrs["hi"])
    bound_lo = lo if low is None else int(round_float_ref(np.array([float(low) * factor]), mode)[0])
    bound_hi = hi if high is None else int(round_float_ref(np.array([float(high) * factor]), mode)[0])
    # clip(clip(q, lo, hi), L, H): the intersection, or the constant L or H when they are disjoint
    lo, hi = min(max(lo, bound_lo), bound_hi), max(min(hi, bound_hi), bound_lo)
    dtype = np.iinfo(pre.attrs["table"].dtype if pre.op is OpType.LOOKUP else np.dtype(pre.attrs["dtype"]))
    if lo < dtype.min or hi > dtype.max:
        raise QuantizationError(
            f"node '{node.name}' (Clip): its output is the constant {lo if lo == hi else (lo, hi)} in "
            f"{dtype.dtype} codes, which do not hold it; keep it in float with exclude=['{node.name}']")
    if pre.op is OpType.LOOKUP:  # the clamp goes into the table's entries
        pre.attrs["table"] = np.clip(pre.attrs["table"], lo, hi).astype(pre.attrs["table"].dtype)
    else:
        pre.attrs["lo"], pre.attrs["hi"] = lo, hi
    pre.meta["clamp"] = node.name
    graph.bypass(node.name)
