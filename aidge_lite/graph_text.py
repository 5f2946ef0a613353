"""Text views of a graph for `aidge-lite info` / `show`: markdown tables, node
attributes in a few characters, and Graphviz DOT with quantizers annotated."""
from __future__ import annotations

import numpy as np


def table(headers, rows) -> str:
    """A markdown table with padded columns."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def _compact(value) -> str:
    """An attribute value in a few characters: lists joined by commas, floats short."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


_HIDDEN_ATTRS = frozenset({"value", "weight_scale", "scale", "multiplier", "shift"})  # shown elsewhere


def key_attrs(node) -> str:
    """The attributes worth a glance: a quantizer's role, type, clip range and rounding."""
    from aidge_lite.ir import OpType

    a = node.attrs
    if node.op is OpType.QUANTIZER and "zero_point" in a:  # zero-point graphs (TFLite)
        return (f"{a.get('mode')}, {a.get('dtype')} [{a.get('lo')}, {a.get('hi')}], "
                f"zero point {a.get('zero_point')}")
    if node.op is OpType.QUANTIZER:
        rounding = "gemmlowp" if a.get("mode") == "gemmlowp" else a.get("rounding")  # TFLite's two roundings
        return f"{a.get('role')}, {a.get('dtype')} [{a.get('lo')}, {a.get('hi')}], {rounding}"
    if node.op is OpType.SCALING:
        return f"{a.get('role')}, {'signed' if node.meta.get('signed', True) else 'unsigned'}"
    if node.op is OpType.CONSTANT:
        return f"{tuple(np.shape(a['value']))} {np.asarray(a['value']).dtype}"
    return " ".join(f"{k}={_compact(v)}" for k, v in a.items()
                    if k not in _HIDDEN_ATTRS and np.size(v) <= 8)


def scale_of(node) -> str:
    """A rescaling node's scale (or multiplier / 2^shift), an affine node's weight scale."""
    from aidge_lite.ir import AFFINE, OpType
    from aidge_lite.report import rescale_summary, rescale_text

    a = node.attrs
    if node.op is OpType.QUANTIZER and a.get("mode") == "gemmlowp":
        # TFLite's convention, exact integers: Q31 multiplier, signed shift (+ = left)
        pairs = [f"{m}*2^{s - 31}" for m, s in zip(a["multiplier"][:2], a["shift"][:2])]
        more = f" ... ({len(a['multiplier'])} channels)" if len(a["multiplier"]) > 2 else ""
        scale = a.get("scale")
        scale = repr(scale) if np.size(scale) == 1 else rescale_text(rescale_summary({"scale": scale}))
        return f"scale {scale}; M*2^(shift-31) = {', '.join(pairs)}{more}"
    if node.op in (OpType.QUANTIZER, OpType.SCALING):
        return rescale_text(rescale_summary(node.attrs))
    if node.op in AFFINE and "weight_scale" in node.attrs:
        return "weights x " + rescale_text(rescale_summary({"scale": node.attrs["weight_scale"]}))
    return ""


# --------------------------------------------------------------------- dot
def _dot_str(text: str) -> str:
    """A quoted DOT string; newlines become DOT's \\n line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


_DOT_STYLE = {  # op value -> node attributes
    "Quantizer": 'style=filled, fillcolor="#fde9a9"',
    "Scaling": 'style=filled, fillcolor="#e3e3ff"',
    "Constant": 'shape=note, fontsize=8, color="#999999"',
    "Input": "shape=ellipse",
}


def _dot_label(node) -> str:
    from aidge_lite.ir import OpType

    lines = [node.name, node.op.value]
    if node.op is OpType.INPUT:
        lines[1] += f" {_compact(node.attrs.get('shape'))} {node.attrs.get('dtype')}"
    elif node.op in (OpType.QUANTIZER, OpType.SCALING, OpType.CONSTANT):
        lines.append(key_attrs(node))
    scale = scale_of(node)
    if scale:
        lines.append(scale if scale.startswith("weights") else f"scale {scale}")
    return "\n".join(lines)


def to_dot(graph) -> str:
    """Graphviz text: one node per tensor (quantizers annotated), one edge per producer -> consumer."""
    lines = [f"digraph {_dot_str(graph.name)} {{", "  rankdir=TB;",
             '  node [shape=box, fontname="Helvetica", fontsize=10];']
    nodes = graph.topo_order()
    for node in nodes:
        style = _DOT_STYLE.get(node.op.value)
        lines.append(f"  {_dot_str(node.name)} [label={_dot_str(_dot_label(node))}{', ' + style if style else ''}];")
    for node in nodes:
        operands: dict[str, list[int]] = {}
        for index, source in enumerate(node.inputs):
            operands.setdefault(source, []).append(index)
        # operand order matters where several activations meet (Concat, Sub): label those edges
        joins = sum(not graph.is_constant(source) for source in operands) > 1
        for source, indices in operands.items():
            label = f" [label={_dot_str(','.join(map(str, indices)))}]" if joins else ""
            lines.append(f"  {_dot_str(source)} -> {_dot_str(node.name)}{label};")
    return "\n".join(lines + ["}"]) + "\n"
