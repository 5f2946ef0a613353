"""The one graph walk every interpreter shares.

Interpreters differ only in their op table (`impls`) and in how they prepare
feeds; the loop below is written once. Subclasses register implementations with
`@MyInterpreter.register(OpType.X)`; each impl is `fn(interp, node, *operands)`.
Analysis passes (calibration, shape recording) subclass an interpreter and
override `run_node`, the torch.fx `Interpreter` / `ShapeProp` pattern.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from ..errors import AidgeLiteError, ExecutionError, InputError, UnsupportedOperatorError
from ..ir import Graph, Node, OpType

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
        bound = bind_inputs(graph, feeds)
        self.begin(graph)
        order = graph.topo_order()
        last_use = None if intermediates else _last_use(order, graph.outputs)
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

    def prepare_input(self, node: Node, value: np.ndarray) -> np.ndarray:
        return value

    def run_node(self, node: Node, operands: list[np.ndarray]) -> np.ndarray:
        impl = self.impls.get(node.op)
        if impl is None:
            raise UnsupportedOperatorError(
                node.name, node.op.value, f"no {type(self).__name__} implementation"
            )
        try:
            return impl(self, node, *operands)
        except AidgeLiteError:
            raise
        except Exception as exc:  # name the node, keep the original as cause
            raise ExecutionError(f"node '{node.name}' ({node.op.value}): {exc}") from exc


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
    return bound


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
