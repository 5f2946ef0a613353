"""QDQ export of spec='tflite' graphs (zero points): onnxruntime runs them and agrees
with our engines up to onnxruntime's float requantization (not bit for bit)."""
import numpy as np
import pytest

import aidge_lite as al
from aidge_lite.errors import QuantizationError
from aidge_lite.export_onnx import export_qdq
from aidge_lite.models import datasets, zoo

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name", ["mnist8", "digits_mlp"])
def test_spec_tflite_qdq_runs_in_onnxruntime(name, mnist, tmp_path):
    data = datasets.digits() if name == "digits_mlp" else mnist
    q = al.quantize_network(zoo.load(name), data.calib_x[::2].astype(np.float32), spec="tflite")
    export_qdq(q, tmp_path / "m.onnx", batch_dim="N")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = data.test_x[:500].astype(np.float32)
    theirs = session.run(None, {q.inputs[0]: x})[0]
    (out,) = q.outputs
    scale, zp = q.meta["output_quantization"][out]
    codes = al.run(q, x, engine="integer")[out].astype(np.int64)
    their_codes = np.round(theirs.astype(np.float64) / scale).astype(np.int64) + zp
    steps = np.abs(their_codes - codes)
    print(f"{name}: {np.mean(steps == 0):.2%} of output codes equal, max {steps.max()} step(s)")
    assert steps.max() <= 3 and np.mean(steps == 0) >= 0.9
    assert np.mean(theirs.argmax(1) == codes.argmax(1)) >= 0.99


def test_float_graph_is_refused(mnist):
    with pytest.raises(QuantizationError, match="float graph"):
        export_qdq(zoo.load("mnist8"))
