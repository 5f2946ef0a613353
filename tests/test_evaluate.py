"""aidge_lite.evaluate: batched predict/accuracy and the engine comparison."""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite import evaluate
from aidge_lite.errors import InputError


@pytest.fixture(scope="module")
def data(mnist):
    return mnist.test_x[::50], mnist.test_y[::50]  # 80 uint8 images, every class


def test_predict_float(mnist8, data):
    x, y = data
    out = evaluate.predict(mnist8, x, batch_size=33)
    assert out.shape == (len(x), 10) and out.dtype == np.float32
    direct = aidge_lite.run(mnist8, x.astype(np.float32))[mnist8.outputs[0]]
    np.testing.assert_allclose(out, direct, rtol=1e-4, atol=1e-2)  # batching may change BLAS summation
    assert evaluate.accuracy(mnist8, x, y) == pytest.approx(np.mean(direct.argmax(1) == y))
    assert evaluate.accuracy(mnist8, x, y) > 0.9


def test_predict_quantized_is_dequantized_and_batch_invariant(qmnist8, mnist8, data):
    x, y = data
    whole = evaluate.predict(qmnist8, x, batch_size=500, progress=True)
    parts = evaluate.predict(qmnist8, x, batch_size=7)
    assert np.array_equal(whole, parts)  # integers: batching never changes a bit
    raw = aidge_lite.run(qmnist8, x.astype(np.float32))[qmnist8.outputs[0]]
    np.testing.assert_array_equal(whole, raw / qmnist8.meta["output_scale"][qmnist8.outputs[0]])
    ref = evaluate.predict(mnist8, x)
    assert np.mean(whole.argmax(1) == ref.argmax(1)) > 0.95
    integer = evaluate.predict(qmnist8, x, engine="integer", batch_size=25)
    assert np.array_equal(integer, whole)


def test_uint8_fed_as_float32(mnist8, data):
    x, _ = data
    assert np.array_equal(evaluate.predict(mnist8, x), evaluate.predict(mnist8, x.astype(np.float32)))


def test_compare_engines(qmnist8, data):
    x, y = data
    cmp = evaluate.compare_engines(qmnist8, x, batch_size=30)
    assert cmp["samples"] == len(x) and cmp["elements"] == len(x) * 10
    assert cmp["mismatches"] == 0 and cmp["mismatching_samples"] == 0
    assert np.array_equal(cmp["reference"], cmp["integer"])
    assert evaluate.top1(cmp["integer"], y) == evaluate.accuracy(qmnist8, x, y, engine="integer")


def test_compare_engines_counts_mismatches(qmnist8, data, monkeypatch):
    x, _ = data
    real_run = evaluate.run

    def faulty(graph, inputs, *, engine="reference", **kw):
        out = real_run(graph, inputs, engine=engine, **kw)
        if engine == "integer":
            out = {k: v.copy() for k, v in out.items()}
            for v in out.values():
                v[0, 3] += 1  # one wrong element per batch
        return out

    monkeypatch.setattr(evaluate, "run", faulty)
    cmp = evaluate.compare_engines(qmnist8, x, batch_size=30)  # 3 batches
    assert cmp["mismatches"] == 3 and cmp["mismatching_samples"] == 3 and cmp["max_abs_diff"] == 1


def test_errors(mnist8, qmnist8, data):
    x, y = data
    with pytest.raises(InputError, match="not an integer graph"):
        evaluate.compare_engines(mnist8, x)
    with pytest.raises(InputError, match="batch_size"):
        evaluate.predict(mnist8, x, batch_size=0)
    with pytest.raises(InputError, match="no samples"):
        evaluate.predict(mnist8, x[:0])
    with pytest.raises(InputError, match="labels"):
        evaluate.accuracy(mnist8, x, y[:-1])
    with pytest.raises(InputError):
        evaluate.predict(mnist8, x, engine="gpu")
