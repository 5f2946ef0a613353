"""Node-major walk: each node evaluated once for the whole calibration set.

A pass that must see a layer's output over the *whole* set before the next
layer can be computed (bias correction changes layer k from its mean, then
measures layer k+1 on the corrected graph) would otherwise re-run every
ancestor of every layer: quadratic in depth. `NodeMajor` instead walks the
graph in topological order and keeps, for every batch of the calibration set,
the tensors still needed (the frontier): a layer is computed once, and again
only when the pass changes one of its constants (`recompute`).

The frontier lives in `FrontierStore`: integer-valued tensors (everything a
fake-quant graph computes) are kept in the narrowest integer dtype that holds
them (int8 activations: 1/8 of float64), and beyond `memory_budget` bytes
batches go to temporary ``.npy`` files, so memory stays bounded whatever the
number of samples. Values are the ones the reference interpreter computes on
the same batches: results are bit-identical to running it batch by batch.
An integer graph is computed by the integer engine (`IntegerInterpreter.run_node`,
no Conv -> Quantizer fusion, so accumulators stay visible): the same integers as
the fake-quant engine, several times faster.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from ..interp.reference import ReferenceInterpreter
from ..ir import Graph, OpType
from .calibration_data import MEMORY_BUDGET

_INT_DTYPES = tuple(np.dtype(t) for t in ("int8", "int16", "int32", "int64"))


def _compact(value: np.ndarray) -> tuple[np.ndarray, tuple | None]:
    """`value` in the narrowest integer dtype holding it exactly (else unchanged), and its
    (min, max) as ints when it holds integers (None otherwise)."""
    if value.size == 0 or value.dtype.kind not in "fiu":
        return value, None
    if value.dtype.kind in "iu":  # integers already: only narrow them
        lo, hi = int(value.min()), int(value.max())
        for dtype in _INT_DTYPES:
            if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
                return value.astype(dtype, copy=False), (lo, hi)
        return value, (lo, hi)
    lo, hi = float(value.min()), float(value.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return value, None
    for dtype in _INT_DTYPES:
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            # cast, then compare: a fraction truncates and differs (one pass fewer than rint)
            narrow = value.astype(dtype)
            return (narrow, (int(lo), int(hi))) if np.array_equal(narrow, value) else (value, None)
    return value, None


class FrontierStore:
    """Per-batch tensors by name: in memory up to `budget` bytes, then in temporary files.

    An integer tensor may carry a pending per-channel offset (`offset`): `get` adds it,
    so moving a layer's bias does not rewrite its stored batches."""

    def __init__(self, budget: int = MEMORY_BUDGET):
        self.budget = budget
        self.in_memory = 0
        self.tensors: dict[str, list] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.bounds: dict[str, list] = {}    # name -> per batch (min, max) as stored, or None
        self.offsets: dict[str, np.ndarray] = {}  # name -> int64 per channel, added by `get`
        self._dir = None

    def put(self, name: str, value: np.ndarray) -> None:
        """Append the next batch of `name` (kept compact, converted back by `get`)."""
        self.dtypes.setdefault(name, value.dtype)
        value, bounds = _compact(value)
        self.bounds.setdefault(name, []).append(bounds)
        if self.in_memory + value.nbytes <= self.budget:
            self.in_memory += value.nbytes
            value.flags.writeable = False  # `get` may hand out this very array: no op may write it
            self.tensors.setdefault(name, []).append(value)
            return
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="aidge_lite_frontier_")
        batches = self.tensors.setdefault(name, [])
        path = os.path.join(self._dir.name, f"{len(self.dtypes)}_{abs(hash(name))}_{len(batches)}.npy")
        np.save(path, value)
        batches.append(path)

    def get(self, name: str, index: int) -> np.ndarray:
        value, dtype = self.stored(name, index), self.dtypes[name]
        offset = self.offsets.get(name)
        if offset is None:
            return value.astype(dtype, copy=False)
        # widen and add in one pass (exact: integers, in int64 or below 2^53 in float64)
        return np.add(value, offset.reshape((1, -1) + (1,) * (value.ndim - 2)), dtype=dtype)

    def stored(self, name: str, index: int) -> np.ndarray:
        """Batch `index` of `name` as stored (compact integers when exact), without its offset."""
        item = self.tensors[name][index]
        return np.load(item) if isinstance(item, str) else item

    def shift(self, name: str, delta: np.ndarray, limit: int) -> bool:
        """Add the int64 per-channel `delta` to every batch of `name` (pending, applied by
        `get`); False (nothing changed) unless every batch is integer and provably stays
        within [-limit, limit) afterwards (its stored bounds plus delta's extremes)."""
        bounds = self.bounds.get(name, [])
        if any(b is None for b in bounds):
            return False
        offset = self.offsets.get(name, np.zeros(delta.shape, np.int64)) + delta.astype(np.int64)
        if bounds and (max(b[1] for b in bounds) + int(offset.max(initial=0)) >= limit
                       or min(b[0] for b in bounds) + int(offset.min(initial=0)) < -limit):
            return False
        self.offsets[name] = offset
        return True

    def count(self, name: str) -> int:
        return len(self.tensors.get(name, ()))

    def drop(self, name: str) -> None:
        for item in self.tensors.pop(name, ()):
            if isinstance(item, str):
                os.remove(item)
            else:
                self.in_memory -= item.nbytes
        self.dtypes.pop(name, None)
        self.bounds.pop(name, None)
        self.offsets.pop(name, None)

    def close(self) -> None:
        for name in list(self.tensors):
            self.drop(name)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


ENGINES = ("integer", "reference")


def _interpreter(graph: Graph, engine: str | None):
    """The engine computing the nodes: "integer" (Numba kernels) or "reference" (fake-quant,
    float64 holding integers); None: the integer one for an integer graph. Both give the same
    integers (the engines' contract, checked by the test suite), so the sums are the same;
    the integer engine is ~7x faster on a 224x224 network."""
    if engine is None:
        engine = "integer" if graph.meta.get("integer") else "reference"
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "integer":
        from ..interp.integer import IntegerInterpreter

        return IntegerInterpreter()
    return ReferenceInterpreter(np.float64)


class NodeMajor:
    """Evaluates `graph` node by node over every batch of `calibration` (a `CalibrationSet`).

    `advance_to(name)` computes every node up to `name` (topological order) and
    returns `name`'s batches' channel sums; after changing a constant of `name`
    (its bias), `recompute(name)` refreshes its output before later nodes read it.
    """

    def __init__(self, graph: Graph, calibration, budget: int | None = None, engine: str | None = None):
        self.graph, self.calibration = graph, calibration
        self.interp = _interpreter(graph, engine)
        self.interp.memo = {}
        self.interp.begin(graph)
        self.order = graph.topo_order()
        self.step = {node.name: i for i, node in enumerate(self.order)}
        self.last_read: dict[str, int] = {}
        for i, node in enumerate(self.order):
            for src in node.inputs:
                self.last_read[src] = i
        if budget is None:
            budget = getattr(calibration, "memory_budget", MEMORY_BUDGET)
        self.store = FrontierStore(budget)
        self.constants: dict[str, np.ndarray] = {}
        self.position = 0  # next node to compute
        self.stale: set[str] = set()

    def advance_to(self, name: str) -> tuple[np.ndarray, int]:
        """Compute up to `name`; returns (per-channel sum, count) of its output, axis 1."""
        target = self.step[name]
        for stale in sorted(self.stale, key=self.step.get):  # changed since computed
            self._compute(self.graph.node(stale))
        self.stale.clear()
        while self.position <= target:
            self._free_before(self.position)
            self._compute(self.order[self.position])
            self.position += 1
        return self.channel_sums(name)

    def recompute(self, name: str) -> None:
        """Recompute `name` (already passed) after one of its constants changed, before
        the next `advance_to` (not at all if none follows, as a batch-by-batch run would)."""
        node = self.graph.node(name)
        for src in node.inputs:
            if src in self.constants:
                self.constants[src] = self.interp.run_node(self.graph.node(src), [])
        self.stale.add(name)

    def shift_output(self, name: str, delta: np.ndarray, constant: str) -> None:
        """`name`'s bias constant `constant` moved by the integers `delta` (per channel): its
        stored accumulators move by them too, what recomputing would give while the
        accumulator policy leaves every value alone (exact integers); else recompute."""
        self.constants[constant] = self.interp.run_node(self.graph.node(constant), [])
        policy = getattr(self.interp, "policy", None)
        limit = 1 << (policy.bits - 1) if policy is not None and policy.bits < 64 else 1 << 53
        if policy is not None and name in policy.overflows:  # stored values were wrapped/saturated
            self.stale.add(name)
            return
        if not self.store.shift(name, np.asarray(delta, np.int64), limit):
            self.stale.add(name)  # not integers, or the policy would act: recompute through it

    def channel_sums(self, name: str) -> tuple[np.ndarray, int]:
        """Sum over batches of each batch's per-channel sum (the order a batch-by-batch run uses)."""
        total, count = 0.0, 0
        offset = self.store.offsets.get(name)
        for i in range(self.store.count(name)):
            view = self.store.stored(name, i)
            view = view.reshape(view.shape[0], view.shape[1], -1)
            if view.dtype.kind in "iu":  # exact in int64: what float64 gives below 2^53, no copy
                sums = view.sum(axis=(0, 2), dtype=np.int64)
                if offset is not None:
                    sums = sums + offset * (view.shape[0] * view.shape[2])
                total = total + sums.astype(np.float64)
            else:
                total = total + np.asarray(view, np.float64).sum(axis=(0, 2))
            count += view.shape[0] * view.shape[2]
        return total, count

    def close(self) -> None:
        self.store.close()

    # ----------------------------------------------------------------- internals
    def _free_before(self, step: int) -> None:
        for name in list(self.store.tensors):
            if self.last_read.get(name, -1) < step and self.step[name] < step:
                self.store.drop(name)

    def _compute(self, node) -> None:
        if node.op is OpType.INPUT:
            return  # streamed from the calibration set by its readers
        if node.op is OpType.CONSTANT:
            self.constants[node.name] = self.interp.run_node(node, [])
            return
        if all(n in self.constants for n in node.inputs):  # the same for every batch
            self.constants[node.name] = self.interp.run_node(node, [self.constants[n] for n in node.inputs])
            return
        self.store.drop(node.name)
        for operands in self._operand_batches(node):
            self.store.put(node.name, self.interp.run_node(node, operands))

    def _operand_batches(self, node):
        names = node.inputs
        inputs = [n for n in names if self.graph.node(n).op is OpType.INPUT]
        if inputs:  # read the calibration set again, as a batch-by-batch run does
            source = self.graph.node(inputs[0])
            for i, batch in enumerate(self.calibration.batches(self.graph)):
                x = self.interp.prepare_input(source, batch)
                yield [x if n == source.name else self._value(n, i) for n in names]
            return
        stored = [n for n in names if n not in self.constants]
        for i in range(self.store.count(stored[0])):
            yield [self._value(n, i) for n in names]

    def _value(self, name: str, index: int) -> np.ndarray:
        if name in self.constants:
            return self.constants[name]
        return self.store.get(name, index)
