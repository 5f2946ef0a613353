"""Hand-built float graphs and shared helpers for the PTQ optimisation tests
(sign optimisation, single shift, rescale encodings, CLE, per channel).

Every builder returns a verified graph with `meta["shape"]` on every node
(`infer_shapes`). Affine nodes are canonical (Gemm `transB=1` with W (out, in),
Conv with a bias), named `fcN`/`convN`, with constants `<name>_w`, `<name>_b`.

Zoo helpers: `zoo_model(name)` / `zoo_data(name)` skip (with the reason) when
the model file or its data set is missing; models are loaded once per session
and copied for each test.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from aidge_lite.interp.shapes import infer_shapes
from aidge_lite.ir import AFFINE, Graph, Node, OpType, verify

F32 = np.float32


# --------------------------------------------------------------------- building
def graph_input(g: Graph, name: str, shape) -> str:
    g.add(Node(name, OpType.INPUT, attrs={"shape": [None, *shape], "dtype": "float32"}))
    return name


def gemm(g: Graph, name: str, x: str, weight, bias=None) -> str:
    weight = np.asarray(weight, F32)
    bias = np.zeros(weight.shape[0], F32) if bias is None else np.asarray(bias, F32)
    w = g.add_constant(f"{name}_w", weight).name
    b = g.add_constant(f"{name}_b", bias).name
    g.add(Node(name, OpType.GEMM, [x, w, b], attrs={"transB": 1}))
    return name


def conv(g: Graph, name: str, x: str, weight, bias=None, pads=(1, 1, 1, 1), group: int = 1) -> str:
    weight = np.asarray(weight, F32)
    bias = np.zeros(weight.shape[0], F32) if bias is None else np.asarray(bias, F32)
    w = g.add_constant(f"{name}_w", weight).name
    b = g.add_constant(f"{name}_b", bias).name
    attrs = {"pads": list(pads), "strides": [1, 1]}
    if group != 1:
        attrs["group"] = group
    g.add(Node(name, OpType.CONV, [x, w, b], attrs=attrs))
    return name


def op(g: Graph, name: str, kind: OpType, inputs, **attrs) -> str:
    g.add(Node(name, kind, list(inputs), attrs=dict(attrs)))
    return name


def finish(g: Graph, outputs) -> Graph:
    g.outputs = list(outputs)
    verify(g)
    infer_shapes(g)
    return g


def _rng(seed):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- sign graphs
def conv_chain(act: OpType = OpType.RELU, seed: int = 0) -> Graph:
    """x (N,1,8,8) -> conv1 -> relu1 -> pool -> conv2 -> act2 -> gap -> flat -> fc (output).

    `act` replaces the second Relu (e.g. LEAKY_RELU, attrs alpha=0.1)."""
    r = _rng(seed)
    g = Graph("conv_chain")
    graph_input(g, "x", [1, 8, 8])
    conv(g, "conv1", "x", r.standard_normal((4, 1, 3, 3)) * 0.5, r.standard_normal(4) * 0.1)
    op(g, "relu1", OpType.RELU, ["conv1"])
    op(g, "pool", OpType.MAXPOOL, ["relu1"], kernel_shape=[2, 2], strides=[2, 2])
    conv(g, "conv2", "pool", r.standard_normal((6, 4, 3, 3)) * 0.3, r.standard_normal(6) * 0.1)
    extra = {"alpha": 0.1} if act is OpType.LEAKY_RELU else {}
    op(g, "act2", act, ["conv2"], **extra)
    op(g, "gap", OpType.GLOBAL_AVGPOOL, ["act2"])
    op(g, "flat", OpType.FLATTEN, ["gap"], axis=1)
    gemm(g, "fc", "flat", r.standard_normal((3, 6)), r.standard_normal(3) * 0.1)
    return finish(g, ["fc"])


def concat_relu_branches(seed: int = 1) -> Graph:
    """x (N,4) -> fc0 -> relu0 -+-> fca -> relua -+-> cat -> fc_out
                                +-> fcb -> relub -+
    Both Concat operands are non-negative."""
    r = _rng(seed)
    g = Graph("concat_relu")
    graph_input(g, "x", [4])
    gemm(g, "fc0", "x", r.standard_normal((5, 4)), r.standard_normal(5) * 0.1)
    op(g, "relu0", OpType.RELU, ["fc0"])
    gemm(g, "fca", "relu0", r.standard_normal((3, 5)), r.standard_normal(3) * 0.1)
    op(g, "relua", OpType.RELU, ["fca"])
    gemm(g, "fcb", "relu0", r.standard_normal((2, 5)) * 0.2, r.standard_normal(2) * 0.1)
    op(g, "relub", OpType.RELU, ["fcb"])
    op(g, "cat", OpType.CONCAT, ["relua", "relub"], axis=1)
    gemm(g, "fc_out", "cat", r.standard_normal((3, 5)), r.standard_normal(3) * 0.1)
    return finish(g, ["fc_out"])


def add_relu_branches(seed: int = 2) -> Graph:
    """x (N,4) -> fc0 -> relu0 -+-> fca -> relua -+-> add -> fc_out
                                +-> fcb -> relub -+
    Both Add operands are non-negative."""
    r = _rng(seed)
    g = Graph("add_relu")
    graph_input(g, "x", [4])
    gemm(g, "fc0", "x", r.standard_normal((5, 4)), r.standard_normal(5) * 0.1)
    op(g, "relu0", OpType.RELU, ["fc0"])
    gemm(g, "fca", "relu0", r.standard_normal((3, 5)), r.standard_normal(3) * 0.1)
    op(g, "relua", OpType.RELU, ["fca"])
    gemm(g, "fcb", "relu0", r.standard_normal((3, 5)) * 0.2, r.standard_normal(3) * 0.1)
    op(g, "relub", OpType.RELU, ["fcb"])
    op(g, "add", OpType.ADD, ["relua", "relub"])
    gemm(g, "fc_out", "add", r.standard_normal((2, 3)), r.standard_normal(2) * 0.1)
    return finish(g, ["fc_out"])


def single_fc(seed: int = 3) -> Graph:
    """x (N,4) -> fc (output): only the input's sign decides the input quantizer."""
    r = _rng(seed)
    g = Graph("single_fc")
    graph_input(g, "x", [4])
    gemm(g, "fc", "x", r.standard_normal((3, 4)), r.standard_normal(3) * 0.1)
    return finish(g, ["fc"])


def mixed_residual(width: int = 16, seed: int = 4) -> Graph:
    """The §4.5 residual block: a signed FC branch added to an unsigned post-ReLU skip.

    x (N,8) -> fc1 -> relu1 -+-> fc2 (signed, no Relu) --+-> add -> fc3 (output)
                             +---------------------------+
    fc2 has as much weight as the skip, so the sum is often negative."""
    r = _rng(seed)
    g = Graph("mixed_residual")
    graph_input(g, "x", [8])
    gemm(g, "fc1", "x", r.standard_normal((width, 8)) / np.sqrt(8), r.standard_normal(width) * 0.1)
    op(g, "relu1", OpType.RELU, ["fc1"])
    gemm(g, "fc2", "relu1", r.standard_normal((width, width)) * 1.5 / np.sqrt(width),
         r.standard_normal(width) * 0.1)
    op(g, "add", OpType.ADD, ["fc2", "relu1"])
    gemm(g, "fc3", "add", r.standard_normal((4, width)) / np.sqrt(width), r.standard_normal(4) * 0.1)
    return finish(g, ["fc3"])


def mixed_concat(seed: int = 13) -> Graph:
    """Like `mixed_residual` with a Concat: x -> fc1 -> relu1 -+-> fc2 --+-> cat -> fc3
                                                               +---------+"""
    r = _rng(seed)
    g = Graph("mixed_concat")
    graph_input(g, "x", [8])
    gemm(g, "fc1", "x", r.standard_normal((6, 8)) / np.sqrt(8), r.standard_normal(6) * 0.1)
    op(g, "relu1", OpType.RELU, ["fc1"])
    gemm(g, "fc2", "relu1", r.standard_normal((4, 6)) / np.sqrt(6), r.standard_normal(4) * 0.1)
    op(g, "cat", OpType.CONCAT, ["fc2", "relu1"], axis=1)
    gemm(g, "fc3", "cat", r.standard_normal((3, 10)) / np.sqrt(10), r.standard_normal(3) * 0.1)
    return finish(g, ["fc3"])


# ----------------------------------------------------------------- CLE chains
def _spread_rows(r, shape, lo=0.05, hi=5.0):
    """Random weights whose output channels have very different ranges (CLE has work to do)."""
    w = r.standard_normal(shape)
    gains = np.exp(r.uniform(np.log(lo), np.log(hi), shape[0]))
    return w * gains.reshape((-1,) + (1,) * (len(shape) - 1))


def fc_chain(seed: int = 5) -> Graph:
    """x (N,6) -> fc1 -> relu1 -> fc2 -> relu2 -> fc3 (output), ranges far apart."""
    r = _rng(seed)
    g = Graph("fc_chain")
    graph_input(g, "x", [6])
    gemm(g, "fc1", "x", _spread_rows(r, (8, 6)) * 4.0, r.standard_normal(8) * 0.5)
    op(g, "relu1", OpType.RELU, ["fc1"])
    gemm(g, "fc2", "relu1", _spread_rows(r, (7, 8)) * 0.05, r.standard_normal(7) * 0.1)
    op(g, "relu2", OpType.RELU, ["fc2"])
    gemm(g, "fc3", "relu2", _spread_rows(r, (3, 7)) * 0.7, r.standard_normal(3) * 0.1)
    return finish(g, ["fc3"])


def conv_dw_chain(seed: int = 6) -> Graph:
    """x (N,2,8,8) -> conv1 -> relu1 -> pool -> dw (depthwise, group 4) -> relu2 -> conv3 (1x1, output)."""
    r = _rng(seed)
    g = Graph("conv_dw_chain")
    graph_input(g, "x", [2, 8, 8])
    conv(g, "conv1", "x", _spread_rows(r, (4, 2, 3, 3)) * 2.0, r.standard_normal(4) * 0.3)
    op(g, "relu1", OpType.RELU, ["conv1"])
    op(g, "pool", OpType.MAXPOOL, ["relu1"], kernel_shape=[2, 2], strides=[2, 2])
    conv(g, "dw", "pool", _spread_rows(r, (4, 1, 3, 3)) * 0.1, r.standard_normal(4) * 0.1, group=4)
    op(g, "relu2", OpType.RELU, ["dw"])
    conv(g, "conv3", "relu2", _spread_rows(r, (5, 4, 1, 1)), r.standard_normal(5) * 0.1, pads=(0, 0, 0, 0))
    return finish(g, ["conv3"])


def conv_flatten_gemm(seed: int = 7) -> Graph:
    """x (N,1,6,6) -> conv1 -> relu1 -> flat -> fc (output): Gemm input columns are channel blocks."""
    r = _rng(seed)
    g = Graph("conv_flatten_gemm")
    graph_input(g, "x", [1, 6, 6])
    conv(g, "conv1", "x", _spread_rows(r, (3, 1, 3, 3)) * 3.0, r.standard_normal(3) * 0.2)
    op(g, "relu1", OpType.RELU, ["conv1"])
    op(g, "flat", OpType.FLATTEN, ["relu1"], axis=1)
    gemm(g, "fc", "flat", r.standard_normal((4, 3 * 36)) * 0.05, r.standard_normal(4) * 0.1)
    return finish(g, ["fc"])


def fc_pair_through(kind: OpType, seed: int = 8) -> Graph:
    """x (N,4) -> fc1 -> <kind> -> fc2 (output), kind = Relu / Sigmoid / Tanh."""
    r = _rng(seed)
    g = Graph(f"fc_pair_{kind.value}")
    graph_input(g, "x", [4])
    gemm(g, "fc1", "x", _spread_rows(r, (5, 4)) * 3.0, r.standard_normal(5) * 0.1)
    op(g, "mid", kind, ["fc1"])
    gemm(g, "fc2", "mid", _spread_rows(r, (3, 5)) * 0.1, r.standard_normal(3) * 0.1)
    return finish(g, ["fc2"])


def fc_pair_through_add(seed: int = 9) -> Graph:
    """x (N,4) -> fc0 -> relu0 -+-> fc1 -> add -> fc2 (output)
                                +--------->/
    fc1 -> fc2 goes through an Add: never a CLE pair (relu0 also has two readers)."""
    r = _rng(seed)
    g = Graph("fc_pair_add")
    graph_input(g, "x", [4])
    gemm(g, "fc0", "x", _spread_rows(r, (5, 4)), r.standard_normal(5) * 0.1)
    op(g, "relu0", OpType.RELU, ["fc0"])
    gemm(g, "fc1", "relu0", _spread_rows(r, (5, 5)) * 3.0, r.standard_normal(5) * 0.1)
    op(g, "add", OpType.ADD, ["fc1", "relu0"])
    gemm(g, "fc2", "add", _spread_rows(r, (3, 5)) * 0.1, r.standard_normal(3) * 0.1)
    return finish(g, ["fc2"])


def fc_pair_second_reader(seed: int = 10) -> Graph:
    """x (N,4) -> fc1 -> relu1 -+-> fc2 (output 0)
                                +-> fc3 (output 1)
    relu1 has two readers: fc1 -> fc2 must not be equalised (fc3 would see the scale)."""
    r = _rng(seed)
    g = Graph("fc_pair_two_readers")
    graph_input(g, "x", [4])
    gemm(g, "fc1", "x", _spread_rows(r, (5, 4)) * 3.0, r.standard_normal(5) * 0.1)
    op(g, "relu1", OpType.RELU, ["fc1"])
    gemm(g, "fc2", "relu1", _spread_rows(r, (3, 5)) * 0.1, r.standard_normal(3) * 0.1)
    gemm(g, "fc3", "relu1", _spread_rows(r, (2, 5)) * 0.1, r.standard_normal(2) * 0.1)
    return finish(g, ["fc2", "fc3"])


def branching_with_chain(seed: int = 11) -> Graph:
    """A graph with a branch (fork + Add) *and* an equalisable pair fc_a -> fc_b before it:

    x (N,4) -> fc_a -> relu_a -> fc_b -> relu_b -+-> fc_c --+-> add -> fc_out
                                                 +----------+
    """
    r = _rng(seed)
    g = Graph("branching_with_chain")
    graph_input(g, "x", [4])
    gemm(g, "fc_a", "x", _spread_rows(r, (5, 4)) * 3.0, r.standard_normal(5) * 0.1)
    op(g, "relu_a", OpType.RELU, ["fc_a"])
    gemm(g, "fc_b", "relu_a", _spread_rows(r, (5, 5)) * 0.1, r.standard_normal(5) * 0.1)
    op(g, "relu_b", OpType.RELU, ["fc_b"])
    gemm(g, "fc_c", "relu_b", r.standard_normal((5, 5)) * 0.3, r.standard_normal(5) * 0.1)
    op(g, "add", OpType.ADD, ["fc_c", "relu_b"])
    gemm(g, "fc_out", "add", r.standard_normal((3, 5)), r.standard_normal(3) * 0.1)
    return finish(g, ["fc_out"])


def fc_with_zero_channel(seed: int = 12) -> Graph:
    """x (N,4) -> fc1 (row 2 all zero) -> relu1 -> fc2 (output)."""
    r = _rng(seed)
    w1 = r.standard_normal((5, 4))
    w1[2] = 0.0
    g = Graph("fc_zero_channel")
    graph_input(g, "x", [4])
    gemm(g, "fc1", "x", w1, r.standard_normal(5) * 0.1)
    op(g, "relu1", OpType.RELU, ["fc1"])
    gemm(g, "fc2", "relu1", r.standard_normal((3, 5)), r.standard_normal(3) * 0.1)
    return finish(g, ["fc2"])


# ------------------------------------------------------------------ utilities
def weights_of(graph: Graph) -> dict[str, np.ndarray]:
    """{constant name: copy of its array} for the weights and biases of every affine node."""
    out = {}
    for node in graph.topo_order():
        if node.op in AFFINE:
            for name in node.inputs[1:]:
                out[name] = np.array(graph.constant(name), copy=True)
    return out


def rel_error(approx, exact) -> float:
    """max|approx - exact| / max|exact|."""
    approx, exact = np.asarray(approx, np.float64), np.asarray(exact, np.float64)
    return float(np.abs(approx - exact).max() / np.abs(exact).max())


def accuracy_of(scores, labels) -> float:
    return float(np.mean(np.argmax(np.asarray(scores).reshape(len(labels), -1), axis=1) == labels))


# ---------------------------------------------------------------------- zoo
@lru_cache(maxsize=None)
def _zoo_cached(name: str):
    from aidge_lite.models import zoo

    return zoo.load(name)


def zoo_model(name: str) -> Graph:
    """A fresh copy of zoo model `name`; skip (with the reason) if its file is missing."""
    try:
        return _zoo_cached(name).copy()
    except FileNotFoundError as exc:
        pytest.skip(f"{name}: {exc}")


@lru_cache(maxsize=None)
def _dataset_cached(kind: str):
    from aidge_lite.models import datasets

    return datasets.mnist() if kind == "mnist" else datasets.digits()


def zoo_data(name: str):
    """The Split of zoo model `name` (skip if its data is missing)."""
    from aidge_lite.models import zoo

    try:
        return _dataset_cached(zoo.dataset(name))
    except (FileNotFoundError, ImportError) as exc:
        pytest.skip(f"{name}: data set missing: {exc}")


def f32(x) -> np.ndarray:
    return np.asarray(x).astype(np.float32)


def spread_subset(data, n: int):
    """n test images spread over the whole test set (MNIST's is sorted by class), and labels."""
    step = max(1, len(data.test_x) // n)
    return data.test_x[::step][:n], data.test_y[::step][:n]
