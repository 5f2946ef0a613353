"""`load_onnx` on untrusted models (issue 20): external data stays inside the folder the caller
names. The memory budget is tested in `test_onnx_budget.py`, malformed models (refused like
onnxruntime refuses them) in `test_onnx_malformed.py`."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import aidge_lite
from aidge_lite.errors import ModelLoadError

from .onnx_hardening_helpers import F, model


# ------------------------------------------------------------------ external data
SECRET = np.arange(4, dtype=np.float32)  # the bytes of a file next to the model


def external_model(location: str, **extra) -> onnx.ModelProto:
    """y = x + W, W (4 floats) stored in the external file `location`."""
    w = onnx.TensorProto(name="W", data_type=F, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in {"location": location, **extra}.items():
        entry = w.external_data.add()
        entry.key, entry.value = key, str(value)
    return model([helper.make_node("Add", ["x", "W"], ["y"])], [("x", ["N", 4])], [("y", ["N", 4])], [w])


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """tmp/model/ holds weights.bin; tmp/secret.bin sits outside; the working dir holds both."""
    inside = tmp_path / "model"
    inside.mkdir()
    (inside / "weights.bin").write_bytes(SECRET.tobytes())
    (tmp_path / "secret.bin").write_bytes(SECRET.tobytes())
    monkeypatch.chdir(tmp_path)
    return inside


@pytest.mark.parametrize("location", ["weights.bin", "model/weights.bin", "secret.bin"])
@pytest.mark.parametrize("as_bytes", [True, False])
def test_bytes_or_proto_read_no_file_without_base_dir(folder, location, as_bytes):
    """The file exists relative to the working dir, yet nothing is read: the error names the tensor."""
    m = external_model(location)
    before = m.SerializeToString()
    with pytest.raises(ModelLoadError, match="tensor 'W'.*pass base_dir"):
        aidge_lite.load_onnx(before if as_bytes else m)
    assert m.SerializeToString() == before  # the caller's ModelProto is left as it was


@pytest.mark.parametrize("as_bytes", [True, False])
def test_base_dir_reads_inside_the_folder(folder, as_bytes):
    m = external_model("weights.bin")
    graph = aidge_lite.load_onnx(m.SerializeToString() if as_bytes else m, base_dir=folder)
    np.testing.assert_array_equal(graph.constant("W"), SECRET)
    assert m.graph.initializer[0].data_location == TensorProto.EXTERNAL  # resolved in a copy
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(aidge_lite.run(graph, x)["y"], x + SECRET)


def test_path_reads_its_own_folder(folder):
    path = folder / "m.onnx"
    onnx.save(external_model("weights.bin", offset=0, length=16), path)
    np.testing.assert_array_equal(aidge_lite.load_onnx(path).constant("W"), SECRET)


def test_symlink_inside_the_folder_is_followed(folder):
    (folder / "link.bin").symlink_to(folder / "weights.bin")
    graph = aidge_lite.load_onnx(external_model("link.bin"), base_dir=folder)
    np.testing.assert_array_equal(graph.constant("W"), SECRET)


HOSTILE = {
    "parent": ("../secret.bin", "no '..'"),
    "nested parent": ("sub/../../secret.bin", "no '..'"),
    "absolute": (None, "not absolute"),  # the absolute path of secret.bin
    "symlink out": ("escape.bin", "outside the model's folder"),
    "folder": (".", "not a regular file"),
    "fifo": ("pipe", "not a regular file"),  # would block a read forever
    "missing": ("nothing.bin", "not a regular file"),
    "past the end": ("weights.bin", "holds 16 bytes, needs 20"),
    "wrong length": ("weights.bin", "external length 8 != 16"),
    "bad offset": ("weights.bin", "offset 'x' is not an int"),
}
_EXTRA = {"past the end": {"offset": 4}, "wrong length": {"length": 8}, "bad offset": {"offset": "x"}}


def _hostile(name, folder) -> onnx.ModelProto:
    location, _ = HOSTILE[name]
    if name == "absolute":
        location = str(folder.parent / "secret.bin")
    if name == "symlink out":
        (folder / "escape.bin").symlink_to(folder.parent / "secret.bin")
    if name == "fifo":
        os.mkfifo(folder / "pipe")
    return external_model(location, **_EXTRA.get(name, {}))


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("how", ["base_dir", "path"])
def test_hostile_locations_are_refused(folder, name, how):
    m = _hostile(name, folder)
    with pytest.raises(ModelLoadError, match=f"tensor 'W'.*{HOSTILE[name][1]}"):
        if how == "base_dir":
            aidge_lite.load_onnx(m.SerializeToString(), base_dir=folder)
        else:
            path = folder / "m.onnx"
            path.write_bytes(m.SerializeToString())
            aidge_lite.load_onnx(path)


def test_base_dir_must_be_a_folder(folder):
    with pytest.raises(ModelLoadError, match="base_dir .* is not a folder"):
        aidge_lite.load_onnx(external_model("weights.bin"), base_dir=folder / "weights.bin")


def test_external_tensor_in_a_constant_node_is_refused(folder):
    """Tensors in node attributes (Constant) are external data too."""
    w = external_model("weights.bin").graph.initializer[0]
    m = model([helper.make_node("Constant", [], ["W"], value=w), helper.make_node("Add", ["x", "W"], ["y"])],
              [("x", ["N", 4])], [("y", ["N", 4])])
    with pytest.raises(ModelLoadError, match="tensor 'W' .*attribute 'value'.*pass base_dir"):
        aidge_lite.load_onnx(m)
