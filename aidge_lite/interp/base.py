"""The one graph walk every interpreter shares.

Interpreters differ only in their op table (`impls`) and in how they prepare
feeds; the loop below is written once. Subclasses register implementations with
`@MyInterpreter.register(OpType.X)`; each impl is `fn(interp, node, *operands)`.
Analysis passes (calibration, shape recording) subclass an interpreter and
override `run_node`, the torch.fx `Interpreter` / `ShapeProp` pattern.
"""
from __future__ import annotations

import weakref
from typing import Callable, Mapping

import numpy as np

from ..errors import AidgeLiteError, ExecutionError, InputError, UnsupportedOperatorError
from ..ir import Graph, Node, OpType
from ..ir.validate import check_operands, validate

Impl = Callable[..., np.ndarray]


class Interpreter:
    impls: dict[OpType, Impl] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.impls = dict(cls.impls)  # a subclass extends a copy of its parent's table

    @classmethod
    def register(cls, *ops: OpType) -> Callable[[Impl], Impl]:
        def decorate(fn: Impl) -> Impl:
            for op in ops:
                cls.impls[op] = fn
            return fn

        return decorate

    # ------------------------------------------------------------------ walk
    def run(self, graph: Graph, feeds, *, intermediates: bool = False) -> dict[str, np.ndarray]:
        """Run `graph` on `feeds` (an array for a one-input graph, or a dict).

        Returns the graph outputs by name, or every tensor when `intermediates`.
        """
        plan = walk_plan(self, graph)  # validated, ordered: built once per graph state
        self.memo = plan.memo
        bound = bind_inputs(graph, feeds)
        self.begin(graph)
        order = plan.order
        last_use = None if intermediates else plan.last_use
        env: dict[str, np.ndarray] = {}
        for step, node in enumerate(order):
            if node.op is OpType.INPUT:
                env[node.name] = self.prepare_input(node, bound[node.name])
            else:
                env[node.name] = self.run_node(node, [env[i] for i in node.inputs])
            if last_use is not None:
                for name in last_use.get(step, ()):
                    del env[name]
        if intermediates:
            return env
        return {name: env[name] for name in graph.outputs}

    def begin(self, graph: Graph) -> None:
        """Hook called once per run before the walk (e.g. to pick a dtype)."""
        self.graph = graph

    def check_supported(self, graph: Graph) -> None:
        """An integer graph runs only if the integer engine implements every op: the
        fake-quant engine refuses the same graphs, so both engines agree."""
        if not graph.meta.get("integer"):
            return
        from .integer import IntegerInterpreter

        for node in graph.topo_order():
            if node.op is not OpType.INPUT and node.op not in IntegerInterpreter.impls \
                    and not node.attrs.get("excluded"):  # a float island runs the float impl
                raise UnsupportedOperatorError(node.name, node.op.value,
                                               "no integer implementation (integer graph)")

    def prepare_input(self, node: Node, value: np.ndarray) -> np.ndarray:
        return value

    def run_node(self, node: Node, operands: list[np.ndarray]) -> np.ndarray:
        impl = self.impls.get(node.op)
        if impl is None:
            raise UnsupportedOperatorError(
                node.name, node.op.value, f"no {type(self).__name__} implementation"
            )
        check_operands(self.graph, node, operands)
        try:
            return impl(self, node, *operands)
        except AidgeLiteError:
            raise
        except Exception as exc:  # name the node, keep the original as cause
            raise ExecutionError(f"node '{node.name}' ({node.op.value}): {exc}") from exc


class WalkPlan:
    """What one run needs that depends only on the graph: the validated topological order,
    when each tensor dies, and `memo`, a dict where op impls keep per-node derived
    parameters (window geometry, quantizer parameters) until the graph changes."""

    def __init__(self, key, order, outputs):
        self.key, self.order = key, order  # key[1]: the objects compared by identity, kept alive
        self.last_use = _last_use(order, outputs)
        self.checked: set[type] = set()
        self.memo: dict = {}


_PLANS: "weakref.WeakKeyDictionary[Graph, WalkPlan]" = weakref.WeakKeyDictionary()
_SCALARS = (str, int, float, bool, type(None), OpType)
_SCALAR_TYPES = frozenset({str, int, float, bool, type(None), OpType})


def _token(value, alive: list):
    """Compares equal while an attribute is unchanged: scalars and short sequences by
    value, small arrays by content, anything else (weights, dicts) by identity (a large
    array changed in place keeps it: replace it, e.g. `Graph.set_constant`); those go to
    `alive`, so that no new object can take their id while a plan holds them."""
    kind = type(value)
    if kind is np.ndarray:
        if value.size <= 256:  # scales, bounds: by value too
            return value.dtype.str, value.shape, value.tobytes()
    elif kind in _SCALAR_TYPES or isinstance(value, _SCALARS):
        return value
    elif kind in (list, tuple) and len(value) <= 8 and all(type(v) in _SCALAR_TYPES for v in value):
        return tuple(value)
    elif kind is dict and all(type(v) in _SCALAR_TYPES for v in value.values()):
        return tuple(value.items())  # a stored target
    alive.append(value)
    return id(value)


def graph_key(graph: Graph) -> tuple:
    """Names, node objects, operands, attributes and meta of `graph` (see `_token`):
    equal keys mean the same validated plan serves. Returns (key, objects to keep alive)."""
    alive: list = []
    parts = [graph.name, tuple(graph.inputs), tuple(graph.outputs)]
    parts += [(k, _token(v, alive)) for k, v in graph.meta.items()]
    scalar = _SCALAR_TYPES
    for name, node in graph._g.nodes(data="node"):
        alive.append(node)
        attrs = node.attrs
        values = tuple(attrs.values())
        if not scalar.issuperset(map(type, values)):
            values = tuple(v if type(v) in scalar else _token(v, alive) for v in values)
        parts.append((name, id(node), node.op, tuple(node.inputs), tuple(attrs), values))
    return tuple(parts), alive


def walk_plan(interp: "Interpreter", graph: Graph) -> WalkPlan:
    """`graph`'s plan, validated for `interp`'s type; rebuilt when `graph_key` changes.

    A one-sample call (a test harness feeding a golden reference) then pays for
    validation and ordering once, not per call. The plan keeps the node objects
    alive, so the ids in its key cannot be reused while it is cached.
    """
    key, alive = graph_key(graph)
    plan = _PLANS.get(graph)
    if plan is None or plan.key[0] != key:
        validate(graph)  # both engines: the same checks, before any kernel runs
        plan = WalkPlan((key, alive), graph.topo_order(), graph.outputs)
        _PLANS[graph] = plan
    if type(interp) not in plan.checked:
        interp.check_supported(graph)
        plan.checked.add(type(interp))
    return plan


def _last_use(order: list[Node], outputs: list[str]) -> dict[int, list[str]]:
    """Step after which each tensor can be freed (never for graph outputs)."""
    last: dict[str, int] = {}
    for step, node in enumerate(order):
        last.setdefault(node.name, step)
        for src in node.inputs:
            last[src] = step
    freed: dict[int, list[str]] = {}
    for name, step in last.items():
        if name not in outputs:
            freed.setdefault(step, []).append(name)
    return freed


def bind_inputs(graph: Graph, feeds) -> dict[str, np.ndarray]:
    """Match `feeds` to the graph inputs and check rank, shape and dtype.

    The first dimension is the batch and is free; every other dimension that
    the graph declares must match.
    """
    if not isinstance(feeds, Mapping):
        if len(graph.inputs) != 1:
            raise InputError(f"graph has inputs {graph.inputs}: pass a dict, not one array")
        feeds = {graph.inputs[0]: feeds}
    unknown = sorted(set(feeds) - set(graph.inputs))
    if unknown:
        raise InputError(f"unknown input(s) {unknown}; graph inputs are {graph.inputs}")
    bound = {}
    for name in graph.inputs:
        if name not in feeds:
            raise InputError(f"missing graph input '{name}'")
        bound[name] = check_input(graph.node(name), feeds[name])
        if graph.meta.get("quantized"):
            _check_finite(graph.node(name), bound[name])
    return bound


def _check_finite(node: Node, array: np.ndarray) -> None:
    """A quantized graph has no code for NaN or infinity: refuse them (else one engine
    casts NaN to some integer and the other trips on it later)."""
    if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"input '{node.name}': {bad} NaN or infinite value(s); a quantized "
                         "graph takes finite numbers only")


def check_input(node: Node, value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise InputError(f"input '{node.name}': dtype {array.dtype} is not numeric (int or float)")
    _check_integer_input(node, array)
    declared = node.attrs["shape"]
    if array.ndim != len(declared):
        raise InputError(
            f"input '{node.name}': rank {array.ndim} (shape {array.shape}), "
            f"expected rank {len(declared)} {tuple(declared)}"
        )
    for axis, (got, want) in enumerate(zip(array.shape, declared)):
        if axis > 0 and isinstance(want, int) and want > 0 and got != want:
            raise InputError(
                f"input '{node.name}': shape {array.shape} does not match {tuple(declared)} "
                f"at axis {axis}"
            )
    return array


def _check_integer_input(node: Node, array: np.ndarray) -> None:
    """An input declared int8/uint8/int16 (an integer model) takes integers in its range."""
    declared = np.dtype(node.attrs.get("dtype", "float32"))
    if declared.kind not in "iu":
        return
    if array.dtype.kind == "f":
        if array.size and not np.array_equal(array, np.round(array)):
            raise InputError(f"input '{node.name}': {array.dtype} values that are not integers, "
                             f"expected {declared} codes")
    info = np.iinfo(declared)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise InputError(f"input '{node.name}': values in [{array.min()}, {array.max()}] "
                         f"do not fit {declared} [{info.min}, {info.max}]")
