"""Constant folding of exported ONNX models, with the batch dimension kept free.

Exporters write shape arithmetic into the graph: `x.view(x.size(0), -1)` becomes
Shape -> Gather -> Unsqueeze -> Concat -> Reshape, `ZeroPad2d` a ConstantOfShape /
Concat / Reshape / Slice / Transpose / Cast chain feeding Pad. `fold_constants`
evaluates every node whose operands are all known (initializers, Constant nodes,
the Shape/Size of a tensor whose shape is static once the batch size is fixed)
with onnx's reference evaluator, one node at a time, and replaces the folded
sub-graphs by initializers.

A dynamic batch stays dynamic: the model is folded at two batch sizes and the
results compared. A folded value that does not change is a constant; one that
changes is legal only as a Reshape's target shape, where the entry that follows
the batch becomes 0 ("copy dim 0" when the data's dim 0 is the batch) or -1 (the
one inferred entry), or as Resize sizes (dim 0 following the batch becomes 0, "keep").
An Expand to a batch-dependent shape that only feeds broadcasting ops is dropped. Any
other batch-dependent constant is an error naming its reader. Everything runs on the
ModelProto before import.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import UnsupportedOperatorError

# Two batch sizes to fold a dynamic batch at (any two distinct sizes > 1 would do).
BATCHES = (2, 3)
# Ops never folded: random draws, control flow (sub-graphs), sequences.
_NEVER_FOLD = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli", "If", "Loop", "Scan", "SequenceConstruct", "SequenceEmpty", "SequenceInsert",
})
# Initializers larger than this are given to ONNX shape inference as typed inputs
# (it needs their shape, not their data): no copy of the weights per iteration.
_SMALL = 64


def fold_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of `proto` with every constant sub-graph replaced by an initializer."""
    if not any(n.op_type in ("Constant", "Shape", "Size") for n in proto.graph.node) and not _any_const_node(proto):
        return proto
    batches = BATCHES if _batch_is_dynamic(proto.graph) else (None,)
    runs = [_Folder(proto, b).run() for b in batches]
    folded = set.intersection(*(r.folded for r in runs))
    graph = proto.graph
    nodes = _drop_broadcast_expands(graph, folded, runs)
    readers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    produced = [o for i in sorted(folded) for o in graph.node[i].output if o]
    outputs = {o.name for o in graph.output}
    new_inits = []
    for name in produced:
        if name not in readers and name not in outputs:
            continue
        values = [r.values[name] for r in runs]
        if all(_same(values[0], v) for v in values[1:]):
            new_inits.append(numpy_helper.from_array(values[0], name))
        else:
            new_inits.append(_batch_free(name, readers.get(name, []), runs, outputs))
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {name for n in out.graph.node for name in n.input} | outputs
    kept = [t for t in graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept + new_inits)
    # IR < 4 lists initializers among the graph inputs: drop those folded away
    dropped = {t.name for t in graph.initializer} - {t.name for t in kept}
    inputs = [v for v in graph.input if v.name not in dropped]
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    return out


_BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"})


def _drop_broadcast_expands(graph, folded, runs) -> list:
    """The graph's unfolded nodes, without the Expands that only feed broadcasting ops.

    `x * y.expand_as(x)` (classic squeeze-and-excitation code) expands to a shape
    taken from the batch; the Mul broadcasts by itself. An Expand is dropped when
    every reader is a broadcasting op whose output shape, with the Expand's input
    read directly, is unchanged at every folded batch size.
    """
    kept = [n for i, n in enumerate(graph.node) if i not in folded]
    readers: dict[str, list] = {}
    for node in kept:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    rename, drop = {}, set()
    for node in kept:
        if node.op_type != "Expand" or node.output[0] in outputs or not all(node.input[1] in r.values for r in runs):
            continue
        users = readers.get(node.output[0], [])
        if users and all(u.op_type in _BROADCASTING and _same_broadcast(u, node, r) for u in users for r in runs):
            rename[node.output[0]] = node.input[0]
            drop.add(id(node))
    result = []
    for node in kept:
        if id(node) in drop:
            continue
        if any(x in rename for x in node.input):
            node = _copy_node(node)
            for k, x in enumerate(node.input):
                node.input[k] = rename.get(x, x)
        result.append(node)
    return result


def _same_broadcast(user, expand, run) -> bool:
    shapes = [run.shapes.get(expand.input[0] if x == expand.output[0] else x) for x in user.input]
    out = run.shapes.get(user.output[0])
    if out is None or any(s is None for s in shapes):
        return False
    try:
        return tuple(np.broadcast_shapes(*shapes)) == tuple(out)
    except ValueError:
        return False


def _copy_node(node):
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _any_const_node(proto) -> bool:
    inits = {t.name for t in proto.graph.initializer}
    return any(n.input and all(i in inits or not i for i in n.input) for n in proto.graph.node)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def _graph_inputs(graph):
    inits = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in inits]


def _batch_is_dynamic(graph) -> bool:
    for v in _graph_inputs(graph):
        dims = v.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            return True
    return False


def _batch_free(name, readers, runs, outputs) -> onnx.TensorProto:
    """The initializer standing for batch-dependent constant `name` (Reshape target, Resize sizes)."""
    if name in outputs or not readers or any((r.op_type, list(r.input).index(name)) not in _SHAPE_OPERANDS
                                             for r in readers):
        reader = readers[0] if readers else None
        label = (reader.output[0] if reader is not None else name)
        op = reader.op_type if reader is not None else "graph output"
        raise UnsupportedOperatorError(
            label, op, f"operand '{name}' depends on the batch size (folded at batch sizes "
            f"{BATCHES}); only a Reshape target shape or Resize sizes may: export with a fixed batch")
    targets = {tuple(_reshape_target(name, r, runs)) for r in readers}
    if len(targets) != 1:
        raise UnsupportedOperatorError(readers[0].output[0], "Reshape",
                                       f"shape '{name}' follows the batch differently per reader")
    return numpy_helper.from_array(np.array(targets.pop(), dtype=np.int64), name)


# (reader, operand) pairs whose batch-following entries have a batch-free spelling
_SHAPE_OPERANDS = {("Reshape", 1), ("Resize", 3)}


def _reshape_target(name, reshape, runs) -> list[int]:
    """The Reshape target (or Resize sizes: 0 keeps the batch there too) free of the batch."""
    label, op = reshape.output[0], reshape.op_type
    values = [r.values[name] for r in runs]
    if any(v.shape != values[0].shape or v.ndim != 1 for v in values):
        raise UnsupportedOperatorError(label, op, f"shape operand '{name}' changes rank with the batch")
    allowzero = any(a.name == "allowzero" and a.i for a in reshape.attribute) and op == "Reshape"
    data_dims = [r.shapes.get(reshape.input[0]) for r in runs]
    target, free = [int(d) for d in values[0]], []
    for i in range(len(target)):
        if all(int(v[i]) == int(values[0][i]) for v in values):
            continue
        follows_batch = all(int(v[i]) == r.batch for v, r in zip(values, runs))
        if (i == 0 and follows_batch and not allowzero
                and all(d is not None and d and d[0] == r.batch for d, r in zip(data_dims, runs))):
            target[i] = 0  # copy the data's dim 0: the batch
        else:
            free.append(i)
    if len(free) > 1 or (free and -1 in target) or (free and op != "Reshape"):
        raise UnsupportedOperatorError(
            label, op, f"target shape '{name}' has {len(free) + (-1 in target)} entries "
            "that depend on the batch size; at most one can be inferred (-1)")
    for i in free:
        target[i] = -1
    return target


class _Folder:
    """Folds `proto` with the batch dimension of every graph input set to `batch` (None: as declared)."""

    def __init__(self, proto: onnx.ModelProto, batch):
        self.proto, self.graph, self.batch = proto, proto.graph, batch
        self.opset = next((e.version for e in proto.opset_import if e.domain in ("", "ai.onnx")), 13)
        self.inits = {t.name: t for t in self.graph.initializer}
        self.values: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple | None] = {}
        self.folded: set[int] = set()
        self.failed: set[int] = set()  # nodes the evaluator refused: never retried

    def run(self) -> "_Folder":
        if self.batch is None:
            self.batch = self._declared_batch()
        for _ in range(16):  # each round may unlock shapes for the next one
            self.shapes = self._infer_shapes()
            if not self._fold_pass():
                break
        return self

    def _declared_batch(self):
        for v in _graph_inputs(self.graph):
            dims = v.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value"):
                return dims[0].dim_value
        return None

    def value(self, name: str):
        if name not in self.values and name in self.inits:
            self.values[name] = numpy_helper.to_array(self.inits[name])
        return self.values.get(name)

    def known(self, name: str) -> bool:
        return not name or name in self.values or name in self.inits

    def _fold_pass(self) -> bool:
        progress = False
        for i, node in enumerate(self.graph.node):
            if i in self.folded or i in self.failed or node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type in ("Shape", "Size"):
                shape = self.shapes.get(node.input[0])
                if shape is None:
                    continue
                self.values[node.output[0]] = _shape_value(node, shape)
            elif node.op_type in _NEVER_FOLD or not all(self.known(x) for x in node.input):
                continue
            elif self._too_big(node) or not self._evaluate(node):
                self.failed.add(i)
                continue
            self.folded.add(i)
            progress = True
        return progress

    def _too_big(self, node) -> bool:
        """Whether a folded output would exceed the per-tensor budget of `onnx_checks` (float32)."""
        from .onnx_checks import MAX_TENSOR_BYTES

        limit = MAX_TENSOR_BYTES // 4
        sizes = [math.prod(s) for s in (self.shapes.get(o) for o in node.output if o) if s is not None]
        try:
            if node.op_type == "ConstantOfShape":
                sizes.append(math.prod(int(d) for d in self.value(node.input[0]).reshape(-1)))
            elif node.op_type == "Expand":
                shape = [int(d) for d in self.value(node.input[1]).reshape(-1)]
                sizes.append(math.prod(np.broadcast_shapes(self.value(node.input[0]).shape, tuple(shape))))
            elif node.op_type == "Range":
                start, limit_, delta = (float(self.value(x)) for x in node.input[:3])
                sizes.append(max(math.ceil((limit_ - start) / delta), 0) if delta else 0)
            elif node.op_type == "Tile":
                data, reps = self.value(node.input[0]), self.value(node.input[1]).reshape(-1)
                sizes.append(data.size * math.prod(int(r) for r in reps))
        except (ValueError, TypeError, OverflowError, IndexError, AttributeError):
            return True  # malformed operands: left to the importer, which names the node
        return any(size > limit for size in sizes)

    def _evaluate(self, node) -> bool:
        from onnx.reference import ReferenceEvaluator

        feeds = {x: self.value(x) for x in node.input if x}
        try:
            results = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)
        except Exception:  # left to the importer, which names the node if it cannot import it
            return False
        for name, value in zip(node.output, results):
            if name:
                self.values[name] = np.asarray(value)
        return True

    def _infer_shapes(self) -> dict[str, tuple | None]:
        """Static shapes of every tensor ONNX shape inference can resolve at this batch size."""
        folded_out = {o for i in self.folded for o in self.graph.node[i].output}
        nodes = [n for i, n in enumerate(self.graph.node) if i not in self.folded]
        known = {name: self.values[name] for name in folded_out}
        dims = infer_dims(self.proto, nodes, known, self.batch)
        shapes = {k: (None if v is None or None in v else v) for k, v in dims.items()}
        for name in folded_out:
            shapes[name] = self.values[name].shape
        return shapes


def infer_dims(proto, nodes=None, values=None, batch=None) -> dict[str, tuple | None]:
    """Shape of every tensor of `proto` (None for an unknown dim) by ONNX shape inference.

    `nodes` replaces the graph's nodes and `values` gives extra constant tensors;
    `batch` fixes dim 0 of the graph inputs. Large initializers are passed as typed
    inputs (inference needs their shape, not their data): no copy of the weights.
    """
    graph = proto.graph
    nodes = graph.node if nodes is None else nodes
    values = values or {}
    inits = {t.name: t for t in graph.initializer}
    model = onnx.ModelProto()
    model.ir_version, model.producer_name = max(proto.ir_version, 4), "aidge_lite.fold"
    model.opset_import.extend(proto.opset_import)
    g = model.graph
    g.name = graph.name
    g.node.extend(nodes)
    for v in _graph_inputs(graph):
        fixed = onnx.ValueInfoProto()
        fixed.CopyFrom(v)
        dims = fixed.type.tensor_type.shape.dim
        if dims and batch is not None:
            dims[0].Clear()
            dims[0].dim_value = batch
        g.input.append(fixed)
    needed = {x for n in nodes for x in n.input if x} - {v.name for v in g.input}
    for name in sorted(needed & (set(values) | set(inits))):
        if name in values:
            value = values[name]
            dtype, shape = helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)
        else:
            t = inits[name]
            value = numpy_helper.to_array(t) if _size(t) <= _SMALL else None
            dtype, shape = t.data_type, list(t.dims)
        if value is not None and value.size <= _SMALL:
            g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        else:
            g.input.append(helper.make_tensor_value_info(name, dtype, shape))
    g.output.extend(graph.output)
    # No data propagation: it materialises constant values in C++ (a Range of 10**12 elements
    # exhausts memory); the fold rounds propagate values instead, one evaluated node at a time.
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:
        inferred = g
    shapes = {}
    for v in (*inferred.input, *inferred.value_info, *inferred.output):
        ttype = v.type.tensor_type
        if ttype.HasField("shape"):
            shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim)
    return shapes


def _size(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims, dtype=np.int64))


def _shape_value(node, shape) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    rank = len(shape)
    start, end = attrs.get("start", 0), attrs.get("end", rank)
    start, end = (min(max(s + rank if s < 0 else s, 0), rank) for s in (start, end))
    return np.array(shape[start:end], dtype=np.int64)
