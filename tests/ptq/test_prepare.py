"""`prepare`: BN folding, MatMul/bias fusion, constant folding, Softmax/no-op removal, refusal."""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite.errors import QuantizationError
from aidge_lite.ir import OpType
from aidge_lite.ptq import PTQConfig
from aidge_lite.ptq.prepare import prepare

from . import builders as B

load_or_skip = B.load_zoo_or_skip


def run1(graph, x, dtype=np.float64):
    out = aidge_lite.run(graph, x, dtype=dtype)
    assert len(out) == 1
    return next(iter(out.values()))


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def ops(graph):
    return [n.op for n in graph.topo_order() if n.op is not OpType.CONSTANT]


def prepared(graph):
    g = graph.copy()
    prepare(g, PTQConfig())
    return g


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("builder, shape", [(lambda: B.conv_bn(bias=True), (4, 2, 5, 5)),
                                            (lambda: B.conv_bn(bias=False), (4, 2, 5, 5)),
                                            (B.gemm_bn, (6, 4))], ids=["conv_bias", "conv_nobias", "gemm"])
def test_batchnorm_folded(builder, shape):
    graph = builder()
    x = rand(shape)
    ref = run1(graph, x)
    g = prepared(graph)
    assert OpType.BATCHNORM not in ops(g)
    affine = [n for n in g.topo_order() if n.op in (OpType.CONV, OpType.GEMM)]
    assert len(affine) == 1 and len(affine[0].inputs) == 3  # bias created / kept
    assert B.structure(g)["relu"] == (OpType.RELU, [affine[0].name])
    assert rel_err(run1(g, x), ref) <= 1e-5


def test_batchnorm_folded_resnet_tiny():
    graph = load_or_skip("resnet_tiny")
    x = np.random.default_rng(0).uniform(0, 255, (8, 1, 28, 28)).astype(np.float32)
    ref = run1(graph, x)
    g = prepared(graph)
    assert OpType.BATCHNORM not in ops(g)
    assert ops(g).count(OpType.CONV) == 6 and ops(g).count(OpType.GEMM) == 1
    assert rel_err(run1(g, x), ref) <= 1e-5


@pytest.mark.parametrize("name", B.zoo_params())
def test_prepare_zoo_preserves_output(name):
    """Every zoo model: prepare leaves only quantizable ops and keeps the output (1e-5)."""
    graph = load_or_skip(name)
    x = np.asarray(B.zoo_split(name).test_x[:16], np.float32)
    ref = run1(graph, x)
    g = prepared(graph)
    kinds = set(ops(g))
    assert not kinds & {OpType.BATCHNORM, OpType.MATMUL, OpType.SOFTMAX, OpType.IDENTITY, OpType.DROPOUT}
    for node in g.topo_order():
        if node.op in (OpType.CONV, OpType.GEMM):
            assert len(node.inputs) == 3 and all(g.is_constant(i) for i in node.inputs[1:])
        if node.op is OpType.GEMM:
            assert node.attrs == {"transB": 1}
    assert rel_err(run1(g, x), ref) <= 1e-5


def test_matmul_add_becomes_gemm_with_bias():
    graph = B.matmul_add()
    w, b = graph.constant("W"), graph.constant("b")
    x = rand((5, 4))
    ref = run1(graph, x)
    g = prepared(graph)
    assert ops(g) == [OpType.INPUT, OpType.GEMM, OpType.RELU]
    gemm = next(n for n in g.topo_order() if n.op is OpType.GEMM)
    assert gemm.attrs == {"transB": 1}
    assert gemm.inputs[0] == "x" and len(gemm.inputs) == 3
    np.testing.assert_array_equal(g.constant(gemm.inputs[1]), w.T)   # canonical (out, in)
    np.testing.assert_array_equal(g.constant(gemm.inputs[2]), b)     # the Add's bias, fused
    assert B.structure(g)["relu"] == (OpType.RELU, [gemm.name])
    assert rel_err(run1(g, x), ref) <= 1e-6


def test_conv_add_bias_fused():
    graph = B.conv_add_bias()
    b = graph.constant("b")
    x = rand((3, 2, 5, 5))
    ref = run1(graph, x)
    g = prepared(graph)
    assert ops(g) == [OpType.INPUT, OpType.CONV, OpType.RELU]
    conv = g.node("conv")
    assert len(conv.inputs) == 3
    np.testing.assert_array_equal(g.constant(conv.inputs[2]), b.reshape(-1))
    assert B.structure(g)["relu"] == (OpType.RELU, ["conv"])
    assert rel_err(run1(g, x), ref) <= 1e-6


def test_reshape_of_initializer_folded():
    graph = B.reshape_initializer()
    w = graph.constant("W_flat").reshape(4, 3)
    x = rand((5, 4))
    ref = run1(graph, x)
    g = prepared(graph)
    assert OpType.RESHAPE not in ops(g) and OpType.MATMUL not in ops(g) and OpType.ADD not in ops(g)
    assert ops(g) == [OpType.INPUT, OpType.GEMM]
    gemm = next(n for n in g.topo_order() if n.op is OpType.GEMM)
    np.testing.assert_array_equal(g.constant(gemm.inputs[1]), w.T)
    assert rel_err(run1(g, x), ref) <= 1e-6


def test_final_softmax_popped_and_noops_removed():
    graph = B.softmax_head()
    x = rand((5, 4))
    logits_ref = aidge_lite.run(graph, x, dtype=np.float64, intermediates=True)["fc2"]
    g = prepared(graph)
    assert B.structure(g) == {
        "x": (OpType.INPUT, []),
        "fc": (OpType.GEMM, ["x", "fc_w", "fc_b"]),
        "fc2": (OpType.GEMM, ["fc", "fc2_w", "fc2_b"]),
    }
    assert g.outputs == ["fc2"]
    assert g.meta["float_outputs"] == ["prob"]  # finalize gives the name back
    assert rel_err(run1(g, x), logits_ref) <= 1e-6


def test_unquantizable_op_refused_naming_the_node_and_the_options():
    with pytest.raises(QuantizationError, match=r"node 'soft'.*Softmax.*exclude=\['soft'\].*fallback=True"):
        prepare(B.softmax_middle(), PTQConfig())


def test_unquantizable_op_refused_by_quantize_network():
    with pytest.raises(QuantizationError, match="soft.*Softmax"):
        aidge_lite.quantize_network(B.softmax_middle(), rand((8, 4)))


def test_prepare_mnist8():
    graph = load_or_skip("mnist8")
    x = np.asarray(np.random.default_rng(0).uniform(0, 255, (4, 1, 28, 28)), np.float32)
    ref = run1(graph, x)
    g = prepared(graph)
    kinds = ops(g)
    assert kinds.count(OpType.CONV) == 2 and kinds.count(OpType.GEMM) == 1
    assert OpType.ADD not in kinds and OpType.MATMUL not in kinds
    for node in g.topo_order():
        if node.op in (OpType.CONV, OpType.GEMM):
            assert len(node.inputs) == 3 and all(g.is_constant(i) for i in node.inputs[1:])
    assert rel_err(run1(g, x), ref) <= 1e-5


def test_prepare_leaves_mlp_alone():
    graph = B.mlp3()
    g = prepared(graph)
    assert B.structure_list(g) == B.structure_list(graph)
    for name in ("fc1_w", "fc1_b", "fc2_w", "fc2_b", "fc3_w", "fc3_b"):
        np.testing.assert_array_equal(g.constant(name), graph.constant(name))


@pytest.mark.parametrize("builder", [B.matmul_add, B.conv_add_bias])
def test_prepare_without_shape_meta(builder):
    graph = builder()
    for node in graph.topo_order():
        node.meta.pop("shape", None)
    g = prepared(graph)
    assert OpType.ADD not in ops(g) and OpType.MATMUL not in ops(g)
