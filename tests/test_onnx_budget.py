"""`load_onnx` on untrusted models (issue 20): declared sizes are checked against a memory
budget before anything is allocated (see also `test_onnx_hardening.py`)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import aidge_lite
from aidge_lite import onnx_checks
from aidge_lite.errors import ModelLoadError

from .onnx_hardening_helpers import F, ROOT, lenet_path, model


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
