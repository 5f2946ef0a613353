"""Mixed precision and float islands: per-node bit widths, `exclude` and `fallback`.

Selection: `nb_bits={...}` and `exclude=[...]` name nodes of the float graph
given to `quantize_network` or operator types (`"Conv"`, `"Sigmoid"`, the
ONNX spelling of `OpType`); a node name wins over its op type.

Bits: a node's width applies to its weights (Conv/Gemm) and to the activation
it produces (the quantizer after it, a lookup table's output). The operands of
a join (Add, Sub, Concat) must share one level, so their rescalers take the
join's width. The rest inherits `nb_bits` (the default).

Float islands: an excluded node keeps its float weights and runs in float64 in
both engines. Each operand coming from the quantized part goes through an
explicit DEQUANTIZE (codes -> real values, `scale = 1 / F` with F the code's
exact factor, set by `lookup_tables.realize`), and its output through a
float-in QUANTIZER (role "float_in", the same boundary as the graph input).
Excluded nodes that feed each other stay float between them. `fallback=True`
excludes every node the PTQ cannot quantize, with a `FloatFallbackWarning`;
without it such a node raises a `QuantizationError` that names it and the
options.
"""
from __future__ import annotations

import warnings

from ..errors import QuantizationError
from ..ir import Graph, Node, OpType
from .config import PTQConfig

EXCLUDED = "excluded"   # node.attrs flag: this node runs in float64 in both engines
META_BITS = "nb_bits"   # node.meta: the node's own bit width when it is not the default
FLOAT_IN = "float_in"   # role of the quantizer after a float island


class FloatFallbackWarning(UserWarning):
    """A node the PTQ cannot quantize was kept in float (`fallback=True`)."""


def is_float(node: Node) -> bool:
    return bool(node.attrs.get(EXCLUDED, False))


def bits_of(node: Node, cfg: PTQConfig) -> int:
    return int(node.meta.get(META_BITS, cfg.nb_bits))


def _op_of(key) -> OpType | None:
    if isinstance(key, OpType):
        return key
    for member in OpType:
        if key == member.value:
            return member
    return None


def _match(graph: Graph, keys, option: str) -> tuple[dict[str, object], dict[OpType, object]]:
    """Split selection keys into node names and op types; unknown keys are refused."""
    names, ops = {}, {}
    for key, value in keys:
        if isinstance(key, str) and key in graph:
            names[key] = value
        elif _op_of(key) is not None:
            ops[_op_of(key)] = value
        else:
            raise QuantizationError(
                f"{option}: {key!r} is neither a node of graph '{graph.name}' nor an operator "
                f"type (e.g. 'Conv', 'Sigmoid')")
    return names, ops


def select(graph: Graph, cfg: PTQConfig) -> dict:
    """Mark excluded nodes (`attrs["excluded"]`) and per-node widths (`meta["nb_bits"]`)
    on the float graph, before `prepare` fuses anything."""
    names, ops = _match(graph, ((k, True) for k in cfg.exclude), "exclude")
    excluded = []
    for node in graph.topo_order():
        if node.op in (OpType.INPUT, OpType.CONSTANT):
            if node.name in names:
                raise QuantizationError(f"exclude: '{node.name}' is a graph input or constant, "
                                        "not an operator")
            continue
        if node.name in names or node.op in ops:
            node.attrs[EXCLUDED] = True
            excluded.append(node.name)
    names, ops = _match(graph, cfg.node_bits.items(), "nb_bits")
    widths = {}
    for node in graph.topo_order():
        bits = names.get(node.name, ops.get(node.op))
        if bits is not None and node.op is not OpType.CONSTANT:
            node.meta[META_BITS] = int(bits)
            widths[node.name] = int(bits)
    return {"excluded": excluded, "node_bits": widths}


def refuse_or_fall_back(node: Node, reason: str, cfg: PTQConfig, fell_back: list) -> None:
    """The one exit for a node the PTQ cannot quantize."""
    if cfg.fallback:
        node.attrs[EXCLUDED] = True
        fell_back.append(node.name)
        warnings.warn(f"node '{node.name}' ({node.op.value}) stays float: {reason}",
                      FloatFallbackWarning, stacklevel=3)
        return
    raise QuantizationError(
        f"node '{node.name}': {reason}; keep it in float with exclude=['{node.name}'] "
        f"(or exclude=['{node.op.value}'] for every {node.op.value}), or pass fallback=True")


def insert_boundaries(graph: Graph, cfg: PTQConfig, scaling_node) -> list[str]:
    """DEQUANTIZE before each quantized operand of an excluded node, a float-in rescaler
    after it (unless only excluded nodes read it). `scaling_node(base, role, bits)` makes
    the rescaler (insert_scaling's)."""
    inserted = []
    for node in graph.topo_order():
        if not is_float(node):
            continue
        for k, source in enumerate(list(node.inputs)):
            src = graph.node(source)
            if src.op is OpType.CONSTANT or is_float(src):
                continue
            dq = Node(graph.unique_name(f"{node.name}_dequant{k}"), OpType.DEQUANTIZE,
                      attrs={"scale": 1.0, "zero_point": 0, "float64": True})
            graph.insert_before(node.name, dq, k)
            inserted.append(dq.name)
        readers = graph.consumers(node.name)
        if node.name not in graph.outputs and all(is_float(r) for r in readers):
            continue
        quant = graph.insert_after(node.name, scaling_node(f"{node.name}_quant", FLOAT_IN,
                                                          bits_of(node, cfg)))
        for reader in graph.consumers(quant.name):
            if is_float(reader):
                graph.set_inputs(reader.name, [node.name if i == quant.name else i for i in reader.inputs])
        inserted.append(quant.name)
    return inserted


def from_float(graph: Graph, node: Node) -> bool:
    """A rescaler whose input is a float tensor: the graph input or a float island."""
    src = graph.node(node.inputs[0])
    return src.op is OpType.INPUT or is_float(src)


def split_options(nb_bits, exclude, fallback) -> tuple[int, dict, tuple, bool]:
    """quantize_network's (nb_bits, exclude, fallback) as (default bits, {key: bits},
    excluded keys, fallback), checked."""
    node_bits: dict = {}
    if isinstance(nb_bits, dict):
        node_bits = dict(nb_bits)
        nb_bits = node_bits.pop("default", 8)
    for key in node_bits:
        if not isinstance(key, (str, OpType)):
            raise QuantizationError(f"nb_bits: key {key!r} must be a node name or an op type (a str)")
    if exclude is None:
        exclude = ()
    elif isinstance(exclude, (str, OpType)):
        exclude = (exclude,)
    else:
        try:
            exclude = tuple(exclude)
        except TypeError:
            raise QuantizationError(f"exclude must be a list of node names or op types, got {exclude!r}") from None
    for key in exclude:
        if not isinstance(key, (str, OpType)):
            raise QuantizationError(f"exclude: {key!r} is not a node name or an op type (a str)")
    if not isinstance(fallback, bool):
        raise QuantizationError(f"fallback must be True or False, got {fallback!r}")
    return nb_bits, node_bits, exclude, fallback
