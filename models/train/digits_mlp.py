"""64-64-32-10 ReLU MLP on sklearn digits -> models/onnx/digits_mlp.onnx.

scikit-learn ``MLPClassifier(hidden_layer_sizes=(64, 32), activation="relu")``
trained on ``models.datasets.digits()`` train split (1,078 images) scaled by
1/16.  The ONNX graph is written directly with ``onnx.helper`` (opset 13):

    input [N, 64] (raw 0..16) -> Gemm(64) -> Relu -> Gemm(32) -> Relu -> Gemm(10) -> logits

with the 1/16 input scale folded into the first Gemm's weights.  The
exported logits are the pre-softmax values of the sklearn model and are
checked against it with onnxruntime.  Run: ``python -m aidge_lite.models.train.digits_mlp``.
"""

import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from aidge_lite.models import datasets
from aidge_lite.models.train import common

SCALE = 1.0 / 16.0


def train():
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    s = datasets.digits()
    clf = MLPClassifier(
        hidden_layer_sizes=(64, 32),
        activation="relu",
        solver="adam",
        alpha=1e-3,
        learning_rate_init=3e-3,
        max_iter=600,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(s.train_x * SCALE, s.train_y)
    assert list(clf.classes_) == list(range(10))
    return clf


def sklearn_logits(clf, x_scaled: np.ndarray) -> np.ndarray:
    h = x_scaled.astype(np.float64)
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        h = h @ w + b
        if i < len(clf.coefs_) - 1:
            h = np.maximum(h, 0)
    return h


def to_onnx(clf) -> onnx.ModelProto:
    weights = [w.astype(np.float32) for w in clf.coefs_]  # (in, out)
    biases = [b.astype(np.float32) for b in clf.intercepts_]
    weights[0] = (clf.coefs_[0] * SCALE).astype(np.float32)  # fold x/16
    nodes, inits = [], []
    cur = "input"
    for i, (w, b) in enumerate(zip(weights, biases)):
        wn, bn, out = f"fc{i + 1}.weight", f"fc{i + 1}.bias", f"fc{i + 1}"
        inits += [numpy_helper.from_array(w, wn), numpy_helper.from_array(b, bn)]
        last = i == len(weights) - 1
        nodes.append(helper.make_node("Gemm", [cur, wn, bn], ["logits" if last else out], name=f"Gemm_{i + 1}"))
        cur = out
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i + 1}"], name=f"Relu_{i + 1}"))
            cur = f"relu{i + 1}"
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", common.OPSET)])
    model.ir_version = 8
    return model


def main():
    common.seed_everything()
    clf = train()
    s = datasets.digits()
    print(f"[digits_mlp] sklearn test acc {clf.score(s.test_x * SCALE, s.test_y):.4f}")
    onx = to_onnx(clf)
    common.check_onnx(onx)
    ref = sklearn_logits(clf, s.test_x * SCALE)
    got = common.ort_run(onx, s.test_x)
    diff = float(np.abs(got - ref).max())
    print(f"[digits_mlp] ORT vs sklearn: max|diff| = {diff:.2e}")
    assert diff < 1e-3, diff
    assert np.array_equal(got.argmax(1), clf.predict(s.test_x * SCALE))
    path = common.save_onnx(onx, "digits_mlp", __doc__)
    print(f"[digits_mlp] wrote {path} ({path.stat().st_size} bytes)")
    return path


if __name__ == "__main__":
    main()
