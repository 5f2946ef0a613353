"""Save and load graphs (float or quantized) without pickle.

File format, version 1
----------------------
A ``.npz`` archive (``numpy.savez_compressed``) holding:

``__graph__.json``
    One UTF-8 JSON document stored as a 1-D ``uint8`` array::

        {"aidge_lite_graph": 1,            # format version
         "name": "...", "inputs": [...], "outputs": [...],
         "meta": {...},                     # graph.meta
         "nodes": [{"name": ..., "op": "Conv", "inputs": [...],
                    "attrs": {...}, "meta": {...}}, ...]}   # topological order

``a0``, ``a1``, ...
    Every ``numpy.ndarray`` found (recursively) in the graph meta and in the
    nodes' attrs and meta, one entry per array object (an array shared by two
    nodes is stored once). Arrays of dtype ``object`` cannot be saved.

``__checksum__``
    SHA-256 (hex, as ``uint8``) of the JSON bytes and of every array's key,
    dtype, shape and bytes: a file edited after saving is rejected.

Inside the JSON, values that JSON cannot express are tagged objects:

- ``{"__array__": "a17"}``: the array stored under key ``a17``;
- ``{"__scalar__": "float32", "value": 0.5}``: a NumPy bool/int/float scalar (type
  kept; a NumPy string scalar is saved as a plain str);
- ``{"__tuple__": [...]}``: a tuple (e.g. ``meta["shape"]``), so it reloads as a tuple;
- ``{"__dict__": [[key, value], ...]}``: a dict whose keys are not all strings
  or that uses one of these tag names as a key;
- ``{"__op__": "Conv"}``: an ``OpType`` value.

Python floats are written with ``repr`` precision (NaN/Infinity allowed), so
every number reloads bit-identically. The archive is read with
``numpy.load(..., allow_pickle=False)``: loading never executes code.
A corrupted, truncated or foreign file, a missing entry or an unknown version
raises :class:`aidge_lite.errors.FormatError` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import FormatError
from .ir import Graph, Node, OpType

FORMAT_VERSION = 1
VERSION_KEY = "aidge_lite_graph"
GRAPH_ENTRY = "__graph__.json"
CHECKSUM_ENTRY = "__checksum__"
_TAGS = ("__array__", "__scalar__", "__tuple__", "__dict__", "__op__")

__all__ = ["save", "load", "FORMAT_VERSION"]


# --------------------------------------------------------------------- save
class _Encoder:
    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self._by_id: dict[int, str] = {}
        self._keep: list = []  # keep arrays alive so ids stay unique during the save

    def encode(self, value, where: str):
        if isinstance(value, np.ndarray):
            return {"__array__": self._store(value, where)}
        if isinstance(value, np.str_):
            return str(value)
        if isinstance(value, np.generic):
            if value.dtype.kind not in "biuf":
                raise FormatError(f"cannot save {where}: NumPy scalar of dtype {value.dtype}")
            return {"__scalar__": value.dtype.name, "value": value.item()}
        if isinstance(value, OpType):
            return {"__op__": value.value}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and not any(k in _TAGS for k in value):
                return {k: self.encode(v, f"{where}[{k!r}]") for k, v in value.items()}
            return {"__dict__": [[self.encode(k, f"{where} key"), self.encode(v, f"{where}[{k!r}]")]
                                 for k, v in value.items()]}
        raise FormatError(f"cannot save {where}: values of type {type(value).__name__} are not supported")

    def _store(self, array: np.ndarray, where: str) -> str:
        if array.dtype.hasobject or array.dtype.kind not in "biufcSU":
            raise FormatError(f"cannot save {where}: array of dtype {array.dtype} (no pickle)")
        key = self._by_id.get(id(array))
        if key is None:
            key = f"a{len(self.arrays)}"
            self.arrays[key] = array
            self._by_id[id(array)] = key
            self._keep.append(array)
        return key


def _document(graph: Graph, enc: _Encoder) -> dict:
    nodes = []
    for node in graph.topo_order():
        where = f"node '{node.name}'"
        nodes.append({
            "name": node.name,
            "op": node.op.value,
            "inputs": list(node.inputs),
            "attrs": enc.encode(node.attrs, f"{where} attrs"),
            "meta": enc.encode(node.meta, f"{where} meta"),
        })
    return {
        VERSION_KEY: FORMAT_VERSION,
        "name": graph.name,
        "inputs": list(graph.inputs),
        "outputs": list(graph.outputs),
        "meta": enc.encode(graph.meta, "graph meta"),
        "nodes": nodes,
    }


def checksum(doc_bytes: bytes, arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the JSON bytes and of every array (key, dtype, shape, bytes), sorted by key."""
    h = hashlib.sha256()
    h.update(doc_bytes)
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"\0{key}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _bytes_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


def write_entries(path, doc: dict | bytes, arrays: dict[str, np.ndarray], *, digest: str | None = None) -> None:
    """Write a file from a JSON document (or raw JSON bytes) and its arrays.

    Public for tests and tools that build files by hand; `save` is the normal way.
    """
    doc_bytes = doc if isinstance(doc, bytes) else json.dumps(doc, allow_nan=True).encode("utf-8")
    digest = checksum(doc_bytes, arrays) if digest is None else digest
    entries = {GRAPH_ENTRY: _bytes_array(doc_bytes), CHECKSUM_ENTRY: _bytes_array(digest.encode())}
    entries.update(arrays)
    path = Path(path)
    # write next to the target, then rename: never leave a half-written file under `path`
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **entries)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a saved model is not
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(graph: Graph, path) -> Path:
    """Save `graph` (float or quantized) to `path` (written as given, conventionally `.npz`)."""
    enc = _Encoder()
    doc = _document(graph, enc)
    write_entries(path, doc, enc.arrays)
    return Path(path)


# --------------------------------------------------------------------- load
def read_entries(path) -> tuple[dict, bytes, dict[str, np.ndarray], str | None]:
    """(document, JSON bytes, arrays, stored checksum) of a file, validated only as an archive."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK":
        what = "empty file" if not magic else "not a zip/.npz archive"
        raise FormatError(f"{path}: not an aidge_lite graph file ({what})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if GRAPH_ENTRY not in names:
                raise FormatError(f"{path}: not an aidge_lite graph file (no '{GRAPH_ENTRY}' entry)")
            entries = {name: archive[name] for name in names}
    except FormatError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, ValueError (pickle), OSError, ...
        raise FormatError(f"{path}: corrupted or truncated aidge_lite graph file "
                          f"({type(exc).__name__}: {exc})") from None
    raw = entries.pop(GRAPH_ENTRY)
    stored = entries.pop(CHECKSUM_ENTRY, None)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise FormatError(f"{path}: entry '{GRAPH_ENTRY}' is not a 1-D uint8 array")
    doc_bytes = raw.tobytes()
    try:
        doc = json.loads(doc_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: entry '{GRAPH_ENTRY}' is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: entry '{GRAPH_ENTRY}' is not a JSON object")
    digest = None
    if stored is not None:
        if stored.dtype != np.uint8:
            raise FormatError(f"{path}: entry '{CHECKSUM_ENTRY}' is not a uint8 array")
        digest = stored.tobytes().decode("ascii", errors="replace")
    return doc, doc_bytes, entries, digest


class _Decoder:
    def __init__(self, path, arrays):
        self.path, self.arrays, self.used = path, arrays, set()

    def fail(self, where, what):
        raise FormatError(f"{self.path}: {where}: {what}")

    def decode(self, value, where: str):
        if isinstance(value, list):
            return [self.decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        tags = [t for t in _TAGS if t in value]
        if not tags:
            return {k: self.decode(v, f"{where}[{k!r}]") for k, v in value.items()}
        tag = tags[0]
        if tag == "__array__":
            key = value["__array__"]
            if not isinstance(key, str) or key not in self.arrays:
                self.fail(where, f"missing array entry {key!r}")
            self.used.add(key)
            return self.arrays[key]
        if tag == "__scalar__":
            try:
                return np.dtype(value["__scalar__"]).type(value["value"])
            except (TypeError, KeyError, ValueError, OverflowError) as exc:
                self.fail(where, f"bad scalar {value!r} ({exc})")
        if tag == "__tuple__":
            items = value["__tuple__"]
            if not isinstance(items, list):
                self.fail(where, "bad tuple")
            return tuple(self.decode(v, f"{where}[{i}]") for i, v in enumerate(items))
        if tag == "__op__":
            try:
                return OpType(value["__op__"])
            except ValueError:
                self.fail(where, f"unknown operator {value['__op__']!r}")
        pairs = value["__dict__"]
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            self.fail(where, "bad dict")
        out = {}
        for k, v in pairs:
            key = self.decode(k, f"{where} key")
            if isinstance(key, list):
                self.fail(where, "unhashable dict key")
            out[key] = self.decode(v, f"{where}[{key!r}]")
        return out


def _field(path, obj, key, kind, where):
    if key not in obj:
        raise FormatError(f"{path}: {where}: missing field '{key}'")
    value = obj[key]
    if not isinstance(value, kind):
        raise FormatError(f"{path}: {where}: field '{key}' should be a {kind.__name__}, "
                          f"got {type(value).__name__}")
    return value


def load(path) -> Graph:
    """Load a graph saved by :func:`save`; raises `FormatError` on any damaged or foreign file."""
    doc, doc_bytes, arrays, digest = read_entries(path)
    if VERSION_KEY not in doc:
        raise FormatError(f"{path}: not an aidge_lite graph file (no '{VERSION_KEY}' version field)")
    version = doc[VERSION_KEY]
    if version != FORMAT_VERSION:
        raise FormatError(f"{path}: unknown aidge_lite graph format version {version!r} "
                          f"(this aidge_lite reads version {FORMAT_VERSION})")
    if digest is None:
        raise FormatError(f"{path}: missing entry '{CHECKSUM_ENTRY}'")
    if digest != checksum(doc_bytes, arrays):
        raise FormatError(f"{path}: checksum mismatch: the file was modified or damaged after saving")

    dec = _Decoder(path, arrays)
    graph = Graph(_field(path, doc, "name", str, "graph"))
    inputs = _field(path, doc, "inputs", list, "graph")
    outputs = _field(path, doc, "outputs", list, "graph")
    meta = _field(path, doc, "meta", dict, "graph")
    nodes = _field(path, doc, "nodes", list, "graph")
    for index, entry in enumerate(nodes):
        where = f"node #{index}"
        if not isinstance(entry, dict):
            raise FormatError(f"{path}: {where}: not a JSON object")
        name = _field(path, entry, "name", str, where)
        where = f"node #{index} '{name}'"
        op_name = _field(path, entry, "op", str, where)
        node_inputs = _field(path, entry, "inputs", list, where)
        attrs = dec.decode(_field(path, entry, "attrs", dict, where), f"{where} attrs")
        node_meta = dec.decode(_field(path, entry, "meta", dict, where), f"{where} meta")
        try:
            op = OpType(op_name)
        except ValueError:
            raise FormatError(f"{path}: {where}: unknown operator '{op_name}'") from None
        if not all(isinstance(i, str) for i in node_inputs):
            raise FormatError(f"{path}: {where}: inputs must be names")
        try:
            graph.add(Node(name, op, node_inputs, attrs, node_meta))
        except Exception as exc:  # duplicate name, unknown input, ...
            raise FormatError(f"{path}: {where}: {exc}") from None
    graph.meta = dec.decode(meta, "graph meta")
    if sorted(inputs) != sorted(graph.inputs) or not all(isinstance(i, str) for i in inputs):
        raise FormatError(f"{path}: graph inputs {inputs} do not match its INPUT nodes {graph.inputs}")
    missing = [o for o in outputs if not isinstance(o, str) or o not in graph]
    if missing:
        raise FormatError(f"{path}: graph outputs {missing} are not nodes of the graph")
    graph.inputs = list(inputs)
    graph.outputs = list(outputs)
    return graph


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
