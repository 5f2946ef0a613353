"""Regression: the accumulated normalisation factor of a deep network must stay finite.

normalize_parameters divides each affine node's weights by alpha = max|W| and carries
the product of the 1/alpha along the path. Light DenseNet-121 (fake weights: BN scales
~1e-5 lowered to per-channel 1x1 convs, Concat joins arbitrating to the max) pushed
that product past float64's range: inf biases, then inf * 0 = nan, then a nan Quantizer
scale. Here: a chain of Gemms whose small weights (1e-4) multiply the factor by 1e4 per
layer (1e320 after 80), while the biases keep every activation near 1.
"""
from __future__ import annotations

import numpy as np

import aidge_lite
from aidge_lite.ir import Graph, OpType
from aidge_lite.ptq import PTQConfig, run_pipeline
from aidge_lite.ptq.calibration_data import CalibrationSet
from aidge_lite.ptq.insert_scaling import insert_scaling
from aidge_lite.ptq.normalize_parameters import normalize_parameters
from aidge_lite.ptq.prepare import prepare

from . import builders as B

DEPTH = 80


def tiny_weight_chain() -> Graph:
    g = Graph("tiny_weight_chain")
    x = B.add_input(g, "x", [None, 2])
    for i in range(DEPTH):
        x = B.add_gemm(g, f"fc{i}", x, [[1e-4, -5e-5], [3e-5, 1e-4]], [1.0, 0.5])
        if i < DEPTH - 1:
            x = B.add_op(g, f"relu{i}", OpType.RELU, [x])
    return B.finish(g, [x])


def _finite(graph: Graph) -> list[str]:
    bad = []
    for node in graph.nodes():
        for key, value in node.attrs.items():
            if isinstance(value, (float, np.ndarray)) and np.asarray(value).dtype.kind == "f" \
                    and not np.isfinite(value).all():
                bad.append(f"{node.name}.{key}")
    return bad


def test_normalize_parameters_keeps_constants_and_scales_finite():
    graph = tiny_weight_chain()
    x = np.random.default_rng(0).uniform(-1, 1, (8, 2)).astype(np.float32)
    run_pipeline(graph, PTQConfig(calibration=CalibrationSet(x), nb_bits=8),
                 passes=(prepare, insert_scaling, normalize_parameters))
    assert _finite(graph) == []


def test_deep_tiny_weight_chain_quantizes_close_to_float():
    graph = tiny_weight_chain()
    x = np.random.default_rng(1).uniform(-1, 1, (8, 2)).astype(np.float32)
    ref = aidge_lite.run(graph, x)[graph.outputs[0]]
    qgraph = aidge_lite.quantize_network(graph, x, nb_bits=8)
    assert _finite(qgraph) == []
    out = aidge_lite.dequantize(qgraph, aidge_lite.run(qgraph, x))[qgraph.outputs[0]]
    np.testing.assert_allclose(out, ref, atol=2 * np.abs(ref).max() / 127)
