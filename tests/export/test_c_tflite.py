"""The MLPerf Tiny int8 models (resnet8, dscnn_kws), whole (int8 SOFTMAX included), exported
to C: the compiled program (sanitizers on) equals LiteRT's BUILTIN_REF kernels on 64 inputs,
0 mismatches, in its output and in every tensor of its debug dump; every tensor of the golden
dump (`golden`) equals the C program's layer, and LiteRT's wherever LiteRT names it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import aidge_lite
from aidge_lite.export import export_c, golden
from aidge_lite.export.build import read_dump, run_program

from .conftest import engine

DATA = Path(__file__).resolve().parent.parent / "data" / "mlperf_tiny"
MODELS = ["resnet8", "dscnn_kws"]


@pytest.mark.parametrize("model", MODELS)
def test_mlperf_tiny_equals_litert(builder, tmp_path, model):
    pytest.importorskip("ai_edge_litert")
    from aidge_lite.testing.litert_oracle import run_litert
    from aidge_lite.testing.tflite_check import standard_inputs

    path = DATA / f"{model}_int8.tflite"
    g = aidge_lite.load_tflite(path)
    assert g.node(g.outputs[0]).op.value == "Softmax"  # the whole model
    result = export_c(g, tmp_path / "c")
    x = standard_inputs(g.node(g.inputs[0]).attrs["shape"][1:], 64)
    lite = run_litert(str(path), x)
    name = g.outputs[0]
    out = run_program(builder.build(tmp_path / "c"), tmp_path / "c", x)[name]
    assert out.dtype == np.int8 and out.shape == (64, lite[name].shape[-1])
    assert np.array_equal(out, lite[name].reshape(out.shape))
    assert np.array_equal(out, engine(g, x)[name])
    dbg = builder.build(tmp_path / "c", debug=True)
    assert np.array_equal(run_program(dbg, tmp_path / "c", x, dump_dir=tmp_path / "dump")[name], out)
    layers = read_dump(tmp_path / "dump", tmp_path / "c", len(x))
    # every tensor of the golden dump equals the C program's, and LiteRT's where it has it
    folder = golden(g, x, tmp_path / "golden")
    manifest = json.loads((folder / "manifest.json").read_text())
    compared = set()
    for layer in manifest["layers"]:
        for tensor in [layer["output"]] + [t for t in layer["inputs"] if "constant" not in t]:
            value = np.load(folder / tensor["file"])
            if tensor["name"] in layers:
                assert np.array_equal(layers[tensor["name"]], value.astype(np.int64)), tensor["name"]
            else:
                assert tensor["name"] == g.inputs[0] and np.array_equal(value, x)
            if tensor["name"] in lite:
                assert np.array_equal(value, lite[tensor["name"]].reshape(value.shape)), tensor["name"]
                compared.add(tensor["name"])
    assert {layer["output"]["name"] for layer in manifest["layers"]} == set(layers)
    constants = {n.name for n in g if n.op.value == "Constant"}
    assert compared == set(lite) - constants  # every activation LiteRT keeps (17 / 14)
    assert result.arena_bytes > 0 and len(result.steps) == len(layers)


#: Activation arena bytes with rescale fusion (default) and without (`fuse=False`).
ARENAS = {"resnet8": (49152, 196608), "dscnn_kws": (16000, 40000)}


@pytest.mark.parametrize("model", MODELS)
def test_fusion_keeps_accumulators_out_of_the_arena(tmp_path, model):
    """Conv / FC + requant and TFLite's ADD (two operand rescales, sum, rescale) fused: the
    arena holds int8 tensors only (resnet8: three 32x32x16 int8 tensors live at once)."""
    g = aidge_lite.load_tflite(DATA / f"{model}_int8.tflite")
    fused, unfused = export_c(g, tmp_path / "a"), export_c(g, tmp_path / "b", fuse=False)
    assert (fused.arena_bytes, unfused.arena_bytes) == ARENAS[model]
    info = json.loads((tmp_path / "a" / "export.json").read_text())
    rescales = sum(1 for n in g if n.op.value == "Quantizer")
    assert info["fused_rescales"] == rescales  # every rescale of these models is fused
    code = (tmp_path / "a" / "model.c").read_text()
    assert "int32_t *)(arena" not in code and "int64_t *)(arena" not in code


@pytest.mark.slow
def test_mlperf_tiny_unfused_equals_engine(builder, plain_builder, tmp_path):
    from aidge_lite.testing.tflite_check import standard_inputs

    from .conftest import check_many

    graphs = [aidge_lite.load_tflite(DATA / f"{m}_int8.tflite") for m in MODELS]
    xs = [standard_inputs(g.node(g.inputs[0]).attrs["shape"][1:], 64) for g in graphs]
    check_many(builder, tmp_path, graphs, xs, dump_samples=8, plain=plain_builder, fuse=False)
