"""Calibration data: every accepted source gives the same result; bad data is refused clearly."""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite.errors import AidgeLiteError, CalibrationError
from aidge_lite.ir import OpType
from aidge_lite.ir.node import META_RANGE
from aidge_lite.ptq import PTQConfig, run_pipeline
from aidge_lite.ptq.calibrate import calibrate
from aidge_lite.ptq.calibration_data import CalibrationSet
from aidge_lite.ptq.insert_scaling import insert_scaling
from aidge_lite.ptq.normalize_parameters import normalize_parameters
from aidge_lite.ptq.prepare import prepare

from . import builders as B

X = B.mlp_calibration(300, seed=2)
BATCHES = [X[i:i + 64] for i in range(0, len(X), 64)]


class ReIterable:
    """A re-iterable source (iter() returns a fresh iterator each time)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(list(self.batches))


SOURCES = {
    "array": lambda: X,
    "list": lambda: list(BATCHES),
    "tuple": lambda: tuple(BATCHES),
    "callable": lambda: (lambda: (b for b in BATCHES)),
    "reiterable": lambda: ReIterable(BATCHES),
    "one_shot_generator": lambda: (b for b in BATCHES),
}


def fingerprint(q):
    """Every constant and every quantizer / scaling attribute of a quantized graph."""
    out = {}
    for node in q.topo_order():
        if node.op is OpType.CONSTANT:
            out[node.name] = np.asarray(node.attrs["value"])
        elif node.op in (OpType.QUANTIZER, OpType.SCALING):
            out[node.name] = (np.asarray(node.attrs["scale"]), node.attrs.get("lo"), node.attrs.get("hi"))
        elif node.op in (OpType.CONV, OpType.GEMM):
            out[node.name] = np.asarray(node.attrs["weight_scale"])
    out["__output_scale__"] = q.meta["output_scale"]
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], tuple):
            np.testing.assert_array_equal(a[key][0], b[key][0], err_msg=key)
            assert a[key][1:] == b[key][1:], key
        elif isinstance(a[key], dict):
            assert a[key] == b[key]
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            assert a[key].dtype == b[key].dtype, key


@pytest.fixture(scope="module")
def reference_mlp():
    return fingerprint(aidge_lite.quantize_network(B.mlp3(), X))


@pytest.mark.parametrize("source", list(SOURCES))
def test_sources_give_identical_quantization(source, reference_mlp):
    q = aidge_lite.quantize_network(B.mlp3(), SOURCES[source]())
    assert q.meta["calibration_samples"] == len(X)
    assert_same(fingerprint(q), reference_mlp)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_batch_size_does_not_change_ranges(batch_size):
    """max|x| over the set does not depend on how the array is cut (checked on the ranges)."""
    def ranges(bs):
        g = B.mlp3()
        run_pipeline(g, PTQConfig(calibration=CalibrationSet(X, bs)),
                     passes=(prepare, insert_scaling, normalize_parameters, calibrate))
        return {n.name: n.meta[META_RANGE] for n in g.topo_order() if META_RANGE in n.meta}
    base, other = ranges(256), ranges(batch_size)
    assert base.keys() == other.keys()
    for name in base:
        assert other[name] == pytest.approx(base[name], rel=1e-12), name


def test_sources_identical_on_a_zoo_model():
    from .test_prepare import load_or_skip
    from aidge_lite.models import datasets

    graph = load_or_skip("lenet")
    x = np.asarray(datasets.mnist().calib_x[::10][:96], np.float32)  # all ten classes
    batches = [x[i:i + 32] for i in range(0, len(x), 32)]
    ref = fingerprint(aidge_lite.quantize_network(graph, x, batch_size=32))
    for source in (batches, lambda: iter(batches), ReIterable(batches), iter(batches)):
        assert_same(fingerprint(aidge_lite.quantize_network(graph, source)), ref)


def test_integer_dtype_calibration_accepted():
    """uint8 images (the datasets' dtype) calibrate like their float32 conversion."""
    x = np.arange(30, dtype=np.uint8).reshape(10, 3)
    a = fingerprint(aidge_lite.quantize_network(B.mlp3(), x))
    b = fingerprint(aidge_lite.quantize_network(B.mlp3(), x.astype(np.float32)))
    assert_same(a, b)


def test_one_shot_generator_read_once():
    cs = CalibrationSet(b for b in BATCHES)
    graph = B.mlp3()
    assert sum(len(b) for b in cs.batches(graph)) == len(X)
    with pytest.raises(CalibrationError, match="one-shot"):
        list(cs.batches(graph))


def test_callable_and_reiterable_can_be_read_twice():
    graph = B.mlp3()
    for data in (lambda: iter(BATCHES), ReIterable(BATCHES), BATCHES, X):
        cs = CalibrationSet(data)
        first = sum(len(b) for b in cs.batches(graph))
        second = sum(len(b) for b in cs.batches(graph))
        assert first == second == len(X)


def test_empty_batches_are_skipped():
    data = [X[:0], X[:10], np.zeros((0, 3), np.float32), X[10:20]]
    q = aidge_lite.quantize_network(B.mlp3(), data)
    assert q.meta["calibration_samples"] == 20


# ------------------------------------------------------------------------ bad data
@pytest.mark.parametrize("data", [
    pytest.param(lambda: np.zeros((0, 3), np.float32), id="empty_array"),
    pytest.param(lambda: [], id="empty_list"),
    pytest.param(lambda: (b for b in []), id="empty_generator"),
    pytest.param(lambda: (lambda: iter([])), id="empty_callable"),
    pytest.param(lambda: [np.zeros((0, 3), np.float32)], id="only_empty_batches"),
])
def test_empty_calibration(data):
    with pytest.raises(CalibrationError, match="empty"):
        aidge_lite.quantize_network(B.mlp3(), data())


def test_empty_mnist_shaped_calibration():
    with pytest.raises(CalibrationError, match="empty"):
        aidge_lite.quantize_network(B.no_affine(), np.zeros((0, 1, 4, 4), np.float32))


def test_none_calibration():
    with pytest.raises(CalibrationError, match="required"):
        aidge_lite.quantize_network(B.mlp3(), None)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_calibration_names_the_input(bad):
    x = X.copy()
    x[5, 1] = bad
    with pytest.raises(CalibrationError, match=r"NaN/Inf.*'x'"):
        aidge_lite.quantize_network(B.mlp3(), x)


def test_non_finite_in_a_later_batch():
    bad = X[:10].copy()
    bad[0, 0] = np.nan
    with pytest.raises(CalibrationError, match=r"batch 2.*'x'"):
        aidge_lite.quantize_network(B.mlp3(), [X[:10], X[10:20], bad])


@pytest.mark.parametrize("shape, pattern", [
    ((8, 4), r"'x'.*shape"),          # wrong feature size
    ((8, 3, 1), r"'x'.*rank"),        # wrong rank
    ((3,), r"'x'.*rank"),             # one sample without its batch axis
])
def test_calibration_shape_mismatch(shape, pattern):
    with pytest.raises(CalibrationError, match=pattern):
        aidge_lite.quantize_network(B.mlp3(), np.ones(shape, np.float32))


def test_calibration_shape_mismatch_image_model():
    graph = B.residual_conv()
    with pytest.raises(CalibrationError, match=r"'x'.*shape"):
        aidge_lite.quantize_network(graph, np.ones((4, 2, 5, 5), np.float32))
    with pytest.raises(CalibrationError, match=r"'x'.*rank"):
        aidge_lite.quantize_network(graph, np.ones((4, 72), np.float32))


@pytest.mark.parametrize("data, error, pattern", [
    pytest.param(lambda x: np.zeros((0, 1, 28, 28), np.float32), CalibrationError, "empty", id="empty_array"),
    pytest.param(lambda x: [], CalibrationError, "'input'.*empty", id="empty_list"),
    pytest.param(lambda x: (b for b in ()), CalibrationError, "'input'.*empty", id="empty_generator"),
    pytest.param(lambda x: np.where(np.arange(x.size).reshape(x.shape) == 100, np.nan, x),
                 CalibrationError, "NaN/Inf.*'input'", id="nan"),
    pytest.param(lambda x: [x[:4], np.full_like(x[:4], np.inf)], CalibrationError,
                 "batch 1.*NaN/Inf.*'input'", id="inf_second_batch"),
    pytest.param(lambda x: x[:, :, :27, :27], CalibrationError, "'input'.*shape", id="wrong_shape"),
    pytest.param(lambda x: x.reshape(len(x), 784), CalibrationError, "'input'.*rank", id="wrong_rank"),
    pytest.param(lambda x: x[0], CalibrationError, "'input'.*rank", id="no_batch_axis"),
])
def test_bad_calibration_on_lenet(data, error, pattern):
    from aidge_lite.models import datasets

    graph = B.load_zoo_or_skip("lenet")
    x = np.asarray(datasets.mnist().calib_x[:8], np.float32)
    with pytest.raises(error, match=pattern):
        aidge_lite.quantize_network(graph, data(x))


def test_non_numeric_calibration():
    with pytest.raises(CalibrationError, match="'x'.*numeric"):
        aidge_lite.quantize_network(B.mlp3(), np.array([["a", "b", "c"]]))


@pytest.mark.parametrize("data", [3.0, np.float32(3.0), np.array(3.0)], ids=["float", "np_scalar", "0d"])
def test_scalar_calibration_is_a_calibration_error(data):
    with pytest.raises(CalibrationError):
        aidge_lite.quantize_network(B.mlp3(), data)


def test_calibration_errors_are_aidge_errors():
    assert issubclass(CalibrationError, AidgeLiteError) and issubclass(CalibrationError, ValueError)


def test_observers_see_each_value_before_an_in_place_op_overwrites_it():
    """The observers let Relu / Clip / scaling write into their operand (`observes_only`):
    every range must still be the one of the value as produced (a scaled conv output's
    negatives included), equal to a walk that keeps every tensor."""
    from aidge_lite.interp.reference import ReferenceInterpreter
    from aidge_lite.ptq.calibrate import RangeObserver

    graph = B.residual_conv()
    run_pipeline(graph, PTQConfig(), [prepare, insert_scaling, normalize_parameters])
    x = np.random.default_rng(7).standard_normal((6, *graph.node(graph.inputs[0]).attrs["shape"][1:]))
    observer = RangeObserver()
    observer.run(graph, x)
    values = ReferenceInterpreter(np.float64).run(graph, x, intermediates=True)
    observer.keep_all = False  # as during its walk (reset when `run` returns)
    overwritten = 0
    for node in graph.topo_order():
        if node.op in (OpType.CONSTANT, OpType.INPUT):
            continue
        value = values[node.name]
        assert node.meta["min"] == value.min() and node.meta["max"] == value.max(), node.name
        readers = graph.consumers(node.name)
        if len(readers) == 1 and readers[0].op in (OpType.RELU, OpType.SCALING) and observer.owns(readers[0]):
            overwritten += 1
    assert overwritten  # the walk did write in place


@pytest.mark.parametrize("op, attrs", [(OpType.RELU, {}), (OpType.CLIP, {"min": 0.0, "max": 0.5}),
                                       (OpType.CLIP, {"min": -0.25}), (OpType.CLIP, {"max": -0.1}),
                                       (OpType.FLATTEN, {"axis": 1})])
def test_monotone_ops_take_their_bounds_from_the_operand_exactly(op, attrs):
    """Relu, Clip and reshaping ops are not scanned: their min / max come from the operand's,
    and must equal the scanned ones bit for bit (here over several batches)."""
    from aidge_lite.interp.reference import ReferenceInterpreter
    from aidge_lite.ptq.calibrate import RangeObserver, _monotone_bounds

    graph = aidge_lite.Graph("mono")
    B.add_input(graph, "x", [None, 6])
    B.add_gemm(graph, "fc", "x", np.random.default_rng(1).standard_normal((3, 6)))
    B.add_op(graph, "y", op, ["fc"], **attrs)
    graph = B.finish(graph, ["y"])
    observer = RangeObserver()
    scanned = []
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((5, 6)) * (seed + 1)
        observer.run(graph, x)
        assert _monotone_bounds(graph.node("y"), observer.bounds["fc"]) is not None  # not scanned
        scanned.append(ReferenceInterpreter(np.float64).run(graph, x, intermediates=True)["y"])
    y = np.concatenate(scanned)
    node = graph.node("y")
    assert (node.meta["min"], node.meta["max"]) == (y.min(), y.max())
    assert node.meta[META_RANGE] == np.abs(y).max()
