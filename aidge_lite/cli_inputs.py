"""MODEL and --data of the `aidge-lite` commands: a model file or zoo name to a graph,
the data set to use, and the checks that pair them (split out of `aidge_lite.cli`,
which re-exports these names).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .cli_data import check_data_fits, load_data, resolve_dataset

_ALIASES = {"mnist-8": "mnist8"}


def zoo_name(spec: str) -> str | None:
    """The zoo model `spec` names, if it is not an existing path."""
    if Path(spec).exists():
        return None
    from aidge_lite.models import zoo

    name = _ALIASES.get(spec.lower(), spec)
    return name if name in zoo.NAMES else None


def load_model(spec: str):
    """(graph, zoo name or None) from a path (.onnx / .npz) or a zoo model name."""
    import aidge_lite
    from aidge_lite import serialize

    path = Path(spec)
    if path.exists():
        if path.is_dir():
            raise FileNotFoundError(f"{spec}: is a directory, not a model file")
        if path.suffix.lower() == ".npz":
            return serialize.load(path), None
        if path.suffix.lower() == ".tflite":
            return aidge_lite.load_tflite(path), None
        return aidge_lite.load_onnx(path), None
    from aidge_lite.models import zoo

    name = _ALIASES.get(spec.lower(), spec)
    if name in zoo.NAMES:
        return aidge_lite.load_onnx(zoo.path(name)), name
    if path.suffix.lower() in (".onnx", ".npz", ".tflite") or "/" in spec or "\\" in spec:
        raise FileNotFoundError(f"model file '{spec}' does not exist")
    raise FileNotFoundError(f"model '{spec}' is neither a file nor a zoo model "
                            f"(zoo: {', '.join(zoo.NAMES)})")


def graph_kind(graph) -> str:
    """'float', 'no_quant' (scales only) or 'integer'."""
    if not graph.meta.get("quantized"):
        return "float"
    return "integer" if graph.meta.get("integer") else "no_quant"


def dataset_for(spec: str, data: str | None) -> str:
    """--data, or the zoo model's data set; a missing model is reported before a missing --data."""
    if data is not None:
        return data
    name = zoo_name(spec)
    if name is None and not Path(spec).exists():
        load_model(spec)  # raises the "not found" error
    return resolve_dataset(None, name)


def _load_inputs(args):
    """(graph, zoo name, data) for eval / quantize; the data is checked against the model."""
    data = load_data(dataset_for(args.model, args.data))  # before the (slower) model load
    graph, zoo_model = load_model(args.model)
    check_data_fits(graph, data)
    return graph, zoo_model, data


def _warn_integer_data(graph, zoo_model, data) -> None:
    """Warn when integer samples feed the float input of a float model outside the zoo.

    (Zoo models take raw values by design; a quantized graph knows its calibration
    range, and `evaluate.predict` warns when the data falls far outside it.)
    """
    import warnings

    from aidge_lite.errors import InputRangeWarning

    declared = graph.node(graph.inputs[0]).attrs.get("dtype", "float32")
    if zoo_model is not None or graph.meta.get("quantized") or np.dtype(declared).kind != "f":
        return
    arrays = {"x": data.test_x} if data.calib_x is data.test_x else {"calib_x": data.calib_x, "x": data.test_x}
    ints = {label: x for label, x in arrays.items() if x.dtype.kind in "biu"}
    if ints:
        text = ", ".join(f"'{label}' is {x.dtype} {x.min()}..{x.max()}" for label, x in ints.items())
        warnings.warn(f"{data.name}: {text}, fed unchanged as {declared} values to input '{graph.inputs[0]}'; "
                      "if the model was trained on another scale (e.g. [0, 1]), save the data scaled that "
                      "way, else the accuracy drops silently", InputRangeWarning)
