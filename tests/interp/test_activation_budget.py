"""A batch whose activations would not fit is refused before anything is allocated (issue 20)."""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
import aidge_lite.interp.walk_plan as walk_plan
from aidge_lite.errors import InputError
from aidge_lite.interp.integer import IntegerInterpreter
from aidge_lite.interp.reference import ReferenceInterpreter
from aidge_lite.models import zoo

# mnist-8's biggest tensor: the first conv's output, 8 x 28 x 28 per image
BIGGEST, PER_IMAGE = "Convolution28_Output_0", 8 * 28 * 28


@pytest.fixture(scope="module")
def graphs():
    float_graph = zoo.load("mnist8")
    calib = np.random.default_rng(0).random((16, 1, 28, 28)).astype(np.float32)
    return float_graph, aidge_lite.quantize_network(float_graph, calib)


def huge_batch(n: int) -> np.ndarray:
    """A batch of n images that takes 3 KiB: a broadcast view of one image."""
    return np.broadcast_to(np.zeros((1, 1, 28, 28), np.float32), (n, 1, 28, 28))


def test_a_batch_beyond_memory_is_refused_naming_input_and_tensor(graphs):
    float_graph, quantized = graphs
    for graph, engine in ((float_graph, ReferenceInterpreter), (quantized, ReferenceInterpreter),
                          (quantized, IntegerInterpreter)):
        with pytest.raises(InputError, match=rf"input 'Input3': a batch of 10,000,000 makes tensor "
                                             rf"'{BIGGEST}' [\d,]+ bytes, over the budget"):
            engine().run(graph, huge_batch(10**7))


def test_the_budget_is_configurable_and_exact_at_its_edge(graphs, monkeypatch):
    _, quantized = graphs
    batch = 4
    monkeypatch.setattr(walk_plan, "MAX_ACTIVATION_BYTES", batch * PER_IMAGE * 8)
    x = np.random.default_rng(1).random((batch, 1, 28, 28)).astype(np.float32)
    for engine in (ReferenceInterpreter, IntegerInterpreter):
        engine().run(quantized, x)  # exactly at the budget: runs
        with pytest.raises(InputError, match="over the budget"):
            engine().run(quantized, np.concatenate([x, x[:1]]))


def test_an_allocation_failure_while_binding_is_an_input_error(graphs, monkeypatch):
    _, quantized = graphs

    def no_memory(self, node, value):
        raise MemoryError("Unable to allocate 58.4 GiB")

    monkeypatch.setattr(IntegerInterpreter, "prepare_input", no_memory)
    with pytest.raises(InputError, match="input 'Input3': Unable to allocate"):
        IntegerInterpreter().run(quantized, np.zeros((1, 1, 28, 28), np.float32))
