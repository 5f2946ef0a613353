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
from ..ir.operand_checks import OPERAND_CHECKED, check_operands
from .walk_plan import _last_use, check_activation_budget, walk_plan  # noqa: F401  (_last_use: ptq.calibration_data)

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
        bound = bind_inputs(graph, feeds, plan)
        self.begin(graph)
        run_node, env = self.run_node, {}
        for node, name, is_input, inputs, dead in plan.steps:
            if is_input:
                env[name] = self._prepared(node, bound[name])
            else:
                env[name] = run_node(node, [env[i] for i in inputs])
            if dead and not intermediates:
                for gone in dead:
                    del env[gone]
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

    def _prepared(self, node: Node, value: np.ndarray) -> np.ndarray:
        try:  # the engine's copy of an input may not fit in memory: an error naming it
            return self.prepare_input(node, value)
        except AidgeLiteError:
            raise
        except Exception as exc:
            raise InputError(f"input '{node.name}': {exc}") from exc

    def run_node(self, node: Node, operands: list[np.ndarray]) -> np.ndarray:
        impl = self.impls.get(node.op)
        if impl is None:
            raise UnsupportedOperatorError(
                node.name, node.op.value, f"no {type(self).__name__} implementation"
            )
        try:  # the operand checks too: a scan may fail to allocate
            if node.op in OPERAND_CHECKED:
                check_operands(self.graph, node, operands, getattr(self, "memo", None))
            return impl(self, node, *operands)
        except AidgeLiteError:
            raise
        except Exception as exc:  # name the node, keep the original as cause
            raise ExecutionError(f"node '{node.name}' ({node.op.value}): {exc}") from exc


def bind_inputs(graph: Graph, feeds, plan=None) -> dict[str, np.ndarray]:
    """Match `feeds` to the graph inputs and check rank, shape and dtype (`check_input`),
    then, in a quantized graph, the values (finite floats, integer codes in range).

    The first dimension is the batch and is free; every other dimension that
    the graph declares must match. With the graph's `plan`, an array whose (shape,
    dtype) already passed skips the layout checks; the value checks run on every call.
    """
    if not isinstance(feeds, Mapping):
        if len(graph.inputs) != 1:
            raise InputError(f"graph has inputs {graph.inputs}: pass a dict, not one array")
        feeds = {graph.inputs[0]: feeds}
    else:
        unknown = sorted(set(feeds) - set(graph.inputs))
        if unknown:
            raise InputError(f"unknown input(s) {unknown}; graph inputs are {graph.inputs}")
    quantized = graph.meta.get("quantized")
    bound = {}
    for node in plan.input_nodes if plan is not None else map(graph.node, graph.inputs):
        name = node.name
        if name not in feeds:
            raise InputError(f"missing graph input '{name}'")
        array = feeds[name]
        if plan is not None and type(array) is np.ndarray and (name, array.shape, array.dtype) in plan.feeds:
            _check_integer_input(node, array)
        else:
            array = check_input(node, array)
            if plan is not None:
                check_activation_budget(plan, node, array)
                plan.feeds.add((name, array.shape, array.dtype))
        if quantized:
            _check_finite(node, array)
        bound[name] = array
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
    if declared.kind not in "iu" or array.dtype == declared:
        return  # (codes of the declared dtype are in range whatever their values)
    if array.dtype.kind == "f":
        if array.size and not np.array_equal(array, np.round(array)):
            raise InputError(f"input '{node.name}': {array.dtype} values that are not integers, "
                             f"expected {declared} codes")
    info = np.iinfo(declared)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise InputError(f"input '{node.name}': values in [{array.min()}, {array.max()}] "
                         f"do not fit {declared} [{info.min}, {info.max}]")
