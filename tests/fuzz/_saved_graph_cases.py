"""Helpers of the validation fuzz tests: small hand-built integer graphs, the outcome of
running one through an engine, and the rule both engines must follow.

Cases run in the bounds-checked worker of `tests/fuzz/conftest.py` (`FuzzRunner`), which
classifies them: "refused" and "agrees" are clean; a traceback, an out-of-bounds access, a
crash, a hang or "disagrees" (the engines differ) fail the test.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np

from aidge_lite import Graph, Node, OpType
from aidge_lite.errors import AidgeLiteError
from aidge_lite.interp.integer import IntegerInterpreter
from aidge_lite.interp.quant_common import AccumulatorOverflowWarning
from aidge_lite.interp.reference import ReferenceInterpreter

INTEGER_META = {"quantized": True, "integer": True, "nb_bits": 8,
                "target": {"acc_bits": 64, "rounding": "half_away", "rescale": "float",
                           "overflow": "error"}}


def quantizer(name, src, scale=0.05, *, dtype="int8", rounding="half_away", **extra) -> Node:
    info = np.iinfo(dtype)
    attrs = {"scale": scale, "rounding": rounding, "lo": int(info.min), "hi": int(info.max),
             "dtype": dtype, "signed": info.min < 0, "mode": "float"}
    attrs.update(extra)
    return Node(name, OpType.QUANTIZER, [src], attrs)


def integer_graph(kind: str, x_shape, attrs: dict, rng, *, w_shape=None, bias_shape=None,
                  channels_out=None) -> Graph:
    """input (float) -> input quantizer (int8) -> one op -> output quantizer, as
    `quantize_network` lays them out; `kind` is conv | maxpool | avgpool | gemm | requant |
    lookup | gap. Weights int8, bias int32, drawn from `rng`."""
    g = Graph(f"fuzz_{kind}")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, *x_shape[1:]], "dtype": "float32"}))
    g.add(quantizer("xq", "x", 20.0))
    last = "xq"
    if kind == "conv":
        g.add_constant("w", rng.integers(-127, 128, w_shape).astype(np.int8))
        k = w_shape[0] if len(w_shape) else 1
        g.add_constant("b", rng.integers(-500, 500, bias_shape or (k,)).astype(np.int32))
        g.add(Node("op", OpType.CONV, ["xq", "w", "b"], dict(attrs)))
        last = "op"
    elif kind == "gemm":
        g.add_constant("w", rng.integers(-127, 128, w_shape).astype(np.int8))
        inputs = ["xq", "w"]
        if bias_shape is not None:
            g.add_constant("b", rng.integers(-500, 500, bias_shape).astype(np.int32))
            inputs.append("b")
        g.add(Node("op", OpType.GEMM, inputs, dict(attrs)))
        last = "op"
    elif kind in ("maxpool", "avgpool"):
        op = OpType.MAXPOOL if kind == "maxpool" else OpType.AVGPOOL
        pool_attrs = dict(attrs)
        if kind == "avgpool":
            pool_attrs.setdefault("rounding", "half_away")
        g.add(Node("op", op, ["xq"], pool_attrs))
        last = "op"
    elif kind == "gap":
        g.add(Node("op", OpType.GLOBAL_AVGPOOL, ["xq"], {"rounding": "half_away", **attrs}))
        last = "op"
    elif kind == "lookup":
        g.add(Node("op", OpType.LOOKUP, ["xq"], {"table": rng.integers(-128, 128, 256).astype(np.int8),
                                                 "offset": 128, **attrs}))
        g.outputs = ["op"]
        g.meta = dict(INTEGER_META)
        return g
    if kind == "requant":  # an int-mode (multiplier, shift) quantizer right after the input one
        g.add(Node("acc", OpType.RELU, ["xq"]))
        q = quantizer("y", "acc", 1.0)
        q.attrs.update({"mode": "int", "multiplier": np.array([1 << 30]), "shift": np.array([31])})
        q.attrs.update(attrs)
        g.add(q)
    else:
        g.add(quantizer("y", last, 0.01))
    g.outputs = ["y"]
    g.meta = dict(INTEGER_META)
    return g


def run_engine(engine: str, graph: Graph, x):
    """Outputs of `graph` on `x`, or the `(error class, node)` of the `aidge_lite.errors`
    exception it raised; any other exception propagates (the fuzz runner classifies it)."""
    from tests.fuzz.conftest import error_key

    interp = ReferenceInterpreter() if engine == "reference" else IntegerInterpreter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AccumulatorOverflowWarning)
            with np.errstate(all="ignore"):
                return {k: np.asarray(v) for k, v in interp.run(graph, x).items()}
    except AidgeLiteError as exc:
        return error_key(exc)


def compare_engines(graph: Graph, x, reference_check=None):
    """The rule: both engines give the same integers bit for bit, or the same error class
    naming the same node. Returns an `Outcome` ("agrees", "refused" or "disagrees");
    `reference_check(outputs)` may return a message when a NumPy reference disagrees."""
    from tests.fuzz.conftest import Outcome

    ref = run_engine("reference", graph, x)
    if not graph.meta.get("integer"):  # the integer engine refuses it by design (InputError)
        return Outcome("refused", "%s: %s" % ref) if isinstance(ref, tuple) else Outcome("agrees")
    ints = run_engine("integer", graph, x)
    if isinstance(ref, tuple) or isinstance(ints, tuple):
        if ref == ints:
            return Outcome("refused", "%s: %s" % ref)
        return Outcome("disagrees", f"fake-quant: {_brief(ref)}, integer: {_brief(ints)}")
    for name, expected in ref.items():
        got = ints[name].astype(np.float64)
        if got.shape != expected.shape or not np.array_equal(got, expected):
            return Outcome("disagrees", f"output '{name}' differs between the engines")
    message = reference_check(ref) if reference_check is not None else None
    return Outcome("disagrees", message) if message else Outcome("agrees")


def _brief(result):
    return result if isinstance(result, tuple) else "runs"


# --------------------------------------------------------------- saved graphs
def saved_bytes(graph: Graph, tmp_dir) -> bytes:
    from aidge_lite import serialize

    path = os.path.join(tmp_dir, "base.npz")
    serialize.save(graph, path)
    with open(path, "rb") as f:
        return f.read()


def read_entries_from_bytes(data: bytes):
    """(document, arrays) of a saved graph given as bytes."""
    import json

    from aidge_lite.serialize import CHECKSUM_ENTRY, GRAPH_ENTRY

    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        entries = {k: archive[k] for k in archive.files}
    doc = json.loads(entries.pop(GRAPH_ENTRY).tobytes().decode())
    entries.pop(CHECKSUM_ENTRY, None)
    return doc, entries


def small_network(rng) -> Graph:
    """A small integer network using every op the geometry fuzz covers: conv (grouped),
    relu, maxpool, avgpool, global average pool, flatten, gemm; (1, 2, 6, 6) inputs."""
    g = Graph("small_network")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 2, 6, 6], "dtype": "float32"}))
    g.add(quantizer("xq", "x", 20.0))
    g.add_constant("cw", rng.integers(-127, 128, (4, 1, 3, 3)).astype(np.int8))
    g.add_constant("cb", rng.integers(-500, 500, 4).astype(np.int32))
    g.add(Node("conv", OpType.CONV, ["xq", "cw", "cb"],
               {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 2}))
    g.add(quantizer("convq", "conv", 0.01))
    g.add(Node("relu", OpType.RELU, ["convq"]))
    g.add(Node("mp", OpType.MAXPOOL, ["relu"], {"kernel_shape": [2, 2], "strides": [2, 2]}))
    g.add(Node("ap", OpType.AVGPOOL, ["mp"], {"kernel_shape": [2, 2], "strides": [1, 1],
                                             "pads": [1, 1, 0, 0], "rounding": "half_away"}))
    g.add(Node("gap", OpType.GLOBAL_AVGPOOL, ["ap"], {"rounding": "half_away"}))
    g.add(Node("flat", OpType.FLATTEN, ["gap"], {"axis": 1}))
    g.add_constant("fw", rng.integers(-127, 128, (3, 4)).astype(np.int8))
    g.add_constant("fb", rng.integers(-500, 500, 3).astype(np.int32))
    g.add(Node("fc", OpType.GEMM, ["flat", "fw", "fb"], {"transB": 1}))
    fq = quantizer("y", "fc", 0.02, mode="int", multiplier=np.array([1 << 30]), shift=np.array([36]))
    g.add(fq)
    g.outputs = ["y"]
    g.meta = dict(INTEGER_META)
    return g
