"""The MLPerf Tiny int8 models against LiteRT's reference kernels, tensor by tensor.

Every tensor LiteRT keeps (inputs, weights, every intermediate, outputs) must
equal ours in both engines: 0 mismatching elements, on 64 inputs (random int8,
all -128, all 127, smooth images); the slow profile adds 512 more.
"""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import aidge_lite as al
from aidge_lite.testing.tflite_check import litert_mismatches, standard_inputs

DATA = Path(__file__).parents[1] / "data" / "mlperf_tiny"
MODELS = ["resnet8_int8.tflite", "dscnn_kws_int8.tflite"]


def _check(path, count, seed):
    graph = al.load_tflite(path)
    shape = graph.node(graph.inputs[0]).attrs["shape"][1:]
    x = standard_inputs(shape, count, seed)
    result = litert_mismatches(path, x)
    for engine, counts in result.items():
        assert len(counts) == len(al.tflite.read_tflite(path).tensors), engine
        bad = {name: n for name, n in counts.items() if n}
        assert not bad, f"{engine}: {bad}"


@pytest.mark.parametrize("model", MODELS)
def test_every_tensor_equals_litert_reference_kernels(model):
    _check(DATA / model, 64, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_every_tensor_equals_litert_on_more_inputs(model):
    _check(DATA / model, 512, seed=1)


@pytest.mark.parametrize("model", MODELS)
def test_graph_keeps_the_model_interface(model):
    graph = al.load_tflite(DATA / model)
    spec = al.tflite.read_tflite(DATA / model)
    (inp,), (out,) = spec.inputs, spec.outputs
    assert graph.inputs == [spec.tensors[inp].name]
    assert graph.outputs == [spec.tensors[out].name]
    node = graph.node(graph.inputs[0])
    assert node.attrs["shape"] == spec.tensors[inp].shape and node.attrs["dtype"] == "int8"
    x = standard_inputs(node.attrs["shape"][1:], 3)
    y = al.run(graph, x, engine="integer")[graph.outputs[0]]
    assert y.dtype == np.int8 and y.shape == (3,) + spec.tensors[out].shape[1:]
