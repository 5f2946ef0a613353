"""External data of an untrusted ONNX model, and the walk over every tensor a model stores.

A tensor whose bytes live in another file is read only from inside a base folder the caller
named (a model given as a path: its folder); a model given as bytes or a ModelProto reads no
file at all unless `load_onnx(..., base_dir=...)` names one. Locations that are absolute,
contain `..`, or resolve (symlinks included) outside the folder are refused, and so are files
that are not regular files (a FIFO or a device would block or never end). onnx's own loader
resolves a relative location against the working directory when given bytes: a service
loading uploaded models would hand out its files.
"""
from __future__ import annotations

import math
import os

import onnx

from .errors import ModelLoadError

_EXTERNAL = onnx.TensorProto.EXTERNAL


# ------------------------------------------------------------------ tensors of a model
def _graphs(graph: onnx.GraphProto):
    """The graph and every subgraph nested in its nodes' attributes (iterative: no recursion)."""
    stack = [graph]
    while stack:
        g = stack.pop()
        yield g
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    stack.append(attr.g)
                stack.extend(attr.graphs)


def tensors(proto: onnx.ModelProto):
    """(tensor, where) for every TensorProto the model stores, subgraphs included."""
    for g in _graphs(proto.graph):
        for t in g.initializer:
            yield t, "initializer"
        for sparse in g.sparse_initializer:
            yield sparse.values, "sparse initializer"
            yield sparse.indices, "sparse initializer indices"
        for node in g.node:
            label = node.name or (node.output[0] if node.output else "?")
            for attr in node.attribute:
                for t in ([attr.t] if attr.HasField("t") else []) + list(attr.tensors):
                    yield t, f"attribute '{attr.name}' of node '{label}'"


def itemsize(data_type: int) -> int:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except Exception:  # undefined or non-numeric type: sized by its stored data instead
        return 1


def declared_bytes(tensor: onnx.TensorProto, what: str) -> int:
    if any(d < 0 for d in tensor.dims):
        raise ModelLoadError(f"tensor '{tensor.name}' ({what}): negative dimension in {list(tensor.dims)}")
    return math.prod(tensor.dims) * itemsize(tensor.data_type)


# ------------------------------------------------------------------ external data
def has_external_data(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == _EXTERNAL for t, _ in tensors(proto))


def resolve_external_data(proto: onnx.ModelProto, base_dir, max_bytes: int) -> None:
    """Read every external tensor of `proto` (in place) from inside `base_dir`, or refuse.

    `base_dir=None` means the caller named no folder: any external tensor is an error.
    """
    base = None if base_dir is None else os.path.realpath(os.fspath(base_dir))
    if base is not None and not os.path.isdir(base):
        raise ModelLoadError(f"base_dir '{os.fspath(base_dir)}' is not a folder")
    for tensor, what in tensors(proto):
        if tensor.data_location != _EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        if base is None:
            raise ModelLoadError(
                f"tensor '{tensor.name}' ({what}) is stored in the external file '{location}': "
                "a model given as bytes or a ModelProto reads no file; pass base_dir=<folder>")
        path = _safe_path(base, location, tensor.name)
        size = declared_bytes(tensor, what)
        if size > max_bytes:
            raise ModelLoadError(f"tensor '{tensor.name}' ({what}) declares {size:,} bytes, over the "
                                 f"budget of {max_bytes:,} (max_tensor_bytes)")
        offset, length = _int_field(info, "offset", tensor.name), _int_field(info, "length", tensor.name)
        if length is not None and length != size:
            raise ModelLoadError(f"tensor '{tensor.name}': external length {length} != {size} bytes "
                                 f"declared by its dims {list(tensor.dims)}")
        offset = offset or 0
        if offset + size > os.path.getsize(path):
            raise ModelLoadError(f"tensor '{tensor.name}': external file '{location}' holds "
                                 f"{os.path.getsize(path)} bytes, needs {offset + size}")
        with open(path, "rb") as f:
            f.seek(offset)
            tensor.raw_data = f.read(size)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def _safe_path(base: str, location: str, tensor: str) -> str:
    parts = location.replace("\\", "/").split("/")
    if not location or os.path.isabs(location) or location.startswith(("/", "\\")) or ".." in parts \
            or "\0" in location or (len(location) > 1 and location[1] == ":"):
        raise ModelLoadError(f"tensor '{tensor}': external data location '{location}' must be a "
                             "relative path inside the model's folder (no '..', not absolute)")
    path = os.path.realpath(os.path.join(base, location))
    if os.path.commonpath([base, path]) != base:  # a symlink that leaves the folder
        raise ModelLoadError(f"tensor '{tensor}': external data location '{location}' resolves "
                             "outside the model's folder")
    if not os.path.isfile(path):
        raise ModelLoadError(f"tensor '{tensor}': external data file '{location}' is not a regular "
                             "file in the model's folder")
    return path


def _int_field(info: dict, key: str, tensor: str):
    if key not in info:
        return None
    try:
        value = int(info[key])
    except ValueError:
        value = -1
    if value < 0:
        raise ModelLoadError(f"tensor '{tensor}': external data {key} '{info[key]}' is not an int >= 0")
    return value
