"""aidge_lite.serialize: bit-identical save/load, no pickle, clear FormatErrors."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import aidge_lite
from aidge_lite import Graph, Node, OpType, serialize
from aidge_lite.errors import FormatError



@pytest.fixture(scope="module")
def sample(mnist):
    return mnist.test_x[::80].astype(np.float32)  # 50 images, every class


def assert_same(a, b, where="value"):
    """Deep equality that also checks types and array dtypes/shapes (NaN == NaN)."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), where
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, (float, np.floating)) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_graph(g1: Graph, g2: Graph):
    assert g1.name == g2.name
    assert g1.inputs == g2.inputs and g1.outputs == g2.outputs
    assert g1.edges() == g2.edges()
    assert [n.name for n in g1.topo_order()] == [n.name for n in g2.topo_order()]
    for n1 in g1.topo_order():
        n2 = g2.node(n1.name)
        assert n1.op is n2.op and n1.inputs == n2.inputs
        assert_same(n1.attrs, n2.attrs, f"{n1.name}.attrs")
        assert_same(n1.meta, n2.meta, f"{n1.name}.meta")
    assert_same(g1.meta, g2.meta, "graph.meta")


def test_quantized_roundtrip_bit_identical(qmnist8, sample, tmp_path):
    path = serialize.save(qmnist8, tmp_path / "q.npz")
    loaded = serialize.load(path)
    assert_same_graph(qmnist8, loaded)
    for engine in ("reference", "integer"):
        want = aidge_lite.run(qmnist8, sample, engine=engine)
        got = aidge_lite.run(loaded, sample, engine=engine)
        for name in qmnist8.outputs:
            assert got[name].dtype == want[name].dtype
            assert np.array_equal(got[name], want[name]), engine
    shape = next(n for n in loaded.topo_order() if "shape" in n.meta).meta["shape"]
    assert isinstance(shape, tuple)


def test_float_roundtrip_bit_identical(mnist8, sample, tmp_path):
    loaded = serialize.load(serialize.save(mnist8, tmp_path / "f.npz"))
    assert_same_graph(mnist8, loaded)
    name = mnist8.outputs[0]
    assert np.array_equal(aidge_lite.run(mnist8, sample)[name], aidge_lite.run(loaded, sample)[name])


def test_exact_path_and_no_pickle(qmnist8, tmp_path):
    path = tmp_path / "model.bin"  # written as given, no ".npz" appended
    serialize.save(qmnist8, path)
    assert path.is_file() and not (tmp_path / "model.bin.npz").exists()
    with np.load(path, allow_pickle=False) as archive:
        assert serialize.GRAPH_ENTRY in archive.files
        doc = json.loads(archive[serialize.GRAPH_ENTRY].tobytes())
        assert all(archive[k].dtype != object for k in archive.files)
    assert doc["aidge_lite_graph"] == 1
    assert {"name", "inputs", "outputs", "meta", "nodes"} <= set(doc)
    assert {"name", "op", "inputs", "attrs", "meta"} == set(doc["nodes"][0])
    serialize.load(path)


def _odd_graph() -> Graph:
    g = Graph("odd")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 3], "dtype": "float32"}))
    shared = np.arange(6, dtype=np.int16).reshape(2, 3)
    g.add_constant("w", shared)
    g.add(Node("y", OpType.RELU, ["x"], attrs={"scale": np.float32(0.1), "lo": np.int64(-8), "flag": np.bool_(True)},
               meta={"shape": (1, 3), "range": float("nan"), "hist": (np.zeros(4), np.linspace(0, 1, 5)),
                     "same": shared, "op": OpType.CONV, "zero_d": np.array(2.5), "inf": float("-inf")}))
    g.add(Node("z", OpType.ADD, ["y", "y"], attrs={"weird": {1: "int key", "__array__": "not a ref"}},
               meta={"empty": {}, "nested": [[(1, 2.0)], {"a": None}], "big": 2**70, "text": "é"}))
    g.outputs = ["z"]
    g.meta = {"output_scale": {"z": np.array([1.0, 2.0, 3.0])}, "float_outputs": ["z"], "t": (), "b": np.array([True, False])}
    return g


def test_odd_values_roundtrip(tmp_path):
    g = _odd_graph()
    loaded = serialize.load(serialize.save(g, tmp_path / "odd.npz"))
    assert_same_graph(g, loaded)
    assert loaded.node("y").meta["same"] is loaded.node("w").attrs["value"]  # shared array stored once


def test_unsupported_values_raise(tmp_path):
    g = _odd_graph()
    g.meta["obj"] = np.array([object()], dtype=object)
    with pytest.raises(FormatError, match="dtype object"):
        serialize.save(g, tmp_path / "bad.npz")
    g = _odd_graph()
    g.meta["set"] = {1, 2}
    with pytest.raises(FormatError, match="set"):
        serialize.save(g, tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


# ------------------------------------------------------------ damaged files
@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "g.npz"
    serialize.save(_odd_graph(), path)
    return path


def _rewrite(path, doc=None, raw=None, drop=(), keep_checksum=False):
    """Re-write `path` with a changed JSON document (checksum recomputed unless keep_checksum)."""
    doc_bytes, arrays, digest = None, {}, None
    with np.load(path, allow_pickle=False) as archive:
        for key in archive.files:
            if key == serialize.GRAPH_ENTRY:
                doc_bytes = archive[key].tobytes()
            elif key == serialize.CHECKSUM_ENTRY:
                digest = archive[key].tobytes().decode()
            elif key not in drop:
                arrays[key] = archive[key]
    if raw is None:
        original = json.loads(doc_bytes)
        raw = json.dumps(doc(original) if doc else original).encode()
    serialize.write_entries(path, raw, arrays, digest=digest if keep_checksum else None)


def test_truncated_file(saved):
    data = saved.read_bytes()
    for size in (len(data) // 2, len(data) - 10, 3):
        saved.write_bytes(data[:size])
        with pytest.raises(FormatError, match="g.npz"):
            serialize.load(saved)


def test_garbage_and_empty_files(tmp_path):
    for content in (b"this is not a graph at all" * 10, b"", b"PK\x03\x04garbage", np.random.default_rng(0).bytes(999)):
        path = tmp_path / "garbage.npz"
        path.write_bytes(content)
        with pytest.raises(FormatError, match="garbage.npz"):
            serialize.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        serialize.load(tmp_path / "nope.npz")


def test_foreign_npz(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.ones(3))
    with pytest.raises(FormatError, match="no '__graph__.json' entry"):
        serialize.load(path)


def test_tampered_json_detected_by_checksum(saved):
    def edit(doc):
        doc["nodes"][0]["name"] = "renamed"
        return doc

    _rewrite(saved, edit, keep_checksum=True)
    with pytest.raises(FormatError, match="checksum"):
        serialize.load(saved)


def test_invalid_json(saved):
    _rewrite(saved, raw=b'{"aidge_lite_graph": 1, "nodes": [')
    with pytest.raises(FormatError, match="not valid JSON"):
        serialize.load(saved)


def test_unknown_version(saved):
    _rewrite(saved, lambda d: {**d, "aidge_lite_graph": 2})
    with pytest.raises(FormatError, match="version 2"):
        serialize.load(saved)


def test_no_version(saved):
    _rewrite(saved, lambda d: {k: v for k, v in d.items() if k != "aidge_lite_graph"})
    with pytest.raises(FormatError, match="version field"):
        serialize.load(saved)


def test_missing_key(saved):
    _rewrite(saved, lambda d: {k: v for k, v in d.items() if k != "nodes"})
    with pytest.raises(FormatError, match="missing field 'nodes'"):
        serialize.load(saved)


def test_missing_array_entry(saved):
    _rewrite(saved, drop=("a0",))
    with pytest.raises(FormatError, match="missing array entry 'a0'"):
        serialize.load(saved)


def test_unknown_op(saved):
    def bad_op(doc):
        doc["nodes"][-1]["op"] = "Frobnicate"
        return doc

    _rewrite(saved, bad_op)
    with pytest.raises(FormatError, match="unknown operator 'Frobnicate'"):
        serialize.load(saved)


def test_dangling_input(tmp_path):
    path = tmp_path / "g.npz"
    serialize.save(_odd_graph(), path)

    def dangling(doc):
        doc["nodes"][-1]["inputs"] = ["ghost"]
        return doc

    _rewrite(path, dangling)
    with pytest.raises(FormatError, match="ghost"):
        serialize.load(path)


def test_checksum_missing(saved):
    with np.load(saved, allow_pickle=False) as archive:
        entries = {k: archive[k] for k in archive.files if k != serialize.CHECKSUM_ENTRY}
    with zipfile.ZipFile(saved, "w") as zf:  # re-pack without the checksum
        for key, value in entries.items():
            with zf.open(key + ".npy", "w") as f:
                np.lib.format.write_array(f, value, allow_pickle=False)
    with pytest.raises(FormatError, match="__checksum__"):
        serialize.load(saved)


def test_saved_file_follows_the_umask(mnist8, tmp_path):
    """The atomic write goes through a private temporary file; the result must not stay 0600."""
    import os

    old = os.umask(0o022)
    try:
        path = serialize.save(mnist8, tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644
