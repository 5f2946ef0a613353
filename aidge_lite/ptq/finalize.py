"""finalize: give the quantized graph its float graph's output names and scales.

Passes insert nodes after outputs (a scaling node after the last Gemm) and
fuse others away (a bias Add), so the tensor the user asked for may now have
another name. This pass renames the node producing each output back to the
name the float graph used, and records `meta["output_scale"]`: for each
output, the factor F with quantized value = F * float value.

With the "gemmlowp" rescale it also refuses a quantizer whose left shift could
overflow TFLite's int32 arithmetic (`quantize.check_gemmlowp_headroom`): run last,
it sees the final weights, biases and multipliers.

Requires: `quantize`. Ensures: graph.outputs equals the float graph's outputs.
"""
from __future__ import annotations

from ..ir import Graph
from .config import PassReport, PTQConfig
from .float_islands import is_float
from .quantize import check_gemmlowp_headroom, output_scales


def finalize(graph: Graph, cfg: PTQConfig) -> PassReport:
    renamed = {}
    wanted = graph.meta.get("float_outputs", list(graph.outputs))
    for current, name in zip(list(graph.outputs), wanted):
        if current == name:
            continue
        if name in graph:  # the old producer still exists upstream: move it aside
            aside = graph.unique_name(f"{name}_pre")
            graph.rename(name, aside)
            graph.node(aside).meta["float_name"] = name  # its name in the float graph (reports)
        graph.rename(current, name)
        renamed[current] = name
    if graph.meta.get("integer") and cfg.target.rescale == "gemmlowp":
        check_gemmlowp_headroom(graph, cfg)
    graph.meta["output_scale"] = output_scales(graph)
    float_nodes = [n.name for n in graph.topo_order() if is_float(n)]
    if float_nodes:
        graph.meta["float_nodes"] = float_nodes  # the float islands (exclude / fallback), final names
    return PassReport("finalize", bool(renamed), {"renamed": renamed})
