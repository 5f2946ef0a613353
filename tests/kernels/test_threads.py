"""Thread use chosen per call (kernels.threads): counts, restoration, BLAS, and that the
result never depends on the thread count."""

import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from aidge_lite import kernels
from aidge_lite.kernels import threads


@pytest.fixture
def two_threads():
    if kernels.max_threads() < 2:
        pytest.skip("Numba started with one thread")
    previous = kernels.set_threads(2)
    yield
    kernels.set_threads(previous)


def test_threads_for_follows_the_work(two_threads):
    assert threads.threads_for(0) == 1
    assert threads.threads_for(threads.WORK_PER_THREAD - 1) == 1
    assert threads.threads_for(2 * threads.WORK_PER_THREAD) == 2
    assert threads.threads_for(100 * threads.WORK_PER_THREAD) == 2  # never above the limit
    assert threads.threads_for(100 * threads.WORK_PER_THREAD, limit=1) == 1


def test_call_with_threads_limits_then_restores(two_threads):
    seen = []

    def probe(n):
        seen.append((n, numba.get_num_threads()))
        return n

    assert threads.call_with_threads(10, probe) == 1
    assert threads.call_with_threads(10 * threads.WORK_PER_THREAD, probe) == 2
    assert seen == [(1, 1), (2, 2)]
    assert numba.get_num_threads() == 2

    def fail(n):
        raise ValueError("boom")

    with pytest.raises(ValueError):
        threads.call_with_threads(10, fail)
    assert numba.get_num_threads() == 2  # restored on error too


@pytest.mark.parametrize("x_shape, w_shape, group", [
    ((1, 8, 14, 14), (16, 8, 3, 3), 1),      # small: serial
    ((2, 32, 40, 40), (64, 32, 3, 3), 1),    # ~85 M MACs: two threads
    ((2, 64, 100, 100), (64, 1, 3, 3), 64),  # depthwise, ~13 M MACs
])
def test_conv_same_result_on_one_and_two_threads(two_threads, x_shape, w_shape, group):
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, x_shape, dtype=np.int8)
    w = rng.integers(-127, 128, w_shape, dtype=np.int8)
    b = rng.integers(-1000, 1000, w_shape[0]).astype(np.int64)
    geometry = np.array([1, 1, 1, 1, 1, 1, 1, 1, group], np.int64)
    multiplier = np.full(w_shape[0], 1 / 512.0)
    params = np.array([kernels.HALF_AWAY, -128, 127], np.int64)
    with kernels.with_threads(1):
        acc1 = kernels.conv2d(x, w, b, geometry)
        req1 = kernels.conv2d_requant(x, w, b, geometry, multiplier, params)
    acc2 = kernels.conv2d(x, w, b, geometry)
    req2 = kernels.conv2d_requant(x, w, b, geometry, multiplier, params)
    np.testing.assert_array_equal(acc1, acc2)
    np.testing.assert_array_equal(acc1, kernels.conv2d_ref(x, w, b, geometry))
    np.testing.assert_array_equal(req1[0], req2[0])
    np.testing.assert_array_equal(req1[1], req2[1])


def test_gemm_same_result_on_one_and_two_threads(two_threads):
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (300, 700), dtype=np.int8)
    b = rng.integers(-127, 128, (700, 90), dtype=np.int8)
    bias = rng.integers(-99, 99, 90).astype(np.int64)
    with kernels.with_threads(1):
        one = kernels.gemm(a, b, bias)
    np.testing.assert_array_equal(one, kernels.gemm(a, b, bias))
    np.testing.assert_array_equal(one, kernels.gemm_ref(a, b, bias))


@pytest.mark.skipif(not threads._BLAS.found, reason="numpy's OpenBLAS not found")
def test_blas_threads_follow_set_threads_and_work(two_threads):
    assert threads.get_blas_threads() == 2
    with threads.blas_threads(10):  # a small GEMM: one BLAS thread
        assert threads.get_blas_threads() == 1
    assert threads.get_blas_threads() == 2
    with threads.blas_threads(10 * threads.BLAS_WORK_PER_THREAD):
        assert threads.get_blas_threads() == 2
    with kernels.with_threads(1):
        assert threads.get_blas_threads() == 1
        with threads.blas_threads(10 * threads.BLAS_WORK_PER_THREAD):
            assert threads.get_blas_threads() == 1  # never above set_threads
    assert threads.get_blas_threads() == 2


def _wait_policy(env_value):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    code = "import os; from aidge_lite import kernels; print(os.environ['OMP_WAIT_POLICY'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_openmp_threads_sleep_unless_the_user_says_otherwise():
    assert _wait_policy(None) == "PASSIVE"
    assert _wait_policy("ACTIVE") == "ACTIVE"
