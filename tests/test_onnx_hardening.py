"""`load_onnx` on untrusted models (issue 20): external data stays inside the folder the caller
names, declared sizes are checked against a memory budget before anything is allocated, and
malformed models that onnxruntime refuses are refused with an error naming the node or tensor."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aidge_lite
from aidge_lite import onnx_checks
from aidge_lite.errors import ModelLoadError, QuantizationError, UnsupportedOperatorError

ort = pytest.importorskip("onnxruntime")
F = TensorProto.FLOAT
ROOT = Path(__file__).resolve().parent.parent


def model(nodes, inputs, outputs, inits=(), opset=13) -> onnx.ModelProto:
    """inputs/outputs: (name, shape) float tensors; inits: TensorProtos or (name, array)."""
    inits = [t if isinstance(t, onnx.TensorProto) else numpy_helper.from_array(np.asarray(t[1]), t[0])
             for t in inits]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, F, s) for n, s in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def ort_run(m: onnx.ModelProto, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def ort_refuses(m: onnx.ModelProto, feeds) -> bool:
    try:
        ort_run(m, feeds)
    except Exception:  # noqa: BLE001 -- any ORT failure is a refusal
        return True
    return False


# ------------------------------------------------------------------ external data
SECRET = np.arange(4, dtype=np.float32)  # the bytes of a file next to the model


def external_model(location: str, **extra) -> onnx.ModelProto:
    """y = x + W, W (4 floats) stored in the external file `location`."""
    w = onnx.TensorProto(name="W", data_type=F, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in {"location": location, **extra}.items():
        entry = w.external_data.add()
        entry.key, entry.value = key, str(value)
    return model([helper.make_node("Add", ["x", "W"], ["y"])], [("x", ["N", 4])], [("y", ["N", 4])], [w])


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """tmp/model/ holds weights.bin; tmp/secret.bin sits outside; the working dir holds both."""
    inside = tmp_path / "model"
    inside.mkdir()
    (inside / "weights.bin").write_bytes(SECRET.tobytes())
    (tmp_path / "secret.bin").write_bytes(SECRET.tobytes())
    monkeypatch.chdir(tmp_path)
    return inside


@pytest.mark.parametrize("location", ["weights.bin", "model/weights.bin", "secret.bin"])
@pytest.mark.parametrize("as_bytes", [True, False])
def test_bytes_or_proto_read_no_file_without_base_dir(folder, location, as_bytes):
    """The file exists relative to the working dir, yet nothing is read: the error names the tensor."""
    m = external_model(location)
    before = m.SerializeToString()
    with pytest.raises(ModelLoadError, match="tensor 'W'.*pass base_dir"):
        aidge_lite.load_onnx(before if as_bytes else m)
    assert m.SerializeToString() == before  # the caller's ModelProto is left as it was


@pytest.mark.parametrize("as_bytes", [True, False])
def test_base_dir_reads_inside_the_folder(folder, as_bytes):
    m = external_model("weights.bin")
    graph = aidge_lite.load_onnx(m.SerializeToString() if as_bytes else m, base_dir=folder)
    np.testing.assert_array_equal(graph.constant("W"), SECRET)
    assert m.graph.initializer[0].data_location == TensorProto.EXTERNAL  # resolved in a copy
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(aidge_lite.run(graph, x)["y"], x + SECRET)


def test_path_reads_its_own_folder(folder):
    path = folder / "m.onnx"
    onnx.save(external_model("weights.bin", offset=0, length=16), path)
    np.testing.assert_array_equal(aidge_lite.load_onnx(path).constant("W"), SECRET)


def test_symlink_inside_the_folder_is_followed(folder):
    (folder / "link.bin").symlink_to(folder / "weights.bin")
    graph = aidge_lite.load_onnx(external_model("link.bin"), base_dir=folder)
    np.testing.assert_array_equal(graph.constant("W"), SECRET)


HOSTILE = {
    "parent": ("../secret.bin", "no '..'"),
    "nested parent": ("sub/../../secret.bin", "no '..'"),
    "absolute": (None, "not absolute"),  # the absolute path of secret.bin
    "symlink out": ("escape.bin", "outside the model's folder"),
    "folder": (".", "not a regular file"),
    "fifo": ("pipe", "not a regular file"),  # would block a read forever
    "missing": ("nothing.bin", "not a regular file"),
    "past the end": ("weights.bin", "holds 16 bytes, needs 20"),
    "wrong length": ("weights.bin", "external length 8 != 16"),
    "bad offset": ("weights.bin", "offset 'x' is not an int"),
}
_EXTRA = {"past the end": {"offset": 4}, "wrong length": {"length": 8}, "bad offset": {"offset": "x"}}


def _hostile(name, folder) -> onnx.ModelProto:
    location, _ = HOSTILE[name]
    if name == "absolute":
        location = str(folder.parent / "secret.bin")
    if name == "symlink out":
        (folder / "escape.bin").symlink_to(folder.parent / "secret.bin")
    if name == "fifo":
        os.mkfifo(folder / "pipe")
    return external_model(location, **_EXTRA.get(name, {}))


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("how", ["base_dir", "path"])
def test_hostile_locations_are_refused(folder, name, how):
    m = _hostile(name, folder)
    with pytest.raises(ModelLoadError, match=f"tensor 'W'.*{HOSTILE[name][1]}"):
        if how == "base_dir":
            aidge_lite.load_onnx(m.SerializeToString(), base_dir=folder)
        else:
            path = folder / "m.onnx"
            path.write_bytes(m.SerializeToString())
            aidge_lite.load_onnx(path)


def test_base_dir_must_be_a_folder(folder):
    with pytest.raises(ModelLoadError, match="base_dir .* is not a folder"):
        aidge_lite.load_onnx(external_model("weights.bin"), base_dir=folder / "weights.bin")


def test_external_tensor_in_a_constant_node_is_refused(folder):
    """Tensors in node attributes (Constant) are external data too."""
    w = external_model("weights.bin").graph.initializer[0]
    m = model([helper.make_node("Constant", [], ["W"], value=w), helper.make_node("Add", ["x", "W"], ["y"])],
              [("x", ["N", 4])], [("y", ["N", 4])])
    with pytest.raises(ModelLoadError, match="tensor 'W' .*attribute 'value'.*pass base_dir"):
        aidge_lite.load_onnx(m)


# ------------------------------------------------------------------ memory budget
# Peak RSS of this process: VmHWM (the peak of its own memory map). getrusage's ru_maxrss also
# keeps the parent's RSS at fork when the child was forked before exec (under pytest-xdist: 219 MB
# before loading anything), so it is printed but not the bound.
_BUDGET_SCRIPT = r"""
import json, resource, sys, time
from pathlib import Path
import aidge_lite

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

aidge_lite.load_onnx  # import onnx and the importer before measuring
out = {"baseline_mb": peak_mb()}
for path in sorted(Path(sys.argv[1]).glob("*.onnx")):
    data = path.read_bytes()
    t0 = time.perf_counter()
    try:
        aidge_lite.load_onnx(data)
        out[path.stem] = {"error": None}
    except Exception as exc:
        out[path.stem] = {"error": type(exc).__name__, "message": str(exc)}
    out[path.stem]["seconds"] = time.perf_counter() - t0
    out[path.stem]["maxrss_mb"] = peak_mb()
    out[path.stem]["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""
E10 = 10**10


def huge_models() -> dict:
    """Models each declaring one tensor of 10**10 elements (40 GB of float32), by name of the tensor."""
    vi = helper.make_tensor_value_info
    pads = np.array([0, 0, 50_000, 50_000, 0, 0, 50_000, 50_000], np.int64)
    return {
        "W": model([helper.make_node("Add", ["x", "W"], ["y"])], [("x", [1])], [("y", [E10])],
                   [onnx.TensorProto(name="W", data_type=F, dims=[E10])]),
        "x": model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, E10])], [("y", [1, E10])]),
        "batch": model([helper.make_node("Relu", ["batch"], ["y"])], [("batch", [E10, 1])], [("y", [E10, 1])]),
        # declared batch 0 (an empty tensor) but 10**10 elements per sample (a fuzz finding)
        "empty": model([helper.make_node("Relu", ["empty"], ["y"])], [("empty", [0, 1, E10])], [("y", [0, 1, E10])]),
        "reshaped": model([helper.make_node("Reshape", ["x", "s"], ["reshaped"])], [("x", ["N", 4])],
                          [("reshaped", [E10])], [("s", np.array([E10], np.int64))]),
        "filled": helper.make_model(helper.make_graph(
            [helper.make_node("ConstantOfShape", ["s"], ["filled"]), helper.make_node("Add", ["x", "filled"], ["y"])],
            "g", [vi("x", F, ["N", 1, 1])], [vi("y", F, ["a", "b", "c"])],
            [numpy_helper.from_array(np.array([1, 100_000, 100_000], np.int64), "s")]),
            opset_imports=[helper.make_opsetid("", 13)]),
        "padded": model([helper.make_node("Pad", ["x", "p"], ["padded"])], [("x", ["N", 1, "H", "W"])],
                        [("padded", ["a", "b", "c", "d"])], [("p", pads)]),
    }


def test_huge_declared_tensors_are_refused_without_allocating(tmp_path):
    """Each 10**10-element tensor is refused by name and size; the process (aidge_lite and onnx
    imported, nothing else) stays under 200 MB."""
    for name, m in huge_models().items():
        (tmp_path / f"{name}.onnx").write_bytes(m.SerializeToString())
    proc = subprocess.run([sys.executable, "-c", _BUDGET_SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"after import: peak RSS {results.pop('baseline_mb'):.0f} MB")
    assert set(results) == set(huge_models())
    for name, r in results.items():
        print(f"{name}: {r['seconds']:.4f} s, peak RSS {r['maxrss_mb']:.0f} MB "
              f"(ru_maxrss {r['ru_maxrss_mb']:.0f} MB)")  # bench numbers (-s)
        assert r["error"] == "ModelLoadError", (name, r)
        assert f"'{name}'" in r["message"] and "over the budget" in r["message"], r["message"]
        assert r["maxrss_mb"] < 200, (name, r)


def lenet_path() -> Path:
    from aidge_lite.models import zoo

    return zoo.path("lenet")


def test_budget_is_configurable_per_call_and_per_module(monkeypatch):
    sizes = {t.name: t for t in onnx.load(str(lenet_path())).graph.initializer}
    name, biggest = max(sizes.items(), key=lambda kv: np.prod(kv[1].dims))
    nbytes = int(np.prod(biggest.dims)) * 4
    with pytest.raises(ModelLoadError, match=f"tensor '{name}' .*{nbytes:,} bytes, over the budget of {nbytes - 1:,}"):
        aidge_lite.load_onnx(lenet_path(), max_tensor_bytes=nbytes - 1)
    aidge_lite.load_onnx(lenet_path(), max_tensor_bytes=nbytes)
    monkeypatch.setattr(onnx_checks, "MAX_TENSOR_BYTES", 1000)
    with pytest.raises(ModelLoadError, match="over the budget of 1,000"):
        aidge_lite.load_onnx(lenet_path())


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1GB", True])
def test_budget_must_be_a_positive_int(bad):
    with pytest.raises(ModelLoadError, match="max_tensor_bytes"):
        aidge_lite.load_onnx(lenet_path(), max_tensor_bytes=bad)


def test_stored_data_must_match_the_dims():
    w = numpy_helper.from_array(np.ones(4, np.float32), "W")
    w.raw_data = w.raw_data[:12]
    m = model([helper.make_node("Add", ["x", "W"], ["y"])], [("x", ["N", 4])], [("y", ["N", 4])], [w])
    with pytest.raises(ModelLoadError, match="tensor 'W' .*12 stored values/bytes, its dims \\[4\\] need 16"):
        aidge_lite.load_onnx(m)


# ------------------------------------------------------------------ malformed models
W33 = ("W", np.ones((4, 1, 3, 3), np.float32))
X = [("x", ["N", 1, 8, 8])]
Y4 = [("y", ["a", "b", "c", "d"])]
Y2 = [("y", ["a", "b"])]


def _conv(inits=(W33,), **attrs):
    inputs = ["x", "W"] + (["B"] if len(inits) > 1 else [])
    return model([helper.make_node("Conv", inputs, ["y"], **attrs)], X, Y4, inits)


def _pool(**attrs):
    return model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], X, Y4)


def _gemm(c_shape):
    return model([helper.make_node("Gemm", ["x", "G", "C"], ["y"])], [("x", ["N", 4])], Y2,
                 [("G", np.ones((4, 3), np.float32)), ("C", np.ones(c_shape, np.float32))])


MALFORMED = {  # name: (model, error class, message)
    "conv kernel_shape": (_conv(kernel_shape=[5, 5]), ModelLoadError, "node 'y' \\(Conv\\): kernel_shape=\\[5, 5\\] contradicts"),
    "conv pads length": (_conv(pads=[1, 1]), ModelLoadError, "node 'y' \\(Conv\\): pads=\\[1, 1\\]: expected 4"),
    "conv auto_pad": (_conv(auto_pad="FOO"), ModelLoadError, "node 'y' \\(Conv\\): auto_pad='FOO'"),
    "conv negative pads": (_conv(pads=[-1, 0, 0, 0]), ModelLoadError, "node 'y' \\(Conv\\): pads=\\[-1, 0, 0, 0\\]"),
    "conv stride 0": (_conv(strides=[0, 1]), ModelLoadError, "strides"),
    "conv bias (1, 4)": (_conv((W33, ("B", np.ones((1, 4), np.float32)))), ModelLoadError,
                         "bias 'B' has shape \\[1, 4\\], expected \\[4\\]"),
    "flatten axis": (model([helper.make_node("Flatten", ["x"], ["y"], axis=7)], X, Y2), ModelLoadError,
                     "Invalid value\\(7\\) for attribute 'axis'"),
    "maxpool dilation 0": (_pool(kernel_shape=[2, 2], dilations=[0, 1]), ModelLoadError, "dilations"),
    "maxpool dilation -1": (_pool(kernel_shape=[2, 2], dilations=[-1, 1]), ModelLoadError, "dilations"),
    "maxpool pads >= kernel": (_pool(kernel_shape=[2, 2], pads=[2, 0, 0, 0]), ModelLoadError,
                               "node 'y' \\(MaxPool\\): pads=\\[2, 0, 0, 0\\] must be smaller than kernel"),
    "avgpool auto_pad": (model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], auto_pad="X")],
                               X, Y4), ModelLoadError, "node 'y' \\(AveragePool\\): auto_pad='X'"),
    "gemm C (2, 1, 3)": (_gemm((2, 1, 3)), ModelLoadError, "C 'C' of shape \\[2, 1, 3\\] does not broadcast"),
    "gemm C (5, 3)": (_gemm((5, 3)), ModelLoadError, "C 'C' of shape \\[5, 3\\] does not broadcast to the output shape \\[1, 3\\]"),
    "clip bound (2,)": (model([helper.make_node("Clip", ["x", "lo"], ["y"])], [("x", ["N", 4])], Y2,
                              [("lo", np.zeros(2, np.float32))]), ModelLoadError, "node 'y' \\(Clip\\): min 'lo' of shape \\[2\\] is not a scalar"),
}


def _int_input(op, elem, shape, inits=()):
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in inits]
    inputs = ["x"] + [t.name for t in inits]
    g = helper.make_graph([helper.make_node(op, inputs, ["y"])], "g",
                          [helper.make_tensor_value_info("x", elem, shape)],
                          [helper.make_tensor_value_info("y", elem, ["a"] * len(shape))], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


MALFORMED.update({
    "relu on int64": (_int_input("Relu", TensorProto.INT64, ["N", 4]), UnsupportedOperatorError,
                      "node 'x': .*a int64 graph input"),
    "add on int32": (_int_input("Add", TensorProto.INT32, ["N", 4], [("k", np.ones(4, np.int32))]),
                     UnsupportedOperatorError, "node 'x': .*a int32 graph input"),
    "clip bound (1, 1)": (model([helper.make_node("Clip", ["x", "lo"], ["y"])], [("x", ["N", 4])], Y2,
                                [("lo", np.zeros((1, 1), np.float32))]), ModelLoadError, "min 'lo' of shape \\[1, 1\\] is not a scalar"),
})
MALFORMED.update({
    "batchnorm B (1, 1)": (model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])], X, Y4,
                                 [("s", np.ones(1, np.float32)), ("b", np.ones((1, 1), np.float32)),
                                  ("m", np.zeros(1, np.float32)), ("v", np.ones(1, np.float32))]),
                           ModelLoadError, "node 'y' \\(BatchNormalization\\): 'b' has shape \\[1, 1\\], expected \\[1\\]"),
    "conv channels": (_conv((("W", np.ones((4, 2, 3, 3), np.float32)),)), ModelLoadError,
                      "input 'x' has 1 channels, the weights 'W' \\[4, 2, 3, 3\\] with group=1 take 2"),
    "global pool rank 2": (model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], [("x", ["N", 4])], Y2),
                           ModelLoadError, "input 'x' has rank 2, expected >= 3"),
    # a dead branch (pruned by the import, validated by ORT) reading a 1-D initializer
    "dead concat": (model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["K"], ["k"]),
                           helper.make_node("Concat", ["y", "k"], ["dead"], axis=0)], X, Y4,
                          [("K", np.ones(3, np.float32))]), ModelLoadError, "Concat must have same rank"),
})
MALFORMED["same node name"] = (model([helper.make_node("Relu", ["x"], ["r"], name="n"),
                                     helper.make_node("Relu", ["r"], ["y"], name="n")], X, Y4),
                              ModelLoadError, "two nodes are named 'n'")
MALFORMED["dropout mode (2,)"] = (
    model([helper.make_node("Dropout", ["x", "", "t"], ["y"])], X, Y4,
          [numpy_helper.from_array(np.zeros(2, bool), "t")], opset=13),
    ModelLoadError, "training_mode 't' of shape \\[2\\] is not a scalar")  # was a ValueError
MALFORMED["conv auto_pad + pads"] = (_conv(auto_pad="SAME_UPPER", pads=[1, 1, 1, 1]), ModelLoadError,
                                     "has both auto_pad and pads")
# ORT runs this valid model, which we refuse: an int32 Add computed in float would not wrap.
ORT_RUNS = {"add on int32"}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_model_is_refused_like_onnxruntime(name):
    m, error, match = MALFORMED[name]
    with pytest.raises(error, match=match):
        aidge_lite.load_onnx(m)
    inp = m.graph.input[0]
    dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    assert ort_refuses(m, {"x": np.ones(shape, dtype)}) == (name not in ORT_RUNS)


def test_clip_bound_of_shape_1_is_a_scalar():
    """ORT takes a bound of shape (1,); the importer did `float()` of a 1-D array (TypeError)."""
    m = model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], [("x", ["N", 4])], Y2,
              [("lo", np.zeros(1, np.float32)), ("hi", np.array(2.0, np.float32))])
    x = np.linspace(-3, 3, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(aidge_lite.run(aidge_lite.load_onnx(m), x)["y"], ort_run(m, {"x": x})[0])


def test_output_from_initializers_only_runs_and_quantize_refuses_it():
    """The float reference gives the constant (like ORT); quantize_network refuses it by name
    before any pass runs (was a KeyError at its last pass)."""
    m = model([helper.make_node("Gemm", ["x", "G"], ["y"]), helper.make_node("Identity", ["K"], ["k"])],
              [("x", ["N", 4])], [("y", ["N", 3]), ("k", [1, 4])],
              [("G", np.ones((4, 3), np.float32)), ("K", np.arange(4, dtype=np.float32).reshape(1, 4))])
    graph = aidge_lite.load_onnx(m)
    x = np.ones((2, 4), np.float32)
    ours, ref = aidge_lite.run(graph, x), ort_run(m, {"x": x})
    np.testing.assert_array_equal(ours["k"], ref[1])
    np.testing.assert_array_equal(ours["y"], ref[0])
    with pytest.raises(QuantizationError, match="graph output 'k' depends on no graph input"):
        aidge_lite.quantize_network(graph, np.random.default_rng(0).random((8, 4), np.float32))


def test_deep_chain_loads():
    n = 3000
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(n)]
    graph = aidge_lite.load_onnx(model(nodes, [("t0", ["N", 3])], [(f"t{n}", ["N", 3])]))
    x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    np.testing.assert_array_equal(aidge_lite.run(graph, x)[f"t{n}"], np.maximum(x, 0))


def test_recursion_and_memory_errors_become_model_load_errors(monkeypatch):
    from aidge_lite.interp import shapes

    for exc, match in ((RecursionError, "nests too deeply"), (MemoryError, "does not fit in memory")):
        def boom(graph, exc=exc):
            raise exc()
        monkeypatch.setattr(shapes, "infer_shapes", boom)
        with pytest.raises(ModelLoadError, match=match):
            aidge_lite.load_onnx(lenet_path())


def test_deeply_nested_bytes_are_a_clean_error():
    """Subgraphs nested past protobuf's depth limit: a parse error, not a crash or a RecursionError."""
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "leaf", [],
                             [helper.make_tensor_value_info("o", F, ["N", 3])])
    data = leaf.SerializeToString()
    for _ in range(200):  # GraphProto{node: NodeProto{attribute: AttributeProto{g: <data>}}}, by hand
        attr = _field(5, b"\x0a\x01g" + b"\x20\x05" + _field(6, data))  # name, type=GRAPH, g
        node = _field(1, b"c") + _field(2, b"o") + _field(4, b"If") + attr
        data = _field(1, node)
    model_bytes = b"\x08\x08" + _field(7, data) + _field(8, b"\x10\x0d")  # ir_version 8, graph, opset 13
    with pytest.raises((ModelLoadError, UnsupportedOperatorError)):
        aidge_lite.load_onnx(model_bytes)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_non_finite_weights_are_refused_at_load_and_by_quantize():
    """A -Inf weight gives NaN in a Conv that ORT's Relu turns into 0 and ours keeps: refused at
    load, by name. A graph built otherwise is refused by the PTQ before any pass (was a
    ZeroDivisionError in normalize_parameters)."""
    g = np.ones((4, 3), np.float32)
    g[1, 2] = -np.inf
    m = model([helper.make_node("Gemm", ["x", "G"], ["y"])], [("x", ["N", 4])], [("y", ["N", 3])], [("G", g)])
    with pytest.raises(ModelLoadError, match="tensor 'G' \\(initializer\\) holds NaN or Inf"):
        aidge_lite.load_onnx(m)
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((4, 3), np.float32), "G"))
    graph = aidge_lite.load_onnx(m)
    graph.set_constant("G", g)
    with pytest.raises(QuantizationError, match="constant 'G' holds NaN or Inf"):
        aidge_lite.quantize_network(graph, np.random.default_rng(0).random((8, 4), np.float32))


@pytest.mark.parametrize("data_type", [99, 0])
def test_unknown_tensor_data_type_is_a_clean_error(data_type):
    w = numpy_helper.from_array(np.ones(4, np.float32), "W")
    w.data_type = data_type
    m = model([helper.make_node("Add", ["x", "W"], ["y"])], [("x", ["N", 4])], [("y", ["N", 4])], [w])
    with pytest.raises(ModelLoadError, match="tensor name: W|tensor 'W'"):
        aidge_lite.load_onnx(m)
