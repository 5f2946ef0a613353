"""Compiled steps: the integer engine's repeated calls without the per-node dispatch.

A test harness calls a golden reference one sample at a time. On mnist-8 the walk's
per-node work (impl lookup, zero-point wrappers, operand checks, memo lookups, the
accumulator policy) cost about as much as the kernels. So the plain
`IntegerInterpreter`, asked for outputs only, compiles its walk: per walk plan (one
graph state, `walk_plan.GraphStamp`) and per input signature (shapes, dtypes, target
override), the first call runs the normal walk once, recording each node's operand
shapes and dtypes; then `Steps` turns the plan into a list of pre-bound
callables on numbered slots, reading what that walk left in the plan's memo (prepared
fused convs, quantizer calls, pool geometry, prepared Gemm, operand verdicts). Later
calls with that signature only run the list.

What stays per call: the stamp comparison and the input checks (`bind_inputs`: values
finite, integer codes in range), the accumulator range of every conv and Gemm. A node
the compiler does not specialise runs through `run_node`, as in the walk. When a
fused conv's accumulators fall outside the target's width, its nodes run through
`run_node` too (the policy counts, warns or raises exactly as in the walk).

Exact rewrites made here: a `Relu` that alone reads a quantizer's output (the
quantizer not a graph output, its clamp reaching 0) becomes the quantizer's lower
bound: ``max(clip(r, lo, hi), 0) == clip(r, max(lo, 0), hi)`` for ``hi >= 0``; a float
input read only by quantizers is converted to float64 once, by them.

Threads: when every conv and Gemm of the list is below `kernels.threads.WORK_PER_THREAD`
and no node is left to `run_node`, the call sets Numba to one thread once
(`kernels.threads.call_serial`) instead of around each kernel.

Subclasses (calibration's observers, shape recording, `report`'s accumulator
observer) and ``intermediates=True`` never come here: they walk node by node.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..errors import AidgeLiteError
from ..ir import OpType
from ..ir import operand_checks
from ..kernels import threads
from . import integer
from .base import Interpreter, _check_finite, _check_integer_input, bind_inputs
from .fast_builders import BUILDERS, SPECIALISED, quantizer_call
from .quant_common import AccumulatorPolicy, graph_target
from .walk_plan import walk_plan

op = OpType


#: The engine's methods and specialised impls as `interp/zero_point.py` (the last module to
#: extend its table) leaves them: the compiled steps stand for these only, so a replaced
#: one (a test's monkeypatch, a plug-in) sends every call to the walk.
KNOWN: list | None = None


def _table() -> list:
    engine = integer.IntegerInterpreter
    return [Interpreter.run_node, engine.run_node, engine.begin, engine.prepare_input,
            *map(engine.impls.get, SPECIALISED)]


def run_steps(interp, graph, feeds):
    """`IntegerInterpreter.run(graph, feeds)` (outputs only) through compiled steps."""
    if _table() != KNOWN:
        return Interpreter.run(interp, graph, feeds)
    plan = walk_plan(interp, graph)
    interp.memo = memo = plan.memo
    steps = None
    if type(feeds) is np.ndarray and len(plan.input_nodes) == 1:
        # one array (a harness' call): a list for its (shape, dtype) exists only once that
        # layout passed `bind_inputs`; its values are checked here as `bind_inputs` does
        key = ("steps", interp.target, (feeds.shape, feeds.dtype))
        steps = memo.get(key)
        if steps is not None:
            node = plan.input_nodes[0]
            if steps.integer_input:  # (a float input: nothing to check there)
                _check_integer_input(node, feeds)
            if graph.meta.get("quantized"):
                _check_finite(node, feeds)
            bound = [feeds]
    if steps is None:
        bound = list(bind_inputs(graph, feeds, plan).values())  # (in plan.input_nodes' order)
        key = ("steps", interp.target, *[(a.shape, a.dtype) for a in bound])
        steps = memo.get(key)
    if steps is not None:
        try:
            return steps.run(interp, graph, bound)
        except AidgeLiteError:
            raise
        except Exception:  # (e.g. no memory) the walk names the node that failed
            pass
        return Interpreter.run(interp, graph, feeds)
    records = {}
    outputs = _recorded_walk(interp, graph, feeds, records)
    memo[key] = Steps(graph, plan, records, graph_target(graph, interp.target))
    return outputs


def _recorded_walk(interp, graph, feeds, records):
    """The normal walk (`Interpreter.run`), recording each node's operand (shape, dtype)
    and whether its value was consumed by a fused quantizer."""
    run_node = integer.IntegerInterpreter.run_node

    def recording(node, operands):
        value = run_node(interp, node, operands)
        layouts = [(a.shape, a.dtype) for a in operands if isinstance(a, np.ndarray)]
        if len(layouts) == len(operands):  # (else no record: the node runs through run_node)
            records[node.name] = (layouts, value is integer._FUSED, getattr(value, "shape", None))
        return value

    interp.run_node = recording  # the walk reads self.run_node once per run
    try:
        return Interpreter.run(interp, graph, feeds)
    finally:
        del interp.run_node


class Steps:
    """A compiled walk: ``template`` (slots, constants filled in), ``steps`` as
    (callable, slots freed after it), the graph outputs' slots."""

    def __init__(self, graph, plan, records, target):
        self.target = target  # the traced walk's (`begin`): the key holds the override
        self.limit = None if target.acc_bits >= 64 else 1 << (target.acc_bits - 1)
        slot = {node.name: i for i, node in enumerate(plan.order)}
        self.template = [None] * len(slot)
        self.input_slots = [slot[node.name] for node in plan.input_nodes]
        self.integer_input = any(np.dtype(node.attrs.get("dtype", "float32")).kind in "iu"
                                 for node in plan.input_nodes)  # (attributes: in the stamp)
        self.outputs = [(name, slot[name]) for name in graph.outputs]
        compiler = _Compiler(graph, plan, records, slot, self)
        self.steps = []
        for node, name, is_input, inputs, dead in plan.steps:
            step = compiler.step(node, is_input, inputs)
            free = tuple(slot[n] for n in dead)
            if step is not None:
                self.steps.append((step, free))
            elif free and self.steps:  # a node another step computed: free after the last one
                self.steps[-1] = (self.steps[-1][0], self.steps[-1][1] + free)
        self.specialised = compiler.specialised  # node name -> what its step does (tests read it)
        # every kernel call of the list too small for a second thread (`kernels.threads`):
        # the thread count is set once per call, not around each kernel
        self.serial = not compiler.generic and compiler.work < threads.WORK_PER_THREAD

    def run(self, interp, graph, bound):
        interp.graph, interp.fused = graph, {}
        interp.policy = AccumulatorPolicy(self.target, kernels.fit_accumulator)
        env = self.template.copy()
        for i, value in zip(self.input_slots, bound):
            env[i] = value
        if self.serial:
            threads.call_serial(self._walk, interp, env)
        else:
            self._walk(interp, env)
        return {name: env[i] for name, i in self.outputs}

    def _walk(self, interp, env):
        for step, free in self.steps:
            step(interp, env)
            for i in free:
                env[i] = None


class _Compiler:
    def __init__(self, graph, plan, records, slot, steps):
        self.graph, self.memo, self.records, self.slot = graph, plan.memo, records, slot
        self.limit = steps.limit
        self.template = steps.template
        self.done: set[str] = set()  # nodes a previous step computes (a fused chain's)
        self.specialised: dict[str, str] = {}
        self.generic = 0  # steps left to run_node
        self.work = 0  # the largest multiply-add count of a compiled conv or Gemm

    # ------------------------------------------------------------ dispatch
    def step(self, node, is_input, inputs):
        name = node.name
        if name in self.done:
            return None
        out = self.slot[name]
        if is_input:
            return None if self.read_raw(node) else _input_step(node, out)
        if node.op is op.CONSTANT and not node.attrs.get("excluded"):
            self.template[out] = node.attrs["value"]  # the plan holds this very object
            return None
        record = self.records.get(name)
        build = BUILDERS.get(node.op)
        if record is not None and build is not None and not node.attrs.get("excluded"):
            step = build(self, node, record)
            if step is not None:
                return step
        self.generic += 1
        return _generic_step(node, [self.slot[i] for i in inputs], out)

    # ------------------------------------------------------------ helpers
    def proved(self, node, record) -> bool:
        """The operand checks' verdict for these shapes/dtypes needs no values."""
        if node.op not in operand_checks.OPERAND_CHECKED:
            return True
        key = ("operands", node.name, *[(shape, dtype.char) for shape, dtype in record[0]])
        return self.memo.get(key) is operand_checks._PROVED

    def read_raw(self, node) -> bool:
        """Whether the input's preparation (`IntegerInterpreter.prepare_input`: a float64
        array) can be left to its readers: quantizers that convert to float64 anyway."""
        if np.dtype(node.attrs.get("dtype", "float32")).kind in "iu" or node.name in self.graph.outputs:
            return False
        readers = self.graph.consumers(node.name)
        return bool(readers) and all(map(self._reads_float64, readers))

    def _reads_float64(self, q) -> bool:
        if q.op is not op.QUANTIZER or q.attrs.get("excluded") or q.name not in self.records:
            return False
        call = quantizer_call(self, q, self.records[q.name])
        return call is not None and call[0] == np.float64

    def constant(self, name):
        node = self.graph.node(name)
        if node.op is not op.CONSTANT or node.attrs.get("excluded"):
            return False
        return node.attrs["value"]

    def folded_relu(self, q):
        """The Relu that alone reads quantizer `q`'s output and can become its lower bound."""
        graph = self.graph
        if q.name in graph.outputs:
            return None
        consumers = graph.consumers(q.name)
        if len(consumers) != 1:
            return None
        relu = consumers[0]
        lo, hi = int(q.attrs["lo"]), int(q.attrs["hi"])
        if relu.op is not op.RELU or list(relu.inputs) != [q.name] or relu.attrs.get("excluded") \
                or not lo <= hi or hi < 0 or relu.name not in self.records:
            return None
        return relu

    def mark(self, node, how, *chain):
        self.specialised[node.name] = how
        self.done.update(n.name for n in chain)


def _input_step(node, out):
    def step(interp, env):
        env[out] = interp._prepared(node, env[out])

    return step


def _generic_step(node, in_slots, out):
    """The walk's `run_node` for this node (checks, impl, accumulator policy)."""
    def step(interp, env):
        env[out] = interp.run_node(node, [env[i] for i in in_slots])

    return step
