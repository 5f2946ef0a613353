"""Fuzzing `serialize.load` and both engines with mutated saved graphs (issue 20).

The base file is `_saved_graph_cases.small_network` (an integer network with a grouped conv,
max / average / global pools, a gemm and float and fixed-point quantizers) saved by
`serialize.save`. Mutations: byte flips, truncation, and structured edits of the .npz
contents (a node attribute or the graph meta set to a hostile value, an array's dtype, values
or shape changed, operands rewired, op types swapped, deep nesting) written back with the
checksum recomputed: the checksum is no defence, the loader's validation is.

A case runs in the bounds-checked worker (conftest.py) and is clean when `load` raises an
`aidge_lite.errors` exception, or the graph loads and both engines give the same integers or
the same error class naming the same node.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz._saved_graph_cases import (compare_engines, read_entries_from_bytes, saved_bytes,
                                           small_network)
from tests.fuzz.conftest import Outcome, check, fuzz_settings, outcome_of

X = np.random.default_rng(7).normal(0, 2, (2, 2, 6, 6)).astype(np.float32)


# ------------------------------------------------------------------ the case (worker side)
def saved_graph_case(data: bytes) -> Outcome:
    from aidge_lite import serialize
    from aidge_lite.errors import AidgeLiteError

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "case.npz")
        with open(path, "wb") as f:
            f.write(data)
        try:
            graph = serialize.load(path)
        except AidgeLiteError as exc:
            return outcome_of(exc)
    return compare_engines(graph, X)


# ------------------------------------------------------------------ mutations (test side)
@pytest.fixture(scope="module")
def base_file(tmp_path_factory):
    return saved_bytes(small_network(np.random.default_rng(3)), tmp_path_factory.mktemp("base"))


HOSTILE = [None, 0, -1, 1.5, -(2**63), 2**63, 2**64, "x", "", [], [0] * 5, [-1, -1], [1, 1, 1, 1],
           {}, {"__array__": "nope"}, {"__scalar__": "object", "value": 1},
           {"__scalar__": "int8", "value": 1000}, {"__op__": "Nope"}, {"__tuple__": 5},
           {"__dict__": [[[1], 2]]}, float("nan"), float("inf"), True, "Conv", "int4"]
DTYPES = ["int8", "uint8", "int16", "int32", "int64", "uint64", "float16", "float32", "float64",
          "bool", "complex64", "<U3"]


def _write(doc, arrays) -> bytes:
    from aidge_lite.serialize import write_entries

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.npz")
        write_entries(path, doc if isinstance(doc, bytes) else
                      json.dumps(doc, allow_nan=True).encode(), arrays)  # checksum recomputed
        with open(path, "rb") as f:
            return f.read()


@st.composite
def structured_edit(draw, data: bytes) -> bytes:
    doc, arrays = read_entries_from_bytes(data)
    nodes = doc["nodes"]
    what = draw(st.sampled_from(["attr", "attr", "attr", "array", "array", "wiring", "op",
                                 "meta", "graph", "nesting"]))
    node = nodes[draw(st.integers(0, len(nodes) - 1))]
    if what == "attr":
        keys = sorted(node["attrs"]) + ["strides", "pads", "group", "transA", "alpha", "dtype",
                                         "lo", "hi", "shift", "multiplier", "scale", "mode"]
        node["attrs"][draw(st.sampled_from(keys))] = draw(st.sampled_from(HOSTILE))
    elif what == "array":
        key = draw(st.sampled_from(sorted(arrays)))
        a = arrays[key]
        how = draw(st.sampled_from(["dtype", "extreme", "shape", "empty"]))
        if how == "dtype":
            with np.errstate(all="ignore"):  # wrapping casts are part of the mutation
                arrays[key] = a.astype(draw(st.sampled_from(DTYPES)))
        elif how == "extreme":
            big = draw(st.sampled_from([2**62, -(2**63), 2**31, 2**15, 10**9]))
            b = a.astype(np.int64 if a.dtype.kind in "iub" else np.float64).copy()
            if b.size:
                b.flat[draw(st.integers(0, b.size - 1))] = big
            arrays[key] = b if draw(st.booleans()) else b.astype(a.dtype)  # may wrap: fine
        elif how == "shape":
            arrays[key] = a.reshape(-1)[: max(a.size - 1, 0)] if draw(st.booleans()) else a.reshape(1, -1)
        else:
            arrays[key] = np.zeros((0,), a.dtype)
    elif what == "wiring":
        names = [n["name"] for n in nodes]
        if node["inputs"]:
            node["inputs"][draw(st.integers(0, len(node["inputs"]) - 1))] = draw(st.sampled_from(names))
        else:
            node["inputs"] = [draw(st.sampled_from(names))]
    elif what == "op":
        node["op"] = draw(st.sampled_from(["Conv", "Gemm", "MaxPool", "AveragePool", "Relu",
                                           "Quantizer", "Softmax", "Lookup", "Sigmoid", "Input",
                                           "Constant", "Concat", "Nope"]))
    elif what == "meta":
        key = draw(st.sampled_from(["integer", "quantized", "target", "nb_bits"]))
        doc["meta"][key] = draw(st.sampled_from(
            HOSTILE + [{"acc_bits": 8, "rounding": "half_away", "rescale": "float", "overflow": "error"},
                       {"acc_bits": 64, "overflow": "wrap"}, {"acc_bits": 100}, {"nope": 1}]))
    elif what == "graph":
        key = draw(st.sampled_from(["inputs", "outputs", "name", "nodes"]))
        doc[key] = draw(st.sampled_from(HOSTILE + [["x", "x"], ["nope"], ["conv"]]))
    else:  # nesting deeper than any recursion limit
        depth = draw(st.sampled_from([200, 5000, 100000]))
        text = json.dumps(doc)
        nested = "[" * depth + "1" + "]" * depth
        return _write(text.replace('"attrs": {}', f'"attrs": {{"deep": {nested}}}', 1).encode(), arrays)
    return _write(doc, arrays)


@st.composite
def mutated_files(draw, data: bytes) -> bytes:
    how = draw(st.sampled_from(["flip", "truncate", "edit", "edit", "edit", "edit"]))
    if how == "flip":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            b[draw(st.integers(0, len(b) - 1))] ^= draw(st.integers(1, 255))
        return bytes(b)
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    return draw(structured_edit(data))


@fuzz_settings(ci=40, slow=4000)
@given(data=st.data())
def test_saved_graph_fuzz(fuzz_runner, base_file, data):
    """Every mutated file: a clean `aidge_lite.errors` exception from `load`, or a graph
    both engines run to the same integers or refuse with the same error class and node."""
    mutated = data.draw(mutated_files(base_file), label="mutated file")
    check(fuzz_runner.run(saved_graph_case, mutated, label="saved_graph"))


def test_base_file_runs_bit_exact(fuzz_runner, base_file):
    """The unmutated file loads and both engines agree: the fuzz starts from a sound graph."""
    outcome = fuzz_runner.run(saved_graph_case, base_file, label="saved_graph_base")
    assert outcome.kind == "agrees", outcome
