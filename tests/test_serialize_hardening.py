"""`serialize.load` treats the file as untrusted (issue 20).

Each file below is tampered with and written back with a *valid* checksum (the checksum only
catches accidental damage): the loader's validation must refuse it with a `FormatError`
naming the file and the node, before anything can run it.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from aidge_lite import serialize
from aidge_lite.errors import FormatError
from aidge_lite.serialize import write_entries
from tests.fuzz._saved_graph_cases import read_entries_from_bytes, saved_bytes, small_network


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    data = saved_bytes(small_network(np.random.default_rng(3)), tmp_path_factory.mktemp("base"))
    return read_entries_from_bytes(data)


def _tampered(tmp_path, base, edit) -> str:
    doc, arrays = json.loads(json.dumps(base[0])), {k: v.copy() for k, v in base[1].items()}
    result = edit(doc, arrays)
    path = tmp_path / "tampered.npz"
    write_entries(path, result if isinstance(result, bytes) else doc, arrays)  # checksum recomputed
    return str(path)


def _node(doc, name):
    return next(n for n in doc["nodes"] if n["name"] == name)


def _array_key(doc, name):
    return _node(doc, name)["attrs"]["value"]["__array__"]


def test_untampered_file_loads_and_runs(tmp_path, base):
    from aidge_lite.interp.integer import IntegerInterpreter
    from aidge_lite.interp.reference import ReferenceInterpreter

    graph = serialize.load(_tampered(tmp_path, base, lambda doc, arrays: None))
    x = np.random.default_rng(0).normal(0, 2, (2, 2, 6, 6)).astype(np.float32)
    ref, ints = ReferenceInterpreter().run(graph, x), IntegerInterpreter().run(graph, x)
    np.testing.assert_array_equal(ints["y"].astype(np.float64), ref["y"])


def _set_attr(name, key, value):
    def edit(doc, arrays):
        _node(doc, name)["attrs"][key] = value
    return edit


@pytest.mark.parametrize("name, key, value, message", [
    # issue 20: a negative MaxPool stride with a large kernel segfaulted or hung the integer kernel
    ("mp", "strides", [-3, 1], "strides"), ("mp", "kernel_shape", [2, 100000], "window"),
    ("mp", "pads", [-1, 0, 0, 0], "pads"), ("conv", "dilations", [0, 1], "dilations"),
    ("conv", "strides", [1.5, 1], "strides"), ("conv", "group", 0, "group"),
    ("ap", "pads", [2, 0, 0, 0], "smaller than kernel_shape"),
    ("convq", "hi", 300, "hi"), ("convq", "lo", -(2**40), "lo"),  # bounds wider than the dtype
    ("convq", "dtype", "float32", "dtype"), ("convq", "dtype", "int64x", "dtype"),
    ("convq", "scale", float("nan"), "scale"), ("convq", "scale", float("inf"), "scale"),
    ("convq", "rounding", "sideways", "rounding"),
    ("fc", "alpha", 2.0, "alpha"), ("fc", "transA", 3, "transA"),
])
def test_tampered_attribute_refused(tmp_path, base, name, key, value, message):
    path = _tampered(tmp_path, base, _set_attr(name, key, value))
    with pytest.raises(FormatError, match=rf"tampered\.npz: .*'{name}'.*({message})"):
        serialize.load(path)


@pytest.mark.parametrize("multiplier", [-(2**63), 2**31, -(2**31)])
def test_tampered_multiplier_refused(tmp_path, base, multiplier):
    """-2^63 passed the old `np.abs(m) < 2^31` test: np.abs(-2^63) is -2^63."""
    def edit(doc, arrays):
        arrays[_node(doc, "y")["attrs"]["multiplier"]["__array__"]] = np.array([multiplier], np.int64)
    with pytest.raises(FormatError, match="'y'.*multiplier"):
        serialize.load(_tampered(tmp_path, base, edit))


@pytest.mark.parametrize("shift", [63, -32, 1000])
def test_tampered_shift_refused(tmp_path, base, shift):
    def edit(doc, arrays):
        arrays[_node(doc, "y")["attrs"]["shift"]["__array__"]] = np.array([shift], np.int64)
    with pytest.raises(FormatError, match="'y'.*shift"):
        serialize.load(_tampered(tmp_path, base, edit))


@pytest.mark.parametrize("dtype", [np.float64, np.complex64, "<U4", np.bool_])
def test_weight_dtype_edit_refused(tmp_path, base, dtype):
    def edit(doc, arrays):
        key = _array_key(doc, "cw")
        arrays[key] = arrays[key].astype(dtype)
    with pytest.raises(FormatError, match="'c(w|onv)'"):
        serialize.load(_tampered(tmp_path, base, edit))


def test_weight_shape_edit_refused(tmp_path, base):
    def edit(doc, arrays):
        key = _array_key(doc, "fw")
        arrays[key] = arrays[key].reshape(-1)
    with pytest.raises(FormatError, match="'fc'.*operand shapes"):  # found by the trial run
        serialize.load(_tampered(tmp_path, base, edit))


def test_recorded_shape_must_match_the_array(tmp_path, base):
    def edit(doc, arrays):
        _node(doc, "cw")["meta"]["shape"] = {"__tuple__": [1, 2, 3]}
    with pytest.raises(FormatError, match="'cw': recorded shape"):
        serialize.load(_tampered(tmp_path, base, edit))


@pytest.mark.parametrize("scalar", [{"__scalar__": "object", "value": 1},
                                    {"__scalar__": "int8", "value": 1000},
                                    {"__scalar__": "int8", "value": 1.5},
                                    {"__scalar__": "V8", "value": 0}])
def test_bad_scalars_refused(tmp_path, base, scalar):
    with pytest.raises(FormatError, match="bad scalar"):
        serialize.load(_tampered(tmp_path, base, _set_attr("conv", "extra", scalar)))


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deep_nesting_is_a_format_error_not_a_recursion_error(tmp_path, base, depth):
    def edit(doc, arrays):
        nested = "[" * depth + "1" + "]" * depth
        return json.dumps(doc).replace('"attrs": {', f'"attrs": {{"deep": {nested}, ', 1).encode()
    with pytest.raises(FormatError, match="nested"):
        serialize.load(_tampered(tmp_path, base, edit))


def test_bad_stored_target_refused(tmp_path, base):
    def edit(doc, arrays):
        doc["meta"]["target"] = {"acc_bits": 100, "nope": 1}
    with pytest.raises(FormatError, match="target"):
        serialize.load(_tampered(tmp_path, base, edit))


def test_checksum_is_not_described_as_a_safety_mechanism():
    doc = serialize.__doc__
    assert "a file edited after saving is rejected" not in doc
    assert "no protection against a crafted file" in " ".join(doc.split())
