"""Rescale fusion: which QUANTIZER nodes another kernel computes, so that the wide
intermediate tensors around them (int32 / int64 accumulators, TFLite ADD's int32
operands) never occupy the activation arena.

- Conv / Gemm -> QUANTIZER: the affine kernel rescales each fitted accumulator as
  it is produced (`aidge_sink_t`) and writes the quantizer's output;
- QUANTIZER(s) -> ADD / SUB -> QUANTIZER (TFLite's int8 ADD: both operands rescaled
  to a common int32 scale, summed, rescaled): one elementwise pass reads the int8
  operands and writes the int8 result (`aidge_binary_fused`).

A QUANTIZER is fused when it is a rescale (float, int, gemmlowp or double mode) of
an integer tensor, and it is the only user of its producer (output rescale; the
producer is no graph output) or its consumer is its only user (operand rescale; it
is no graph output). The values are the same: the
kernels apply the same `aidge_requant_value` to the same integers. The fused
tensors become virtual (no arena bytes); a debug build keeps each in a static
buffer of its own so that the per-layer dump still holds every graph tensor.
"""
from __future__ import annotations

from ..ir import OpType

op = OpType
RESCALE_MODES = ("float", "int", "gemmlowp", "double")


def _rescale_node(graph, name, shapes, dependent, operand=False) -> bool:
    """`name` is a QUANTIZER rescaling an integer tensor that depends on the input (the
    others are computed at export); an `operand` rescale (its tensor is not kept) is no
    graph output."""
    if graph.is_constant(name) or name not in dependent or (operand and name in graph.outputs):
        return False
    q = graph.node(name)
    if q.op is not op.QUANTIZER or len(q.inputs) != 1 or q.attrs.get("float32"):
        return False
    if q.attrs.get("mode", "float") not in RESCALE_MODES or graph.is_constant(q.inputs[0]):
        return False
    return shapes[q.inputs[0]][1].startswith(("int", "uint"))


def _only_consumer(graph, name, node) -> bool:
    users = graph.consumers(name)
    return len(users) == 1 and users[0].name == node.name and list(node.inputs).count(name) == 1


def fusion_plan(graph, shapes, dependent) -> dict[str, str]:
    """{QUANTIZER name: name of the node whose kernel computes it}; `dependent`: the
    nodes that depend on the graph input (`lower.input_dependent`)."""
    plan: dict[str, str] = {}
    nodes = [n for n in graph if n.name in dependent]
    for node in nodes:  # output rescales first: they keep the wider tensors out
        if node.op in (op.CONV, op.GEMM, op.ADD, op.SUB) and node.name not in graph.outputs:
            users = graph.consumers(node.name)
            if len(users) == 1 and _rescale_node(graph, users[0].name, shapes, dependent) \
                    and _only_consumer(graph, node.name, users[0]):
                plan[users[0].name] = node.name
    for node in nodes:
        if node.op in (op.ADD, op.SUB):
            for name in node.inputs:
                if _rescale_node(graph, name, shapes, dependent, operand=True) \
                        and _only_consumer(graph, name, node) and name not in plan:
                    plan[name] = node.name
    return plan


def output_rescale(prog, graph, node):
    """The QUANTIZER node `node` computes after itself, or None."""
    for user in graph.consumers(node.name):
        if prog.plan.get(user.name) == node.name:
            return user
    return None


def debug_buffer(prog, tensor) -> str:
    """Make `tensor` virtual: no arena bytes; a debug build holds it in a static buffer
    of its own for the dump. Its cname becomes (and this returns) the macro naming that
    buffer in a debug build and NULL otherwise."""
    from .lower import CTYPES, comment

    name = prog.fresh("D")
    tensor.cname, tensor.virtual = f"{name}_DUMP", True
    prog.constants.append(
        f"#ifdef AIDGE_DEBUG_DUMP\nstatic {CTYPES[tensor.dtype][0]} {name}[{max(tensor.size, 1)}];"
        f"  /* {comment(repr(tensor.name))} (fused: debug dump only) */\n"
        f"#define {name}_DUMP {name}\n#else\n#define {name}_DUMP NULL\n#endif")
    return f"{name}_DUMP"


def sink(prog, rq, split, dump_macro, dump_type) -> str:
    """An aidge_sink_t (a fused rescale and its debug buffer); returns `&name`."""
    _, channels, inner = split
    name = prog.struct("aidge_sink_t", {"rq": f"&{rq}", "channels": channels, "inner": inner,
                                        "dump": dump_macro, "dump_type": dump_type}, "K")
    return f"&{name}"
