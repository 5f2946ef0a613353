"""Lower an integer graph to a C program: a schedule of kernel calls, the storage
type and size of every tensor, and the constant arrays and parameter structs.

One C step per graph node, in the engines' topological order, each writing its
own buffer (layout ops alias their input's). Rescales are fused into the kernel
of the Conv / Gemm / ADD around them where nothing else needs the wide tensor
(`fuse`): their step has no code and their tensor no arena bytes. Nodes of
constants only are computed at export into static const arrays. Tensors hold
exactly the engine's values at batch 1; the storage type is the narrowest that
holds them exactly
(a QUANTIZER's dtype; an accumulator in int32 when the target's width is at
most 32 bits, else int64; pools and data movement keep their input's type),
which may be narrower than the engine's NumPy dtype (accumulators are int64
there): values, not dtypes, are what the debug dump compares.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, UnsupportedOperatorError
from ..ir import OpType
from ..target import Target

op = OpType
#: C storage types, narrowest first: (numpy dtype name, C type, enum, min, max).
CTYPES = {
    "int8": ("int8_t", "AIDGE_I8", -(1 << 7), (1 << 7) - 1),
    "uint8": ("uint8_t", "AIDGE_U8", 0, (1 << 8) - 1),
    "int16": ("int16_t", "AIDGE_I16", -(1 << 15), (1 << 15) - 1),
    "uint16": ("uint16_t", "AIDGE_U16", 0, (1 << 16) - 1),
    "int32": ("int32_t", "AIDGE_I32", -(1 << 31), (1 << 31) - 1),
    "int64": ("int64_t", "AIDGE_I64", -(1 << 63), (1 << 63) - 1),
    "float32": ("float", "AIDGE_F32", None, None),
}
SHORT = {"int8": "i8", "uint8": "u8", "int16": "i16", "uint16": "u16", "int32": "i32", "int64": "i64"}
OVERFLOW = {"error": "AIDGE_OVF_ERROR", "saturate": "AIDGE_OVF_SATURATE", "wrap": "AIDGE_OVF_WRAP"}
ROUNDING = {"half_away": "AIDGE_HALF_AWAY", "half_up": "AIDGE_HALF_UP",
            "half_even": "AIDGE_HALF_EVEN", "floor": "AIDGE_FLOOR"}


def narrowest(lo: int, hi: int) -> str:
    """The first integer storage type holding [lo, hi]."""
    for name, (_, _, tmin, tmax) in CTYPES.items():
        if tmin is not None and tmin <= lo and hi <= tmax:
            return name
    raise InputError(f"integer range [{lo}, {hi}] does not fit int64")


def type_range(dtype: str) -> tuple[int, int]:
    return CTYPES[dtype][2], CTYPES[dtype][3]


@dataclass
class Tensor:
    """A tensor of the C program (shapes at batch 1)."""

    name: str
    cname: str
    dtype: str            # C storage type (a key of CTYPES)
    shape: tuple
    engine_dtype: str     # what run(..., engine="integer") returns
    alias: str | None = None   # tensor whose buffer this one shares (layout ops)
    virtual: bool = False      # never stored in the arena (a fused step's accumulators)
    constant: bool = False     # a static const array: the node depends on constants only

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    @property
    def enum(self) -> str:
        return CTYPES[self.dtype][1]


@dataclass
class Step:
    node: str
    op: str
    code: list[str]
    reads: list[str]
    writes: str          # the tensor the debug dump holds for this step
    produces: list[str] = field(default_factory=list)  # other tensors it writes (fused rescales)
    deferred: bool = False  # no code: `writes` is produced by another step (a fused rescale)


@dataclass
class Program:
    """Everything `emit` needs: the schedule, tensors, constants, target."""

    name: str
    target: Target
    input: Tensor
    outputs: list[Tensor]
    tensors: dict[str, Tensor] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    constants: list[str] = field(default_factory=list)   # C definitions, in order
    weight_bytes: int = 0
    uses_float: bool = False     # a float / double rescale in the integer path
    arena_bytes: int = 0         # set by emit (arena.plan_arena)
    fuse: bool = True            # Conv / Gemm compute their QUANTIZER (no accumulators stored)
    plan: dict = field(default_factory=dict)     # fuse.fusion_plan: quantizer -> node computing it
    shapes: dict = field(default_factory=dict)   # engine_shapes(graph)
    graph: object = None                         # the graph being lowered (its constants)
    _counter: int = 0

    def fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def array(self, values, dtype: str, prefix: str = "P", weight: bool = True) -> str:
        """A static const array; returns its C name."""
        values = np.asarray(values).ravel()
        cname = self.fresh(prefix)
        if dtype == "double":
            items = [float(v).hex() for v in values.astype(np.float64)]
            ctype = "double"
        elif dtype == "float32":
            items = [float(v).hex() + "f" for v in values.astype(np.float32)]
            ctype = "float"
        else:
            lo, hi = type_range(dtype)
            if values.size and (int(values.min()) < lo or int(values.max()) > hi):
                raise InputError(f"constant {cname}: values do not fit {dtype}")
            ctype = CTYPES[dtype][0]
            fmt = "INT64_C({})" if dtype == "int64" else ("{}u" if dtype.startswith("u") else "{}")
            items = [fmt.format(int(v)) for v in values.astype(np.int64)]
        if not items:
            items = ["0"]
        rows = [", ".join(items[i:i + 16]) for i in range(0, len(items), 16)]
        body = ",\n    ".join(rows)
        self.constants.append(f"static const {ctype} {cname}[{len(items)}] = {{\n    {body}\n}};")
        if weight:
            self.weight_bytes += values.size * (8 if dtype == "double" else np.dtype(dtype).itemsize)
        return cname

    def struct(self, ctype: str, fields: dict, prefix: str = "G") -> str:
        cname = self.fresh(prefix)
        body = ", ".join(f".{k} = {v}" for k, v in fields.items())
        self.constants.append(f"static const {ctype} {cname} = {{{body}}};")
        return cname


def comment(text: str) -> str:
    return re.sub(r"\*/", "* /", text)


def input_dependent(graph) -> set[str]:
    """Names of the nodes whose value depends on the graph inputs."""
    dependent = set(graph.inputs)
    for node in graph.topo_order():
        if any(i in dependent for i in node.inputs):
            dependent.add(node.name)
    return dependent


def engine_shapes(graph, dependent=None, folded_values=None):
    """{name: (shape at batch 1, numpy dtype name)} from one integer-engine run on zeros.

    `folded_values` (a dict) receives the values of the nodes outside `dependent` (their
    inputs are all constants: the same for every input)."""
    from ..interp.quant_common import AccumulatorOverflowWarning

    dependent = input_dependent(graph) if dependent is None else dependent
    feeds = {}
    for name in graph.inputs:
        node = graph.node(name)
        shape = tuple(node.attrs.get("shape") or ())
        if not shape or any(d is None or (isinstance(d, int) and d <= 0) for d in shape[1:]):
            raise InputError(f"input '{name}': shape {shape} is not fixed beyond the batch axis")
        feeds[name] = np.zeros((1,) + tuple(int(d) for d in shape[1:]),
                               np.dtype(node.attrs.get("dtype", "float32")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccumulatorOverflowWarning)
        values = _shape_engine(dependent).run(graph, feeds, intermediates=True)
    if folded_values is not None:
        folded_values.update({n: np.asarray(v) for n, v in values.items() if n not in dependent})
    return {name: (tuple(int(d) for d in v.shape), str(v.dtype)) for name, v in values.items()}


def _shape_engine(dependent):
    from ..interp.integer import IntegerInterpreter

    class ShapeEngine(IntegerInterpreter):
        """The integer engine, except that an int8 SOFTMAX of the input is not evaluated
        (its output is int8 of its input's shape): on zeros, a wide one may hit TFLite's
        abort, which the lowering judges over all inputs (`ops_softmax.softmax_sum_bounds`)."""

        def run_node(self, node, operands):
            if node.op is op.SOFTMAX and "diff_min" in node.attrs and node.name in dependent \
                    and operands[0].dtype == np.int8:
                return np.full(operands[0].shape, -128, np.int8)
            return super().run_node(node, operands)

    return ShapeEngine()


def _folded(prog, node, value) -> Step:
    """A node of constants only: its engine value as a static const array (no arena
    bytes, no code; the debug dump still writes it for every sample)."""
    from ..errors import UnsupportedOperatorError as Unsupported

    value = np.asarray(value)
    if value.dtype.kind in "iu":
        dtype = narrowest(int(value.min()), int(value.max())) if value.size else "int8"
    elif value.dtype == np.float32:
        dtype = "float32"
    else:
        raise Unsupported(node.name, node.op.value, f"a constant {value.dtype} tensor")
    cname = prog.array(value, dtype, "C")
    t = Tensor(node.name, cname, dtype, tuple(value.shape), str(value.dtype), virtual=True,
               constant=True)
    prog.tensors[node.name] = t
    return Step(node.name, node.op.value, [f"/* constant: computed at export ({cname}) */"], [],
                node.name)


def check_exportable(graph) -> None:
    """Refuse float and no_quant graphs (InputError) and multi-input graphs."""
    if not graph.meta.get("quantized"):
        raise InputError(f"graph '{graph.name}' is a float graph: quantize it first "
                         "(quantize_network(..., no_quant=False)), then export")
    if not graph.meta.get("integer"):
        raise InputError(f"graph '{graph.name}' is a no_quant graph (scales only, no integers): "
                         "quantize without no_quant to export it")
    if len(graph.inputs) != 1:
        raise UnsupportedOperatorError(graph.name, "Input", f"{len(graph.inputs)} graph inputs; "
                                       "the C export takes one")
    from ..ir.validate import validate

    validate(graph)  # the engines' checks (geometry, quantizer parameters), before any C is written


def lower(graph, name: str = "model", fuse: bool = True) -> Program:
    """Lower a quantized integer graph (ours or load_tflite's) to a `Program`.

    `fuse`: rescale QUANTIZERs are computed by the kernel of the Conv / Gemm before them
    or the ADD / SUB around them (see `fuse`), so that accumulators and int32 operands
    never occupy the arena (the debug build still dumps them, from buffers of its own)."""
    from . import ops as lowerings, ops_layout, ops_softmax  # noqa: F401  (registers the lowerings)
    from .fuse import fusion_plan

    check_exportable(graph)
    stored = graph.meta.get("target")
    target = Target.from_dict(stored) if stored else Target()
    for node in graph:  # an op the C library lacks is refused before anything runs
        if node.op not in (op.INPUT, op.CONSTANT) and node.op not in lowerings.LOWER:
            raise UnsupportedOperatorError(node.name, node.op.value,
                                           "the C kernel library has no implementation")
        if node.op in lowerings.PRECHECK:
            lowerings.PRECHECK[node.op](graph, node)
    dependent, folded = input_dependent(graph), {}
    shapes = engine_shapes(graph, dependent, folded)
    for name in graph.outputs:
        if name not in dependent:
            raise UnsupportedOperatorError(name, graph.node(name).op.value,
                                           "a graph output that does not depend on the input")
    order = [n for n in graph.topo_order() if n.op is not op.CONSTANT]
    tensors: dict[str, Tensor] = {}
    inp = graph.node(graph.inputs[0])
    shape, dtype = shapes[inp.name]
    in_dtype = str(np.dtype(inp.attrs.get("dtype", "float32")))
    if in_dtype not in CTYPES:
        raise UnsupportedOperatorError(inp.name, "Input", f"input dtype {in_dtype}")
    tensors[inp.name] = Tensor(inp.name, "in", in_dtype, shape, in_dtype)
    plan = fusion_plan(graph, shapes, dependent) if fuse else {}
    prog = Program(name, target, tensors[inp.name], [], tensors, fuse=fuse, shapes=shapes, plan=plan,
                   graph=graph)
    for index, node in enumerate(order):
        if node.op is op.INPUT:
            continue
        if node.name in folded:
            prog.steps.append(_folded(prog, node, folded[node.name]))
            continue
        shape, engine_dtype = shapes[node.name]
        if shape[:1] != (1,):
            raise UnsupportedOperatorError(node.name, node.op.value,
                                           f"shape {shape} at batch 1: the batch axis is not kept first")
        step = lowerings.LOWER[node.op](prog, graph, node, shape, engine_dtype)
        prog.steps.append(step)
    prog.outputs = [tensors[n] for n in graph.outputs]
    return prog
