"""Shared helpers of the `load_onnx` hardening tests (`test_onnx_hardening.py`,
`test_onnx_budget.py`, `test_onnx_malformed.py`): small ONNX models and onnxruntime runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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
    import onnxruntime as ort  # the tests using it skip without it (importorskip)

    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def ort_refuses(m: onnx.ModelProto, feeds) -> bool:
    try:
        ort_run(m, feeds)
    except Exception:  # noqa: BLE001 -- any ORT failure is a refusal
        return True
    return False


def lenet_path() -> Path:
    from aidge_lite.models import zoo

    return zoo.path("lenet")
