"""Samples for `aidge-lite eval` / `quantize`: built-in data sets or a validated .npz.

``--data FILE.npz``: array ``x`` (required; float or integer, N x the model's
input shape, finite), optional ``y`` (integer labels, length N) and optional
``calib_x`` (calibration samples; default ``x``). Every problem is a
`DataError` naming the file and the array.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASETS = ("mnist", "digits")


class UsageError(Exception):
    """Bad command-line arguments."""


class DataError(UsageError):
    """A --data file that cannot be used (missing array, wrong shape, NaN, ...)."""


# --------------------------------------------------------------------- data
@dataclass(frozen=True)
class Data:
    """Samples for eval / quantize; `test_y` None for an unlabelled file."""

    name: str            # "mnist", "digits" or the .npz path
    calib_x: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray | None
    from_file: bool = False

    def describe(self, n: int) -> str:
        return f"{n} samples of {self.name}" if self.from_file else f"{n} {self.name} test images"


def resolve_dataset(data: str | None, zoo_model: str | None) -> str:
    if data is not None:
        return data
    if zoo_model is not None:
        from aidge_lite.models import zoo

        return zoo.dataset(zoo_model)
    raise UsageError("--data is required for a model that is not in the zoo (mnist, digits or a .npz file)")




def load_data(spec: str) -> Data:
    """A built-in data set by name, or a .npz file (validated, see the module docstring)."""
    if spec in DATASETS:
        from aidge_lite.models import datasets

        split = datasets.mnist() if spec == "mnist" else datasets.digits()
        return Data(spec, split.calib_x, split.test_x, split.test_y)
    path = Path(spec)
    if path.suffix.lower() == ".npz" or path.exists():
        return load_npz_data(path)
    raise UsageError(f"--data '{spec}': not a data set ({', '.join(DATASETS)}) nor a .npz file")


def load_npz_data(path: Path) -> Data:
    where = f"data file {path}"
    if not path.is_file():
        raise DataError(f"{where}: no such file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{where}: not an .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:  # BadZipFile, zlib.error, ValueError (pickled object), ...
        raise DataError(f"{where}: unreadable .npz ({type(exc).__name__}: {exc})") from None
    if "x" not in arrays:
        raise DataError(f"{where}: no array 'x' (found: {', '.join(sorted(arrays)) or 'nothing'})")
    x = _checked_samples(arrays["x"], f"{where}: 'x'")
    calib_x = _checked_samples(arrays["calib_x"], f"{where}: 'calib_x'") if "calib_x" in arrays else x
    y = _checked_labels(arrays["y"], len(x), f"{where}: 'y'") if "y" in arrays else None
    return Data(str(path), calib_x, x, y, from_file=True)


def _checked_samples(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype.kind not in "fiu":
        raise DataError(f"{what} has dtype {x.dtype}: expected float or integer samples")
    if x.ndim < 2 or len(x) == 0:
        raise DataError(f"{what} has shape {x.shape}: expected N x (the model's input shape), N >= 1")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise DataError(f"{what} holds {int(np.count_nonzero(~np.isfinite(x)))} NaN/Inf value(s)")
    return x


def _checked_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    if y.dtype.kind not in "iu":
        raise DataError(f"{what} has dtype {y.dtype}: expected integer class labels")
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{what} has shape {y.shape}: expected ({n},), one label per sample of 'x'")
    return y


def check_data_fits(graph, data: Data) -> None:
    """The samples have the rank and shape the model's single input declares."""
    from aidge_lite.errors import InputError
    from aidge_lite.interp.base import check_input

    if len(graph.inputs) != 1:
        raise UsageError(f"model '{graph.name}' has {len(graph.inputs)} inputs: --data feeds one-input models")
    node = graph.node(graph.inputs[0])
    parts = {"x": data.test_x} if data.calib_x is data.test_x else {"calib_x": data.calib_x, "x": data.test_x}
    for label, x in parts.items():
        try:
            check_input(node, x)
        except InputError as exc:
            what = f"'{label}' of {data.name}" if data.from_file else f"data set '{data.name}'"
            raise DataError(f"{what} does not fit model '{graph.name}': {exc}") from None
