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
    dtype, shape and bytes. It catches accidental damage (a truncated copy, a
    flipped bit) only: anyone who edits the file can recompute it, so it is no
    protection against a crafted file. What protects the engines is validation.

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

Loading treats the file as untrusted: besides the format itself (entries, JSON
nesting depth, tags, array dtypes), the graph is checked by
:func:`aidge_lite.ir.validate.validate` (structure, window geometry, quantizer
dtypes / bounds / multipliers / shifts, integer weights, the stored target)
and every recorded shape against its array, before anything can run it.
A corrupted, truncated, foreign or invalid file, a missing entry or an unknown
version raises :class:`aidge_lite.errors.FormatError` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from .errors import AidgeLiteError, ExecutionError, FormatError
from .ir import Graph, Node, OpType
from .ir.node import META_SHAPE
from .ir.validate import MAX_DIM, is_int, validate

FORMAT_VERSION = 1
VERSION_KEY = "aidge_lite_graph"
GRAPH_ENTRY = "__graph__.json"
CHECKSUM_ENTRY = "__checksum__"
_TAGS = ("__array__", "__scalar__", "__tuple__", "__dict__", "__op__")
MAX_DEPTH = 64  # nesting of JSON values: a graph document needs a handful of levels
_ARRAY_KINDS = "biufSU"  # what `save` writes (no complex, object or structured arrays)

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
    from .atomic import atomic_path

    # never a half-written file under `path`: a temporary sibling, fsynced, renamed into place
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **entries)


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
    except RecursionError:
        raise FormatError(f"{path}: entry '{GRAPH_ENTRY}' is nested too deeply") from None
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

    def decode(self, value, where: str, depth: int = 0):
        if depth > MAX_DEPTH:
            self.fail(where, f"values nested deeper than {MAX_DEPTH} levels")
        depth += 1
        if isinstance(value, list):
            return [self.decode(v, f"{where}[{i}]", depth) for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        tags = [t for t in _TAGS if t in value]
        if not tags:
            return {k: self.decode(v, f"{where}[{k!r}]", depth) for k, v in value.items()}
        tag = tags[0]
        if tag == "__array__":
            key = value["__array__"]
            if not isinstance(key, str) or key not in self.arrays:
                self.fail(where, f"missing array entry {key!r}")
            array = self.arrays[key]
            if array.dtype.kind not in _ARRAY_KINDS or array.dtype.fields is not None:
                self.fail(where, f"array entry {key!r} has dtype {array.dtype}")
            self.used.add(key)
            return array
        if tag == "__scalar__":
            try:
                dtype = np.dtype(value["__scalar__"])
                if dtype.kind not in "biuf":
                    raise TypeError(f"dtype {dtype} is not numeric")
                scalar = dtype.type(value["value"])
                if dtype.kind in "iu" and (not is_int(value["value"]) or scalar != value["value"]):
                    raise ValueError("not an integer of that dtype")  # NumPy would wrap or truncate
                return scalar
            except (TypeError, KeyError, ValueError, OverflowError) as exc:
                self.fail(where, f"bad scalar {value!r} ({exc})")
        if tag == "__tuple__":
            items = value["__tuple__"]
            if not isinstance(items, list):
                self.fail(where, "bad tuple")
            return tuple(self.decode(v, f"{where}[{i}]", depth) for i, v in enumerate(items))
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
            key = self.decode(k, f"{where} key", depth)
            try:
                hash(key)
            except TypeError:
                self.fail(where, "unhashable dict key")
            out[key] = self.decode(v, f"{where}[{key!r}]", depth)
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
    """Load a graph saved by :func:`save`; raises `FormatError` on any damaged, foreign or
    invalid file. The file is untrusted: a matching checksum proves nothing (anyone can
    recompute it); the graph is validated (`ir.validate`) and given a trial run on zeros."""
    doc, doc_bytes, arrays, digest = read_entries(path)
    if VERSION_KEY not in doc:
        raise FormatError(f"{path}: not an aidge_lite graph file (no '{VERSION_KEY}' version field)")
    version = doc[VERSION_KEY]
    if version != FORMAT_VERSION:
        raise FormatError(f"{path}: unknown aidge_lite graph format version {version!r} "
                          f"(this aidge_lite reads version {FORMAT_VERSION})")
    if digest is None:
        raise FormatError(f"{path}: missing entry '{CHECKSUM_ENTRY}'")
    if digest != checksum(doc_bytes, arrays):  # accidental damage; validation does the rest
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
    _validate_loaded(path, graph)
    return graph


def _validate_loaded(path, graph: Graph) -> None:
    """The file is untrusted: everything the engines rely on is checked here, once."""
    try:
        if not isinstance(graph.meta, dict):
            raise FormatError(f"{path}: graph meta must be a JSON object")
        for node in graph.topo_order():
            _check_recorded_shape(path, node)
        validate(graph)
        _trial_run(graph)
    except FormatError:
        raise
    except AidgeLiteError as exc:
        raise FormatError(f"{path}: invalid graph: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
            MemoryError) as exc:
        # a field of a type no check expected: still the file's fault, not a crash
        raise FormatError(f"{path}: invalid graph ({type(exc).__name__}: {exc})") from None


TRIAL_MAX_ELEMENTS = 1 << 22  # inputs up to 4M elements (32 MB in float64) get a trial run


def _trial_run(graph: Graph) -> None:
    """Run the graph once on zeros at batch one (the fake-quant engine for a quantized graph):
    every array is then checked against the shapes it meets, before the caller runs anything.
    Skipped for inputs declared too big to allocate cheaply (the engines check at run time)."""
    from .interp.reference import ReferenceInterpreter
    from .interp.shapes import _zeros

    sizes = [math.prod(d if is_int(d) and d > 0 else 1 for d in graph.node(n).attrs["shape"])
             for n in graph.inputs]
    if not graph.inputs or max(sizes) > TRIAL_MAX_ELEMENTS:
        return
    with np.errstate(all="ignore"):  # zeros make e.g. Div compute 0/0
        try:
            ReferenceInterpreter().run(graph, _zeros(graph, batch_one=True))
        except ExecutionError:
            if graph.meta.get("integer"):
                raise
            # a float graph that cannot run at batch one (see interp/shapes.py): no verdict


def _check_recorded_shape(path, node: Node) -> None:
    shape = node.meta.get(META_SHAPE)
    if shape is None:
        return
    if not isinstance(shape, tuple) or not all(is_int(d) and 0 <= d <= MAX_DIM for d in shape):
        raise FormatError(f"{path}: node '{node.name}': recorded shape {shape!r} is not a shape")
    if node.op is OpType.CONSTANT and isinstance(node.attrs.get("value"), np.ndarray) \
            and tuple(shape) != node.attrs["value"].shape:
        raise FormatError(f"{path}: node '{node.name}': recorded shape {shape} but its array "
                          f"is {node.attrs['value'].shape}")

