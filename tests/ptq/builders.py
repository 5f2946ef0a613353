"""Small float graphs for the PTQ tests, built directly with the IR.

Every builder returns a verified `Graph` whose nodes carry `meta["shape"]`
(like a graph from `load_onnx`, unless `shapes=False`), with hand-picked
float32 weights so that tests can compute their expectations with plain NumPy
from the original arrays (`WEIGHTS`, or `graph.constant(...)` read before any
pass runs).

Naming: an affine node `fc1` has constants `fc1_w` and `fc1_b`.
"""
from __future__ import annotations

import numpy as np

from aidge_lite.interp.shapes import infer_shapes
from aidge_lite.ir import Graph, Node, OpType, verify

F32 = np.float32

# ----------------------------------------------------------------- MLP weights
# Max |W| per layer: alpha1 = 1.5, alpha2 = 0.8, alpha3 = 2.6 (none a power of two,
# so a swapped multiply/divide or a missed factor cannot cancel out).
MLP_WEIGHTS = {
    "fc1": (
        np.array([[0.5, -1.2, 0.3],
                  [1.5, 0.25, -0.75],
                  [-0.6, 0.9, 1.1],
                  [0.2, -0.4, 0.8]], F32),
        np.array([0.1, -0.2, 0.05, 0.3], F32),
    ),
    "fc2": (
        np.array([[0.7, -0.35, 0.2, 0.45],
                  [-0.8, 0.6, -0.1, 0.3],
                  [0.25, 0.5, -0.65, -0.15]], F32),
        np.array([0.05, -0.1, 0.2], F32),
    ),
    "fc3": (
        np.array([[1.3, -2.6, 0.9],
                  [-1.7, 0.4, 2.2]], F32),
        np.array([0.25, -0.5], F32),
    ),
}


def mlp_calibration(n: int = 64, seed: int = 0) -> np.ndarray:
    """Calibration inputs for `mlp3` (N x 3, float32)."""
    return (np.random.default_rng(seed).standard_normal((n, 3)) * 2.0).astype(F32)


def mlp_forward(x, weights=None) -> dict[str, np.ndarray]:
    """Plain float64 NumPy forward of `mlp3` (independent of aidge_lite)."""
    weights = weights or MLP_WEIGHTS
    w = {k: (v[0].astype(np.float64), v[1].astype(np.float64)) for k, v in weights.items()}
    out = {"x": np.asarray(x, np.float64)}
    out["fc1"] = out["x"] @ w["fc1"][0].T + w["fc1"][1]
    out["relu1"] = np.maximum(out["fc1"], 0.0)
    out["fc2"] = out["relu1"] @ w["fc2"][0].T + w["fc2"][1]
    out["relu2"] = np.maximum(out["fc2"], 0.0)
    out["fc3"] = out["relu2"] @ w["fc3"][0].T + w["fc3"][1]
    return out


def ratios(scaled, reference, rel: float = 1e-6) -> np.ndarray:
    """scaled / reference where |reference| is not negligible (flattened)."""
    scaled, reference = np.asarray(scaled, np.float64), np.asarray(reference, np.float64)
    mask = np.abs(reference) > rel * max(np.abs(reference).max(initial=0.0), 1e-300)
    return scaled[mask] / reference[mask]


def round_half_away(v) -> np.ndarray:
    """Independent half-away-from-zero rounding (test oracle)."""
    v = np.asarray(v, np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


# --------------------------------------------------------------------- helpers
def add_input(graph: Graph, name: str, shape) -> str:
    graph.add(Node(name, OpType.INPUT, attrs={"shape": list(shape), "dtype": "float32"}))
    return name


def add_gemm(graph: Graph, name: str, x: str, weight, bias=None) -> str:
    """Canonical Gemm (`y = x @ W.T + b`, W of shape (out, in))."""
    inputs = [x, graph.add_constant(f"{name}_w", np.asarray(weight, F32)).name]
    if bias is not None:
        inputs.append(graph.add_constant(f"{name}_b", np.asarray(bias, F32)).name)
    graph.add(Node(name, OpType.GEMM, inputs, attrs={"transB": 1}))
    return name


def add_conv(graph: Graph, name: str, x: str, weight, bias=None, pads=(1, 1, 1, 1)) -> str:
    inputs = [x, graph.add_constant(f"{name}_w", np.asarray(weight, F32)).name]
    if bias is not None:
        inputs.append(graph.add_constant(f"{name}_b", np.asarray(bias, F32)).name)
    graph.add(Node(name, OpType.CONV, inputs, attrs={"pads": list(pads), "strides": [1, 1]}))
    return name


def add_op(graph: Graph, name: str, op: OpType, inputs, **attrs) -> str:
    graph.add(Node(name, op, list(inputs), attrs=dict(attrs)))
    return name


def finish(graph: Graph, outputs, shapes: bool = True) -> Graph:
    graph.outputs = list(outputs)
    verify(graph)
    if shapes:
        infer_shapes(graph)
    return graph


def structure(graph: Graph) -> dict[str, tuple[OpType, list[str]]]:
    """{name: (op, inputs)} of every non-constant node."""
    return {n.name: (n.op, list(n.inputs)) for n in graph.topo_order() if n.op is not OpType.CONSTANT}


def structure_list(graph: Graph) -> list[tuple[str, OpType, list[str]]]:
    return [(n.name, n.op, list(n.inputs)) for n in graph.topo_order() if n.op is not OpType.CONSTANT]


def rescalers(graph: Graph) -> dict[str, tuple[str, list[str]]]:
    """{name: (role, inputs)} of every SCALING / QUANTIZER node."""
    return {n.name: (n.attrs.get("role"), list(n.inputs)) for n in graph.topo_order()
            if n.op in (OpType.SCALING, OpType.QUANTIZER)}


# -------------------------------------------------------------------- builders
def mlp3(weights=None, shapes: bool = True) -> Graph:
    """x (N, 3) -> fc1 -> relu1 -> fc2 -> relu2 -> fc3 (output)."""
    weights = weights or MLP_WEIGHTS
    g = Graph("mlp3")
    add_input(g, "x", [None, 3])
    add_gemm(g, "fc1", "x", *weights["fc1"])
    add_op(g, "relu1", OpType.RELU, ["fc1"])
    add_gemm(g, "fc2", "relu1", *weights["fc2"])
    add_op(g, "relu2", OpType.RELU, ["fc2"])
    add_gemm(g, "fc3", "relu2", *weights["fc3"])
    return finish(g, ["fc3"], shapes)


RES_WEIGHTS = {
    "fc1": (np.array([[0.9, -0.4, 0.2, 0.1], [-0.3, 1.2, 0.5, -0.6],
                      [0.4, 0.3, -0.7, 0.8], [0.6, -0.2, 0.1, 0.35]], F32),
            np.array([0.1, 0.2, -0.1, 0.05], F32)),
    "fc2": (np.array([[0.05, -0.02, 0.04, 0.01], [-0.03, 0.06, 0.02, -0.05],
                      [0.02, 0.01, -0.07, 0.03], [0.04, -0.03, 0.05, 0.02]], F32),
            np.array([0.01, -0.02, 0.0, 0.03], F32)),
    "fc3": (np.array([[0.5, -1.1, 0.7, 0.3], [-0.9, 0.4, 0.2, 1.3]], F32),
            np.array([0.2, -0.1], F32)),
}


def residual_mlp(fc2_gain: float = 1.0) -> Graph:
    """x -> fc1 -> relu1 -+-> fc2 ---> add -> relu2 -> fc3
                          +---------->/
    relu1 is a fork feeding the Add directly: a purely residual branch.
    fc2 has small weights (max |W| = 0.07 * fc2_gain) so the two branches carry very
    different factors: with the default gain the fc2 branch arrives *larger* after
    normalize_parameters, with fc2_gain=100 the residual branch does.
    """
    g = Graph("residual_mlp")
    add_input(g, "x", [None, 4])
    add_gemm(g, "fc1", "x", *RES_WEIGHTS["fc1"])
    add_op(g, "relu1", OpType.RELU, ["fc1"])
    w2, b2 = RES_WEIGHTS["fc2"]
    add_gemm(g, "fc2", "relu1", w2 * F32(fc2_gain), b2)
    add_op(g, "add", OpType.ADD, ["fc2", "relu1"])
    add_op(g, "relu2", OpType.RELU, ["add"])
    add_gemm(g, "fc3", "relu2", *RES_WEIGHTS["fc3"])
    return finish(g, ["fc3"])


def residual_conv(seed: int = 3) -> Graph:
    """A conv residual block (resnet style) on N x 2 x 6 x 6 inputs:
    x -> conv1 -> relu1 -+-> conv2 -> relu2 -> conv3 --> add -> relu3 -> pool -> flat -> fc
                         +-------------------------------/
    """
    rng = np.random.default_rng(seed)
    g = Graph("residual_conv")
    add_input(g, "x", [None, 2, 6, 6])
    add_conv(g, "conv1", "x", rng.standard_normal((3, 2, 3, 3)) * 0.5, rng.standard_normal(3) * 0.1)
    add_op(g, "relu1", OpType.RELU, ["conv1"])
    add_conv(g, "conv2", "relu1", rng.standard_normal((3, 3, 3, 3)) * 0.3, rng.standard_normal(3) * 0.1)
    add_op(g, "relu2", OpType.RELU, ["conv2"])
    add_conv(g, "conv3", "relu2", rng.standard_normal((3, 3, 1, 1)) * 0.2, rng.standard_normal(3) * 0.1,
             pads=(0, 0, 0, 0))
    add_op(g, "add", OpType.ADD, ["conv3", "relu1"])
    add_op(g, "relu3", OpType.RELU, ["add"])
    add_op(g, "pool", OpType.GLOBAL_AVGPOOL, ["relu3"])
    add_op(g, "flat", OpType.FLATTEN, ["pool"], axis=1)
    add_gemm(g, "fc", "flat", rng.standard_normal((4, 3)), rng.standard_normal(4) * 0.1)
    return finish(g, ["fc"])


def concat_block(seed: int = 4) -> Graph:
    """x -> fc1 -> relu1 -+-> fca -> relu_a --+
                          +-> fcb ------------+-> cat -> fc_out
                          +-------------------+
    Operand 2 of the Concat (relu1, a fork) is a purely residual branch.
    """
    rng = np.random.default_rng(seed)
    g = Graph("concat_block")
    add_input(g, "x", [None, 4])
    add_gemm(g, "fc1", "x", rng.standard_normal((5, 4)), rng.standard_normal(5) * 0.1)
    add_op(g, "relu1", OpType.RELU, ["fc1"])
    add_gemm(g, "fca", "relu1", rng.standard_normal((3, 5)) * 2.0, rng.standard_normal(3) * 0.1)
    add_op(g, "relu_a", OpType.RELU, ["fca"])
    add_gemm(g, "fcb", "relu1", rng.standard_normal((2, 5)) * 0.1, rng.standard_normal(2) * 0.1)
    add_op(g, "cat", OpType.CONCAT, ["relu_a", "fcb", "relu1"], axis=1)
    add_gemm(g, "fc_out", "cat", rng.standard_normal((3, 10)), rng.standard_normal(3) * 0.1)
    return finish(g, ["fc_out"])


def skip_from_affine(seed: int = 12) -> Graph:
    """x -> fc1 -+-> fc2 --> add -> fc3     (linear bottleneck: the skip reads an affine
                 +---------/                 output directly, no activation in between)
    """
    rng = np.random.default_rng(seed)
    g = Graph("skip_from_affine")
    add_input(g, "x", [None, 4])
    add_gemm(g, "fc1", "x", rng.standard_normal((4, 4)), rng.standard_normal(4) * 0.1)
    add_gemm(g, "fc2", "fc1", rng.standard_normal((4, 4)) * 0.05, rng.standard_normal(4) * 0.1)
    add_op(g, "add", OpType.ADD, ["fc2", "fc1"])
    add_gemm(g, "fc3", "add", rng.standard_normal((2, 4)), rng.standard_normal(2) * 0.1)
    return finish(g, ["fc3"])


def skip_from_input(seed: int = 13) -> Graph:
    """x -+-> fc1 --> add -> fc3     (the graph input feeds the join directly)
          +----------/
    """
    rng = np.random.default_rng(seed)
    g = Graph("skip_from_input")
    add_input(g, "x", [None, 4])
    add_gemm(g, "fc1", "x", rng.standard_normal((4, 4)) * 0.05, rng.standard_normal(4) * 0.1)
    add_op(g, "add", OpType.ADD, ["fc1", "x"])
    add_gemm(g, "fc3", "add", rng.standard_normal((2, 4)), rng.standard_normal(2) * 0.1)
    return finish(g, ["fc3"])


def no_affine() -> Graph:
    """x (N, 1, 4, 4) -> relu -> pool -> flat: no affine node, no join."""
    g = Graph("no_affine")
    add_input(g, "x", [None, 1, 4, 4])
    add_op(g, "relu", OpType.RELU, ["x"])
    add_op(g, "pool", OpType.MAXPOOL, ["relu"], kernel_shape=[2, 2], strides=[2, 2])
    add_op(g, "flat", OpType.FLATTEN, ["pool"], axis=1)
    return finish(g, ["flat"])


def conv_bn(bias: bool = True, seed: int = 5) -> Graph:
    """x (N, 2, 5, 5) -> conv -> bn -> relu."""
    rng = np.random.default_rng(seed)
    g = Graph("conv_bn")
    add_input(g, "x", [None, 2, 5, 5])
    add_conv(g, "conv", "x", rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3) if bias else None)
    params = [rng.uniform(0.5, 2.0, 3), rng.standard_normal(3), rng.standard_normal(3), rng.uniform(0.2, 3.0, 3)]
    names = [g.add_constant(f"bn_{k}", np.asarray(v, F32)).name
             for k, v in zip(("scale", "beta", "mean", "var"), params)]
    add_op(g, "bn", OpType.BATCHNORM, ["conv", *names], epsilon=1e-5)
    add_op(g, "relu", OpType.RELU, ["bn"])
    return finish(g, ["relu"])


def gemm_bn(seed: int = 6) -> Graph:
    """x (N, 4) -> fc -> bn -> relu."""
    rng = np.random.default_rng(seed)
    g = Graph("gemm_bn")
    add_input(g, "x", [None, 4])
    add_gemm(g, "fc", "x", rng.standard_normal((3, 4)), rng.standard_normal(3))
    params = [rng.uniform(0.5, 2.0, 3), rng.standard_normal(3), rng.standard_normal(3), rng.uniform(0.2, 3.0, 3)]
    names = [g.add_constant(f"bn_{k}", np.asarray(v, F32)).name
             for k, v in zip(("scale", "beta", "mean", "var"), params)]
    add_op(g, "bn", OpType.BATCHNORM, ["fc", *names], epsilon=1e-5)
    add_op(g, "relu", OpType.RELU, ["bn"])
    return finish(g, ["relu"])


def matmul_add(seed: int = 7) -> Graph:
    """x (N, 4) -> MatMul(W (4, 3)) -> Add(b (3,)) -> relu."""
    rng = np.random.default_rng(seed)
    g = Graph("matmul_add")
    add_input(g, "x", [None, 4])
    g.add_constant("W", rng.standard_normal((4, 3)).astype(F32))
    g.add_constant("b", rng.standard_normal(3).astype(F32))
    add_op(g, "mm", OpType.MATMUL, ["x", "W"])
    add_op(g, "plus", OpType.ADD, ["mm", "b"])
    add_op(g, "relu", OpType.RELU, ["plus"])
    return finish(g, ["relu"])


def conv_add_bias(seed: int = 8) -> Graph:
    """x (N, 2, 5, 5) -> Conv (no bias) -> Add(b (3, 1, 1)) -> relu  (mnist-8 style)."""
    rng = np.random.default_rng(seed)
    g = Graph("conv_add_bias")
    add_input(g, "x", [None, 2, 5, 5])
    add_conv(g, "conv", "x", rng.standard_normal((3, 2, 3, 3)))
    g.add_constant("b", rng.standard_normal((3, 1, 1)).astype(F32))
    add_op(g, "plus", OpType.ADD, ["conv", "b"])
    add_op(g, "relu", OpType.RELU, ["plus"])
    return finish(g, ["relu"])


def reshape_initializer(seed: int = 9) -> Graph:
    """x (N, 4) -> MatMul(Reshape(W_flat (12,), [4, 3])) -> Add(b): the mnist-8 Gemm."""
    rng = np.random.default_rng(seed)
    g = Graph("reshape_initializer")
    add_input(g, "x", [None, 4])
    g.add_constant("W_flat", rng.standard_normal(12).astype(F32))
    add_op(g, "W_reshaped", OpType.RESHAPE, ["W_flat"], shape=[4, 3])
    g.add_constant("b", rng.standard_normal(3).astype(F32))
    add_op(g, "mm", OpType.MATMUL, ["x", "W_reshaped"])
    add_op(g, "plus", OpType.ADD, ["mm", "b"])
    return finish(g, ["plus"])


def softmax_head(seed: int = 10) -> Graph:
    """x (N, 4) -> fc -> identity -> dropout -> fc2 -> softmax (output)."""
    rng = np.random.default_rng(seed)
    g = Graph("softmax_head")
    add_input(g, "x", [None, 4])
    add_gemm(g, "fc", "x", rng.standard_normal((5, 4)), rng.standard_normal(5))
    add_op(g, "ident", OpType.IDENTITY, ["fc"])
    add_op(g, "drop", OpType.DROPOUT, ["ident"])
    add_gemm(g, "fc2", "drop", rng.standard_normal((3, 5)), rng.standard_normal(3))
    add_op(g, "prob", OpType.SOFTMAX, ["fc2"], axis=1)
    return finish(g, ["prob"])


def sigmoid_graph(seed: int = 11) -> Graph:
    """x (N, 4) -> fc -> sigmoid -> fc2 (the sigmoid becomes a lookup table)."""
    rng = np.random.default_rng(seed)
    g = Graph("sigmoid_graph")
    add_input(g, "x", [None, 4])
    add_gemm(g, "fc", "x", rng.standard_normal((5, 4)), rng.standard_normal(5))
    add_op(g, "squash", OpType.SIGMOID, ["fc"])
    add_gemm(g, "fc2", "squash", rng.standard_normal((3, 5)), rng.standard_normal(3))
    return finish(g, ["fc2"])


def softmax_middle(seed: int = 14) -> Graph:
    """x (N, 4) -> fc -> softmax -> fc2: a softmax that is not the last op has no integer form."""
    rng = np.random.default_rng(seed)
    g = Graph("softmax_middle")
    add_input(g, "x", [None, 4])
    add_gemm(g, "fc", "x", rng.standard_normal((5, 4)), rng.standard_normal(5))
    add_op(g, "soft", OpType.SOFTMAX, ["fc"], axis=1)
    add_gemm(g, "fc2", "soft", rng.standard_normal((3, 5)), rng.standard_normal(3))
    return finish(g, ["fc2"])


def quantizer_graph(scale, rounding: str = "half_away", nb_bits: int = 8) -> Graph:
    """x (N, 4) -> QUANTIZER: a one-node quantized graph for the rounding tests."""
    g = Graph("quantizer")
    add_input(g, "x", [None, 4])
    lo, hi = -(1 << (nb_bits - 1)), (1 << (nb_bits - 1)) - 1
    g.add(Node("q", OpType.QUANTIZER, ["x"], attrs={
        "scale": np.float64(scale), "rounding": rounding, "lo": lo, "hi": hi, "dtype": "int8",
        "signed": True, "role": "input", "mode": "float"}))
    g.outputs = ["q"]
    g.meta.update(quantized=True, integer=True, nb_bits=nb_bits, output_scale={"q": float(scale)})
    verify(g)
    return g


# ------------------------------------------------------------------- zoo helpers
# Zoo models that cannot be quantized today because of a known bug (one place to edit).
ZOO_BUGS: dict[str, str] = {}


def load_zoo_or_skip(name: str) -> Graph:
    """`models.zoo.load(name)`, skipping the test while its ONNX file does not exist yet."""
    import pytest
    from aidge_lite.models import zoo

    try:
        zoo.path(name)
    except FileNotFoundError as exc:
        pytest.skip(f"zoo model {name!r} not available yet: {exc}")
    return zoo.load(name)


def zoo_split(name: str):
    """The dataset split (`models.datasets.Split`) a zoo model is evaluated on."""
    from aidge_lite.models import datasets, zoo

    return getattr(datasets, zoo.dataset(name))()


def zoo_params(names=None, bugs=None):
    """pytest params over the zoo, with a strict xfail on models hit by a known bug."""
    import pytest
    from aidge_lite.models import zoo

    bugs = ZOO_BUGS if bugs is None else bugs
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=bugs[n])) if n in bugs else n
            for n in (names or zoo.NAMES)]
