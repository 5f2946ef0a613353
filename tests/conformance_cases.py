"""Conformance cases for the reference interpreter, and the harness that runs them.

Sources:

* the ONNX backend *node* test cases (`onnx.backend.test.case.node.collect_testcases`)
  whose nodes are all of `SUPPORTED_OPS` (cases with model-local functions are
  skipped: their bodies are not plain graphs);
* the `light_*` topology models shipped in the onnx wheel (`LIGHT_DIR`).

Preparation, because aidge_lite needs static shapes and a fixed opset range:

* **Freezing.** Operands that aidge_lite turns into attributes (Reshape shape,
  Pad pads/value/axes, Squeeze/Unsqueeze axes, Clip min/max, Dropout
  ratio/training_mode: `STATIC_OPERANDS`) are graph inputs in many node tests.
  Their value from the case's data set is frozen into an initializer and the
  graph input is dropped, for both engines.
* **Re-stamping.** onnx 1.23 stamps its newest opsets (22..25) on many cases
  while the importer accepts 7..21. A case with opset > 21 is re-stamped to 21;
  this is sound only when the ops' semantics did not change, which the test
  checks by comparing onnxruntime on the re-stamped model with the case's own
  expected outputs.
* **Light models.** Every weight is a `ConstantOfShape`, which aidge_lite does
  not implement: each is folded into an initializer of its shape whose values
  are its fill value times a seeded uniform factor in [0.5, 1.5). Uniform
  weights would make every channel equal and hide layout bugs (a wrong
  Transpose, Concat order or group split); the factor keeps signs and scales.
  The input of a final Softmax is exposed as an extra output, so the logits
  are compared and not only their (nearly flat) softmax.

Error metric (`rel_error`): max|ours - ref| / max(max|ref|, tiny) per output,
tiny = the smallest normal float32; a case passes when it is <= `RTOL` (1e-5)
for every output, with matching shapes and dtypes.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

SUPPORTED_OPS = frozenset(
    "Conv Gemm MatMul Add Sub Mul Div Concat Relu LeakyRelu Clip Sigmoid Tanh MaxPool "
    "AveragePool GlobalAveragePool BatchNormalization Flatten Reshape Transpose Squeeze "
    "Unsqueeze Pad Softmax Identity Dropout Constant "
    "ReduceMean Resize Upsample Slice Split ConvTranspose DepthToSpace LRN Sum HardSigmoid HardSwish "
    "PRelu Erf Gelu Pow".split()
)
# op type -> operand positions that must be constants for aidge_lite
STATIC_OPERANDS = {
    "Reshape": (1,), "Pad": (1, 2, 3), "Squeeze": (1,), "Unsqueeze": (1,),
    "Clip": (1, 2), "Dropout": (1, 2),
    "ReduceMean": (1,), "Resize": (1, 2, 3), "Upsample": (1,), "Slice": (1, 2, 3, 4), "Split": (1,),
    "PRelu": (1,),
}
MAX_OPSET = 21
RTOL = 1e-5
TINY = float(np.finfo(np.float32).tiny)
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def rel_error(ours, ref) -> float:
    """max|ours - ref| / max(max|ref|, tiny), computed in float64."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ref.size == 0:
        return 0.0
    return float(np.max(np.abs(ours - ref)) / max(float(np.max(np.abs(ref))), TINY))


def compare(ours: list, ref: list, what: str) -> float:
    """Assert `ours` matches `ref` output by output; return the worst relative error."""
    assert len(ours) == len(ref), f"{what}: {len(ours)} outputs, expected {len(ref)}"
    worst = 0.0
    for k, (a, b) in enumerate(zip(ours, ref)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, f"{what} output {k}: shape {a.shape} != {b.shape}"
        assert a.dtype == b.dtype, f"{what} output {k}: dtype {a.dtype} != {b.dtype}"
        err = rel_error(a, b)
        assert err <= RTOL, f"{what} output {k}: relative error {err:.3g} > {RTOL}"
        worst = max(worst, err)
    return worst


# ------------------------------------------------------------------ node cases
@dataclass
class Case:
    name: str
    model: onnx.ModelProto          # frozen and re-stamped, ready for both engines
    feeds: dict[str, np.ndarray]
    expected: list[np.ndarray]
    rtol: float                     # the case's own tolerances for `expected`
    atol: float
    notes: list[str] = field(default_factory=list)


def _ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def _has_subgraph(model: onnx.ModelProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for n in model.graph.node for a in n.attribute)


@functools.lru_cache(maxsize=1)
def _selected() -> tuple:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return tuple(
        c for c in cases
        if c.model is not None and c.data_sets
        and not c.model.functions and not _has_subgraph(c.model)
        and _ops(c.model) <= SUPPORTED_OPS
    )


def node_case_names() -> list[str]:
    """Names of the backend node cases whose ops are all supported."""
    return [c.name for c in _selected()]


def node_case(name: str, data_set: int = 0) -> Case:
    """The prepared case `name` (frozen static operands, opset <= 21)."""
    (case,) = [c for c in _selected() if c.name == name]
    inputs, outputs = case.data_sets[data_set]
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    runtime = [i.name for i in graph.input if i.name not in inits]
    values = dict(zip(runtime, inputs))
    frozen = []
    for node in graph.node:
        for pos in STATIC_OPERANDS.get(node.op_type, ()):
            if pos < len(node.input) and node.input[pos] in values and node.input[pos] not in frozen:
                frozen.append(node.input[pos])
    notes = []
    for name_ in frozen:
        graph.initializer.append(numpy_helper.from_array(np.asarray(values.pop(name_)), name_))
        (vi,) = [i for i in graph.input if i.name == name_]
        graph.input.remove(vi)
    if frozen:
        notes.append(f"froze {frozen}")
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version > MAX_OPSET:
            notes.append(f"re-stamped opset {entry.version} -> {MAX_OPSET}")
            entry.version = MAX_OPSET
    return Case(name, model, values, [np.asarray(o) for o in outputs], case.rtol, case.atol, notes)


def check_node_case(name: str) -> float:
    """Run case `name` in aidge_lite and onnxruntime; return the worst error vs ORT.

    Raises (an aidge_lite error or AssertionError) unless aidge_lite matches ORT
    within `RTOL` and both match the case's expected outputs within the case's
    own rtol/atol (some expected outputs are rounded, e.g. to 4 decimals).
    """
    import aidge_lite

    case = node_case(name)
    graph = aidge_lite.load_onnx(case.model)
    result = aidge_lite.run(graph, case.feeds)
    ours = [result[o] for o in graph.outputs]
    ref = ort_run(case.model, case.feeds)
    worst = compare(ours, ref, f"{name}: aidge_lite vs onnxruntime")
    for who, got in (("aidge_lite", ours), ("onnxruntime", ref)):
        assert len(got) == len(case.expected)
        for k, (a, b) in enumerate(zip(got, case.expected)):
            np.testing.assert_allclose(a, b, rtol=case.rtol, atol=case.atol,
                                       err_msg=f"{name}: {who} vs expected output {k} ({case.notes})")
    return worst


# ---------------------------------------------------------------- light models
LIGHT_NAMES = sorted(p.stem[len("light_"):] for p in LIGHT_DIR.glob("light_*.onnx"))


def light_model(name: str, seed: int = 0, fold: bool = True) -> onnx.ModelProto:
    """`light_<name>.onnx` with ConstantOfShape folded (see the module docstring).

    With `fold=False` the weights become graph inputs instead: a cheap model to
    check which ops the importer rejects, not one to run.
    """
    model = onnx.load(str(LIGHT_DIR / f"light_{name}.onnx"))
    graph, rng = model.graph, np.random.default_rng(seed)
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type != "ConstantOfShape":
            kept.append(node)
            continue
        attr = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        fill = numpy_helper.to_array(attr["value"]) if "value" in attr else np.zeros(1, np.float32)
        shape = tuple(int(d) for d in consts[node.input[0]])
        if not fold:
            graph.input.append(helper.make_tensor_value_info(
                node.output[0], helper.np_dtype_to_tensor_dtype(fill.dtype), shape))
            continue
        factor = rng.uniform(0.5, 1.5, shape).astype(fill.dtype)
        value = (fill.reshape(()) * factor).astype(fill.dtype)
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        # IR version 3: every initializer is also declared as a graph input
        graph.input.append(helper.make_tensor_value_info(
            node.output[0], helper.np_dtype_to_tensor_dtype(value.dtype), value.shape))
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)
    for vi in [i for i in graph.input if i.name not in used]:
        graph.input.remove(vi)
    producers = {o: n for n in graph.node for o in n.output}
    infos = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for out in list(graph.output):
        node = producers.get(out.name)
        if node is not None and node.op_type == "Softmax":
            graph.output.append(infos[node.input[0]])
    onnx.checker.check_model(model)
    return model


def light_input(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """A standard-normal float32 input of each declared (static) input shape."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    return {
        i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
        for i in model.graph.input if i.name not in inits
    }


# ----------------------------------------------------------------- onnxruntime
def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run `model` in onnxruntime (CPU, graph optimisations off), outputs in graph order."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
