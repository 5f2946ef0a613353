"""Golden dump (manifest + exact .npy), the CLI commands, and bad input: float and
no_quant graphs, an op the C library lacks, a non-empty output folder -> clear
aidge_lite errors and nothing written."""
from __future__ import annotations

import json

import numpy as np
import pytest

import aidge_lite
from aidge_lite import Graph, Node, OpType, cli
from aidge_lite.errors import InputError, UnsupportedOperatorError
from aidge_lite.export import ExportError, export_c, golden

from .conftest import engine


@pytest.fixture(scope="module")
def q8(qmnist8):
    return qmnist8


def test_golden_manifest_holds_exact_integers(q8, mnist, tmp_path):
    x = mnist.test_x[:7].astype(np.float32)
    folder = golden(q8, x, tmp_path / "g")
    manifest = json.loads((folder / "manifest.json").read_text())
    want = engine(q8, x, intermediates=True)
    assert manifest["samples"] == 7 and manifest["target"] == q8.meta["target"]
    seen = 0
    for layer in manifest["layers"]:
        out = layer["output"]
        value = np.load(folder / out["file"])
        assert value.dtype == want[out["name"]].dtype and np.array_equal(value, want[out["name"]])
        for operand in layer["inputs"]:
            array = np.load(folder / operand["file"])
            if "constant" in operand:
                assert np.array_equal(array, q8.constant(operand["name"]))
            else:
                assert np.array_equal(array, want[operand["name"]])
        seen += 1
        if layer["op"] == "Quantizer" and layer["params"]["mode"] == "int":
            p = layer["params"]
            shift = np.load(folder / p["shift"]["file"])
            assert np.array_equal(np.load(folder / p["tflite_shift"]["file"]), 31 - shift)
        if layer["op"] == "Conv":
            assert layer["params"]["accumulator"]["bits"] == q8.meta["target"]["acc_bits"]
            assert len(layer["params"]["resolved_pads_tlbr"]) == 4
    assert seen == len([n for n in q8 if n.op not in (OpType.CONSTANT, OpType.INPUT)])
    out = manifest["outputs"][0]
    assert np.array_equal(np.load(folder / out["file"]), want[out["name"]])


def test_cli_golden_and_export_c(q8, mnist, tmp_path, capsys):
    model = tmp_path / "q.npz"
    aidge_lite.save(q8, model)
    data = tmp_path / "d.npz"
    np.savez(data, x=mnist.test_x[:5].astype(np.float32))
    assert cli.main(["golden", str(model), "--data", str(data), "-o", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g" / "manifest.json").is_file()
    assert cli.main(["export-c", str(model), "-o", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    assert "activation arena" in text and (tmp_path / "c" / "Makefile").is_file()
    # an existing, non-empty folder: one-line error, exit 2, nothing changed
    before = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert cli.main(["export-c", str(model), "-o", str(tmp_path / "c")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == before


def test_float_and_no_quant_graphs_are_refused(mnist8, mnist, tmp_path):
    with pytest.raises(InputError, match="float graph"):
        export_c(mnist8, tmp_path / "a")
    nq = aidge_lite.quantize_network(mnist8, mnist.calib_x[::50].astype(np.float32), no_quant=True)
    with pytest.raises(InputError, match="no_quant"):
        export_c(nq, tmp_path / "b")
    with pytest.raises(InputError, match="no_quant"):
        golden(nq, mnist.test_x[:2].astype(np.float32), tmp_path / "c")
    assert not any(tmp_path.iterdir())  # nothing half-written, no temporary folder left


def test_op_the_library_lacks(q8, tmp_path):
    g = q8.copy()
    out = g.outputs[0]
    g.add(Node("soft", OpType.SOFTMAX, [out], {"axis": -1}))
    g.outputs = ["soft"]
    with pytest.raises(UnsupportedOperatorError, match="soft"):
        export_c(g, tmp_path / "x")
    assert not any(tmp_path.iterdir())


def test_non_empty_folder_refused_and_kept(q8, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty"):
        export_c(q8, folder)
    with pytest.raises(ExportError, match="not empty"):
        golden(q8, np.zeros((1, 1, 28, 28), np.float32), folder)
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_empty_existing_folder_is_fine(q8, tmp_path):
    (tmp_path / "e").mkdir()
    result = export_c(q8, tmp_path / "e")
    assert result.arena_bytes > 0 and (tmp_path / "e" / "model.c").is_file()


@pytest.mark.parametrize("profile", ["tflite", "mcu-shift"])
def test_integer_profiles_have_no_float_in_the_integer_path(mnist8, mnist, tmp_path, profile):
    from aidge_lite.target import PROFILES

    q = aidge_lite.quantize_network(mnist8, mnist.calib_x[::50].astype(np.float32), nb_bits=8,
                                    target=PROFILES[profile])
    result = export_c(q, tmp_path / "c")
    assert not result.uses_float
    code = (tmp_path / "c" / "model.c").read_text()
    assert code.count("AIDGE_RQ_FLOAT") == 1  # the input quantizer only: float32 in
    assert "double" not in code.replace("static const double", "")
