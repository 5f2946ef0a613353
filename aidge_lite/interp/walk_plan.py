"""The walk plan: what a run needs that depends only on the graph, built once per graph state.

A golden reference is called one sample at a time by test harnesses, so a run must not
re-validate and re-order an unchanged graph. `walk_plan(interp, graph)` returns the cached
plan while `GraphStamp.matches` says nothing a run depends on has changed, and else
validates the graph again and builds a new plan. What the stamp compares, per call:

- the networkx graph object, its node names and `Node` objects (identity), each node's
  op and operand list (value), the graph's name, inputs and outputs (value);
- every attribute dict, its keys, and each value by identity (a replaced value, e.g.
  `Graph.set_constant` or ``node.attrs["hi"] = 8``, is a change);
- by content as well, the values that can change in place without a new object: lists and
  dicts of scalars, arrays of at most `SMALL_ARRAY` elements (scales, bounds, biases),
  and the shape and dtype of every array. A larger array edited in place keeps its
  identity and goes unseen, as before: replace it (`Graph.set_constant`).
- the same for `graph.meta` (the stored target, the integer / quantized flags).

What depends on the values of a run (the input array, the accumulator bound) is checked
on every run by `bind` and `ir.operand_checks`, with what depends only on shapes and
dtypes kept in the plan (`feeds`, `memo`).
"""
from __future__ import annotations

import os
import weakref
from itertools import chain
from operator import attrgetter, is_, itemgetter

import numpy as np

from ..errors import InputError
from ..ir import Graph, Node, OpType
from ..ir.node import META_SHAPE
from ..ir.validate import validate

SMALL_ARRAY = 256  # elements: arrays up to this size are compared by content on every run
_SCALARS = frozenset({str, int, float, bool, type(None), OpType})


class GraphStamp:
    """A snapshot of what a run of `graph` depends on; `matches(graph)` is the cheap recheck."""

    def __init__(self, graph: Graph):
        g = graph._g
        self.g = g
        self.names = list(g._node)
        self.nodes = list(map(_NODE, g._node.values()))
        self.head = (graph.name, list(graph.inputs), list(graph.outputs), graph.meta)
        self.fields = [(n.name, n.op, list(n.inputs)) for n in self.nodes]
        self.dicts = list(map(_ATTRS, self.nodes)) + [graph.meta]
        self.sizes = list(map(len, self.dicts))
        self.keys = list(chain.from_iterable(self.dicts))
        self.views = list(map(dict.values, self.dicts))  # live: valid while the dicts are these
        self.values = list(chain.from_iterable(self.views))
        # values that can change without becoming another object
        self.lists = [v for v in self.values if type(v) is list and _scalars(v)]
        self.list_copies = [list(v) for v in self.lists]
        self.maps = [v for v in self.values if type(v) is dict and _scalars(v.values())]
        self.map_copies = [dict(v) for v in self.maps]
        self.arrays = [v for v in self.values if type(v) is np.ndarray]
        self.layouts = list(map(_LAYOUT, self.arrays))
        self.small = [a for a in self.arrays if a.size <= SMALL_ARRAY]
        self.contents = [a.tobytes() for a in self.small]

    def matches(self, graph: Graph) -> bool:
        # C-level maps (attrgetter, chain) over the nodes: ~0.05 us per node and attribute
        g = graph._g
        name, inputs, outputs, meta = self.head
        if g is not self.g or graph.name != name or graph.inputs != inputs \
                or graph.outputs != outputs or graph.meta is not meta or list(g._node) != self.names:
            return False
        nodes = list(map(_NODE, g._node.values()))
        if not all(map(is_, nodes, self.nodes)) or list(map(_FIELDS, nodes)) != self.fields \
                or not all(map(is_, map(_ATTRS, nodes), self.dicts)):
            return False
        # the attribute dicts (and graph.meta) are the snapshot's: read their live views
        return (list(map(len, self.dicts)) == self.sizes
                and list(chain.from_iterable(self.dicts)) == self.keys
                and all(map(is_, chain.from_iterable(self.views), self.values))
                and self.lists == self.list_copies and self.maps == self.map_copies
                and list(map(_LAYOUT, self.arrays)) == self.layouts
                and [a.tobytes() for a in self.small] == self.contents)


_NODE, _ATTRS = itemgetter("node"), attrgetter("attrs")
_FIELDS, _LAYOUT = attrgetter("name", "op", "inputs"), attrgetter("shape", "dtype")


def _scalars(values) -> bool:
    """Only immutable scalars (Python or NumPy): a container of them is compared by value."""
    return all(type(v) in _SCALARS or isinstance(v, np.generic) for v in values)


class WalkPlan:
    """What one run needs that depends only on the graph: the validated topological order
    as `steps` (node, its name, is it an input, its input names, the tensors that die
    after it); `memo`, a dict where op impls and the operand checks keep per-node derived
    parameters (window geometry, quantizer parameters, shape verdicts) until the graph
    changes; `feeds`, the (input, shape, dtype) combinations whose layout checks passed."""

    def __init__(self, graph: Graph, order: list[Node]):
        self.stamp = GraphStamp(graph)
        self.order = order
        self.last_use = _last_use(order, graph.outputs)
        dead = [tuple(self.last_use.get(step, ())) for step in range(len(order))]
        self.steps = [(node, node.name, node.op is OpType.INPUT, tuple(node.inputs), gone)
                      for node, gone in zip(order, dead)]
        self.input_nodes = [graph.node(name) for name in graph.inputs]
        self.checked: set[type] = set()
        self.memo: dict = {}
        self.feeds: set = set()

    def largest_activation(self) -> tuple[str, int] | None:
        """(name, elements) of the biggest non-constant tensor at the shapes `infer_shapes`
        recorded (batch one); a node the PTQ inserted later (quantizers, scaling: they keep
        their input's shape) counts with its first input's. None when the inputs have no
        recorded shape. Not cached: asked once per new input shape."""
        best, sizes = ("", 0), {}
        for node in self.order:
            if node.op is OpType.CONSTANT:
                continue
            shape = node.meta.get(META_SHAPE)
            if shape is not None:
                size = int(np.prod(shape, dtype=object)) if len(shape) else 1
            elif node.inputs and node.inputs[0] in sizes:
                size = sizes[node.inputs[0]]
            else:
                return None
            sizes[node.name] = size
            best = max(best, (node.name, size), key=itemgetter(1))
        return best


#: Largest activation (bytes, as float64) a run may create: a bigger batch is refused
#: before anything is allocated. Read when an input shape is first seen; None: half
#: the physical memory.
MAX_ACTIVATION_BYTES: int | None = None


def _budget() -> int:
    if MAX_ACTIVATION_BYTES is not None:
        return int(MAX_ACTIVATION_BYTES)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # no sysconf: 8 GiB
        return 8 << 30


def check_activation_budget(plan: WalkPlan, node: Node, array: np.ndarray) -> None:
    """Refuse an input whose batch would make some tensor larger than the budget: the
    tensor sizes at batch one (recorded by shape inference) scaled by the batch."""
    largest = plan.largest_activation()
    inferred = node.meta.get(META_SHAPE)
    if largest is None or not inferred or array.ndim == 0 or not inferred[0]:
        return
    scale = -(-array.shape[0] // inferred[0])  # batch relative to the recorded shape
    need = largest[1] * scale * 8  # float64: the fake-quant engine's and the worst dtype
    if need > _budget():
        raise InputError(f"input '{node.name}': a batch of {array.shape[0]:,} makes tensor "
                         f"'{largest[0]}' {need:,} bytes, over the budget of {_budget():,} "
                         "(aidge_lite.interp.walk_plan.MAX_ACTIVATION_BYTES); run smaller batches")


_PLANS: "weakref.WeakKeyDictionary[Graph, WalkPlan]" = weakref.WeakKeyDictionary()


def walk_plan(interp, graph: Graph) -> WalkPlan:
    """`graph`'s plan, validated for `interp`'s type; rebuilt when the graph changed
    (`GraphStamp`). Both engines validate through here: the same checks, before any kernel.

    The plan holds the node objects and attribute values it compares by identity, so none
    of them can be freed and replaced by a new object at the same address while it is cached.
    """
    plan = _PLANS.get(graph)
    if plan is None or not plan.stamp.matches(graph):
        plan = WalkPlan(graph, validate(graph))
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
