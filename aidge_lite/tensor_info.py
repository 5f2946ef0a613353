"""Tensor shapes with their batch dimension, and dtypes, for `aidge-lite info`.

`tensor_shapes(graph)`: every tensor's shape with the batch dimension shown as
"N": the graph runs on zeros at batch 1 (``meta["shape"]``) and at batch 2,
and the dimensions that change are the batch. A graph that cannot run at batch
2 (a fixed-batch Reshape) keeps its batch-of-one shapes.

`tensor_dtypes(graph, onnx_path=None)`: every tensor's dtype: from ONNX shape
inference when the graph comes from an ONNX file (the types the file
declares); else, in an integer graph, what the integer engine holds: each
quantizer's output dtype, int64 accumulators for Conv/Gemm/Add (brought to the
target's ``acc_bits``), the input's dtype through pools and layout ops; in a
float graph, the reference engine's dtype on zeros.
"""
from __future__ import annotations

import numpy as np

from .ir import Graph, OpType
from .ir.node import META_SHAPE

__all__ = ["tensor_shapes", "tensor_dtypes", "shape_text"]

ACCUMULATING = (OpType.CONV, OpType.GEMM, OpType.ADD, OpType.SUB)


def _check_graph(graph, where: str) -> None:
    from .errors import InputError

    if not isinstance(graph, Graph):
        raise InputError(f"{where}: graph must be an aidge_lite Graph, got {type(graph).__name__}")


def _zeros(graph: Graph, batch: int) -> dict[str, np.ndarray]:
    feeds = {}
    for name in graph.inputs:
        node = graph.node(name)
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in node.attrs["shape"]]
        if dims:
            dims[0] = batch
        feeds[name] = np.zeros(dims, dtype=node.attrs.get("dtype", "float32"))
    return feeds


def tensor_shapes(graph: Graph) -> dict[str, tuple]:
    """{tensor: shape with "N" for the batch dimension} (constants: their own shape)."""
    _check_graph(graph, "tensor_shapes")
    from .interp.reference import ReferenceInterpreter
    from .interp.shapes import infer_shapes

    shaped = graph
    if any(META_SHAPE not in n.meta for n in graph.topo_order() if n.op is not OpType.CONSTANT):
        shaped = graph.copy()
        infer_shapes(shaped)
    one = {n.name: tuple(n.meta.get(META_SHAPE, ())) for n in shaped.topo_order()}
    try:
        with np.errstate(all="ignore"):
            two = ReferenceInterpreter().run(shaped, _zeros(shaped, 2), intermediates=True)
    except Exception:  # noqa: BLE001 - a graph that runs at batch one only: no batch to show
        return one
    shapes = {}
    for name, shape in one.items():
        other = np.shape(two.get(name, ()))
        if shaped.node(name).op is OpType.CONSTANT or len(other) != len(shape):
            shapes[name] = shape
        else:
            shapes[name] = tuple("N" if a != b else a for a, b in zip(shape, other))
    return shapes


def shape_text(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]" if shape is not None else "?"


def _onnx_dtypes(path) -> dict[str, str]:
    import onnx
    from onnx import helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    found = {}
    g = model.graph
    for info in (*g.input, *g.value_info, *g.output):
        elem = info.type.tensor_type.elem_type
        if elem:
            found[info.name] = np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name
    for init in g.initializer:
        found[init.name] = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).name
    return found


def tensor_dtypes(graph: Graph, onnx_path=None) -> dict[str, str]:
    """{tensor: dtype name} (see the module docstring)."""
    _check_graph(graph, "tensor_dtypes")
    declared = {}
    if onnx_path is not None:
        try:
            declared = _onnx_dtypes(onnx_path)
        except Exception:  # noqa: BLE001 - informative only
            declared = {}
    dtypes: dict[str, str] = {}
    if graph.meta.get("integer"):
        bits = int((graph.meta.get("target") or {}).get("acc_bits", 32))
        for node in graph.topo_order():
            if node.op is OpType.CONSTANT:
                dtypes[node.name] = np.asarray(node.attrs["value"]).dtype.name
            elif node.op is OpType.INPUT or node.op is OpType.QUANTIZER:
                dtypes[node.name] = str(node.attrs.get("dtype", "?"))
            elif node.op in ACCUMULATING:
                dtypes[node.name] = f"int64 (int{bits} acc)"
            else:
                dtypes[node.name] = dtypes.get(node.inputs[0], "?") if node.inputs else "?"
        return dtypes
    try:
        from .interp.reference import ReferenceInterpreter

        with np.errstate(all="ignore"):
            values = ReferenceInterpreter().run(graph, _zeros(graph, 1), intermediates=True)
        dtypes = {name: np.asarray(v).dtype.name for name, v in values.items()}
    except Exception:  # noqa: BLE001 - informative only
        dtypes = {}
    for node in graph.topo_order():
        if node.op is OpType.CONSTANT:
            dtypes[node.name] = np.asarray(node.attrs["value"]).dtype.name
    return {**dtypes, **{k: v for k, v in declared.items() if k in graph}}
