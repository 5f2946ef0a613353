"""Fuzzing `load_onnx` and what follows it with mutated real models (issue 20).

Each case mutates one of the repository's ONNX models (`models/onnx/*.onnx`,
`tests/data/*.onnx`) by byte flips, truncation or structured edits of the parsed model
(attributes, dims, initializer values and types, input shapes and types, wiring, op types,
opset), then runs `onnx_case` in the bounds-checked worker (`conftest.FuzzRunner`). A case
is clean when:

* `load_onnx` raises an `aidge_lite.errors` exception, or
* it loads, onnxruntime accepts the same bytes, and our float reference agrees with it
  (max|ours - ort| / max|ort| <= 1e-5 per output, non-finite values at the same places); then
  the graph is quantized on 8 samples and both engines (fake-quant reference and integer) run
  it: the same integers bit for bit, or the same error class and node.

Anything else fails the test: another exception, a bounds-check IndexError, a crash, a hang,
a model we accept and onnxruntime refuses, a disagreement.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto

from tests.fuzz.conftest import Outcome, check, engines_agree, error_key, fuzz_settings, outcome_of

ROOT = Path(__file__).resolve().parents[2]
MODELS = {p.name: p.read_bytes()
          for p in sorted([*ROOT.glob("models/onnx/*.onnx"), *ROOT.glob("tests/data/*.onnx")])}
RTOL = 1e-5
TINY = float(np.finfo(np.float32).tiny)
CALIBRATION_SAMPLES = 8


# ------------------------------------------------------------------ the case (worker side)
def onnx_case(data: bytes, seed: int) -> Outcome:
    """Load, compare with onnxruntime, quantize, compare the engines."""
    import onnxruntime as ort

    import aidge_lite
    from aidge_lite.errors import AidgeLiteError

    try:
        graph = aidge_lite.load_onnx(data)
    except AidgeLiteError as exc:
        return outcome_of(exc)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 -- any refusal by ORT is the finding
        return Outcome("disagrees", f"we load it, onnxruntime refuses it: {exc}"[:2000])
    rng = np.random.default_rng(seed)
    feeds = _feeds(graph, rng, batch=2)
    try:
        ours = aidge_lite.run(graph, feeds)
    except AidgeLiteError as exc:
        return outcome_of(exc)
    try:
        ref = _ort_outputs(session, feeds)
    except Exception as exc:  # noqa: BLE001
        try:  # ORT also runs nodes no output reads (we prune them): compare on the live graph
            ref = _ort_outputs(ort.InferenceSession(_live_model(data), options,
                                                    providers=["CPUExecutionProvider"]), feeds)
        except Exception:  # noqa: BLE001
            return Outcome("disagrees", f"we run it, onnxruntime refuses to: {exc}"[:2000])
    for name in graph.outputs:
        err = _rel_error(ours[name], ref[name])
        if not err <= RTOL:
            return Outcome("disagrees", f"output '{name}': relative error {err:.3g} vs onnxruntime")
    calib = {k: np.concatenate([_feeds(graph, rng, 1)[k] for _ in range(CALIBRATION_SAMPLES)])
             for k in feeds}
    try:
        qgraph = aidge_lite.quantize_network(graph, calib if len(calib) > 1 else next(iter(calib.values())))
    except AidgeLiteError as exc:
        return Outcome("agrees", "float agrees; quantize refused: %s %s" % error_key(exc))
    return engines_agree(qgraph, feeds)


def _ort_outputs(session, feeds) -> dict:
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _live_model(data: bytes) -> bytes:
    """The model without the nodes no graph output depends on."""
    m = onnx.load_from_string(data)
    needed, live = {o.name for o in m.graph.output}, []
    for node in reversed(m.graph.node):
        if needed & set(node.output):
            live.append(node)
            needed |= set(node.input)
    del m.graph.node[:]
    m.graph.node.extend(reversed(live))
    return m.SerializeToString()


def _feeds(graph, rng, batch: int) -> dict:
    feeds = {}
    for name in graph.inputs:
        node = graph.node(name)
        # the declared dims (0 too: ORT takes nothing else), free ones 1, a free batch `batch`
        dims = [d if isinstance(d, int) and d >= 0 else (batch if i == 0 else 1)
                for i, d in enumerate(node.attrs["shape"])]
        feeds[name] = rng.uniform(0, 16, dims).astype(node.attrs["dtype"])
    return feeds


def _rel_error(ours, ref) -> float:
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape or ours.dtype != ref.dtype:
        return math.inf
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    finite = np.isfinite(b)
    if not np.array_equal(np.isfinite(a), finite) or not np.array_equal(a[~finite], b[~finite], equal_nan=True):
        return math.inf
    if not finite.any():
        return 0.0
    scale = max(float(np.max(np.abs(b[finite]))), TINY)
    return float(np.max(np.abs(a[finite] - b[finite]))) / scale


# ------------------------------------------------------------------ mutations (pytest side)
models = st.sampled_from(sorted(MODELS))


@st.composite
def byte_flips(draw):
    name = draw(models)
    data = bytearray(MODELS[name])
    for _ in range(draw(st.integers(1, 8))):
        # half the flips in the first 4 KB, where the nodes and attributes are serialized
        high = len(data) - 1 if draw(st.booleans()) else min(len(data) - 1, 4095)
        data[draw(st.integers(0, high))] ^= draw(st.integers(1, 255))
    return name, bytes(data)


@st.composite
def truncations(draw):
    name = draw(models)
    return name, MODELS[name][: draw(st.integers(0, len(MODELS[name]) - 1))]


ATTR_NAMES = ("strides", "pads", "dilations", "kernel_shape", "group", "axis", "auto_pad", "transA",
              "transB", "alpha", "beta", "ceil_mode", "count_include_pad", "perm", "epsilon", "axes",
              "allowzero", "keepdims", "mode", "storage_order")
OP_TYPES = ("Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Concat", "Relu", "LeakyRelu",
            "Clip", "Sigmoid", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization",
            "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Pad", "Softmax", "Identity",
            "Dropout", "ReduceMean", "Erf", "Foo")
SPECIAL_FLOATS = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-45, 1e30, -1e30, 3.4e38, math.inf, -math.inf, math.nan)
STRINGS = (b"NOTSET", b"SAME_UPPER", b"SAME_LOWER", b"VALID", b"FOO", b"", b"constant", b"reflect")
ELEM_TYPES = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT8,
              TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL, TensorProto.STRING, 0, 99)
small_ints = st.integers(-3, 12)


def _int_list(draw):
    return draw(st.lists(small_ints, min_size=0, max_size=6))


def _edit_attribute(draw, m):
    nodes = [n for n in m.graph.node if n.attribute]
    if not nodes:
        return
    node = draw(st.sampled_from(nodes))
    attr = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
    kind = attr.type
    if kind == onnx.AttributeProto.INTS:
        values = draw(st.one_of(st.just(None), st.lists(small_ints, min_size=0, max_size=6)))
        if values is None:  # one entry changed: a subtler edit
            values = list(attr.ints) or [1]
            values[draw(st.integers(0, len(values) - 1))] = draw(small_ints)
        del attr.ints[:]
        attr.ints.extend(values)
    elif kind == onnx.AttributeProto.INT:
        attr.i = draw(small_ints)
    elif kind == onnx.AttributeProto.FLOAT:
        attr.f = draw(st.sampled_from(SPECIAL_FLOATS))
    elif kind == onnx.AttributeProto.STRING:
        attr.s = draw(st.sampled_from(STRINGS))
    elif kind == onnx.AttributeProto.TENSOR:
        _edit_tensor(draw, attr.t)


def _add_attribute(draw, m):
    node = draw(st.sampled_from(list(m.graph.node)))
    name = draw(st.sampled_from(ATTR_NAMES))
    value = draw(st.one_of(small_ints, st.lists(small_ints, max_size=6),
                           st.sampled_from(SPECIAL_FLOATS), st.sampled_from(STRINGS)))
    for i, attr in enumerate(node.attribute):
        if attr.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value) if value != [] else
                          onnx.helper.make_attribute(name, [], attr_type=onnx.AttributeProto.INTS))


def _del_attribute(draw, m):
    nodes = [n for n in m.graph.node if n.attribute]
    if nodes:
        node = draw(st.sampled_from(nodes))
        del node.attribute[draw(st.integers(0, len(node.attribute) - 1))]


def _edit_tensor(draw, t):
    choice = draw(st.sampled_from(("dims", "resized", "values", "dtype")))
    if choice == "dims":  # dims changed, data kept: a mismatch
        del t.dims[:]
        t.dims.extend(draw(st.lists(st.integers(0, 12), max_size=5)))
    elif choice == "resized":  # consistent data for new dims
        flat = _floats(t)
        if flat is not None and flat.size:
            dims = draw(st.lists(st.integers(1, 8), max_size=4))
            new = np.resize(flat, int(np.prod(dims)) if dims else 1).reshape(dims)
            t.CopyFrom(onnx.numpy_helper.from_array(new.astype(np.float32), t.name))
    elif choice == "values":
        flat = _floats(t)
        if flat is not None and flat.size:
            for _ in range(draw(st.integers(1, 4))):
                flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(SPECIAL_FLOATS))
            t.raw_data = flat.tobytes()
    elif choice == "dtype":
        t.data_type = draw(st.sampled_from(ELEM_TYPES))


def _floats(t):
    """The float32 values of `t` as a writable flat array (None if not float32 raw data)."""
    if t.data_type != TensorProto.FLOAT or not t.raw_data or len(t.raw_data) % 4:
        return None
    return np.frombuffer(t.raw_data, np.float32).copy()


def _edit_initializer(draw, m):
    if m.graph.initializer:
        _edit_tensor(draw, draw(st.sampled_from(list(m.graph.initializer))))


def _edit_input(draw, m):
    vi = draw(st.sampled_from(list(m.graph.input)))
    if draw(st.booleans()):
        vi.type.tensor_type.elem_type = draw(st.sampled_from(ELEM_TYPES))
        return
    dims = vi.type.tensor_type.shape.dim
    if not dims or draw(st.booleans()):
        new = draw(st.lists(st.one_of(st.integers(-1, 40), st.just(10**10), st.just("N")), max_size=5))
        del dims[:]
        for d in new:
            dims.add().CopyFrom(onnx.TensorShapeProto.Dimension(
                **({"dim_param": d} if isinstance(d, str) else {"dim_value": d})))
    else:
        d = dims[draw(st.integers(0, len(dims) - 1))]
        d.dim_value = draw(st.one_of(st.integers(-1, 64), st.just(10**10)))


def _tensor_names(m):
    names = [t.name for t in m.graph.initializer] + [v.name for v in m.graph.input]
    return names + [o for n in m.graph.node for o in n.output]


def _rewire(draw, m):
    node = draw(st.sampled_from(list(m.graph.node)))
    if node.input:
        i = draw(st.integers(0, len(node.input) - 1))
        node.input[i] = draw(st.one_of(st.sampled_from(_tensor_names(m)), st.just(""), st.just("nowhere")))
    elif draw(st.booleans()):
        node.input.append(draw(st.sampled_from(_tensor_names(m))))


def _retype(draw, m):
    draw(st.sampled_from(list(m.graph.node))).op_type = draw(st.sampled_from(OP_TYPES))


def _drop_node(draw, m):
    if len(m.graph.node) > 1:
        del m.graph.node[draw(st.integers(0, len(m.graph.node) - 1))]


def _edit_output(draw, m):
    out = m.graph.output[draw(st.integers(0, len(m.graph.output) - 1))]
    out.name = draw(st.sampled_from(_tensor_names(m)))


def _edit_opset(draw, m):
    m.opset_import[0].version = draw(st.integers(1, 25))


EDITS = (_edit_attribute, _add_attribute, _del_attribute, _edit_initializer, _edit_input, _rewire,
         _retype, _drop_node, _edit_output, _edit_opset)


@st.composite
def structured_edits(draw):
    name = draw(models)
    m = onnx.load_from_string(MODELS[name])
    applied = []
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(EDITS))
        edit(draw, m)
        applied.append(edit.__name__)
    return f"{name} {'+'.join(applied)}", m.SerializeToString()


# ------------------------------------------------------------------ tests
def _run(fuzz_runner, case, seed, label):
    _, data = case
    check(fuzz_runner.run(onnx_case, data, seed, label=label))


@fuzz_settings(ci=12, slow=3000)
@given(case=byte_flips(), seed=st.integers(0, 2**31))
def test_byte_flips(fuzz_runner, case, seed):
    _run(fuzz_runner, case, seed, "onnx byte flips")


@fuzz_settings(ci=8, slow=1000)
@given(case=truncations(), seed=st.integers(0, 2**31))
def test_truncation(fuzz_runner, case, seed):
    _run(fuzz_runner, case, seed, "onnx truncation")


@fuzz_settings(ci=30, slow=6000)
@given(case=structured_edits(), seed=st.integers(0, 2**31))
def test_structured_edits(fuzz_runner, case, seed):
    _run(fuzz_runner, case, seed, "onnx structured edits")


def test_every_model_runs_clean(fuzz_runner):
    """The unmutated models: the baseline every mutation starts from agrees end to end."""
    for name, data in MODELS.items():
        outcome = fuzz_runner.run(onnx_case, data, 0, label="onnx unmutated")
        assert outcome.kind == "agrees" and "integer agree" in outcome.detail, (name, outcome)


def test_classifier_flags_out_of_bounds_and_tracebacks(fuzz_runner):
    """The runner reports a bounds-check IndexError inside an ExecutionError as oob, a stray
    exception as a traceback, a dead worker as a crash and a silent one as a hang."""
    assert fuzz_runner.run(_refused_case, label="self-test").kind == "refused"
    assert fuzz_runner.run(_oob_case, label="self-test").kind == "oob"
    assert fuzz_runner.run(_traceback_case, label="self-test").kind == "traceback"
    assert fuzz_runner.run(_crash_case, label="self-test").kind == "crash"
    assert fuzz_runner.run(_hang_case, label="self-test", timeout=2).kind == "hang"
    for key in [k for k in fuzz_runner.tally if k[0] == "self-test"]:  # not fuzz cases
        del fuzz_runner.tally[key]
    fuzz_runner.failures[:] = [f for f in fuzz_runner.failures if f[0] != "self-test"]


def _oob_case():
    """A kernel reading past its buffer under NUMBA_BOUNDSCHECK=1, wrapped like the engines do."""
    import numba

    from aidge_lite.errors import ExecutionError

    @numba.njit
    def read(a, i):
        return a[i]

    try:
        read(np.zeros(3), 7)
    except IndexError as exc:
        raise ExecutionError("node 'k' (Conv): " + str(exc)) from exc
    return Outcome("agrees", "bounds checks are off")


def _traceback_case():
    return {}["missing"]


def _crash_case():
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def _hang_case():
    import time

    time.sleep(60)


def _refused_case():
    import aidge_lite

    aidge_lite.load_onnx(b"not a model")

