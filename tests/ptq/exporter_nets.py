"""Small networks shaped like what exporters produce (float32 weights, random but fixed):

- `mobilenet_v2`: input normalisation left in the graph, conv-BN-ReLU6, depthwise-BN-ReLU6,
  projection conv-BN, a residual Add, global pool, classifier;
- `squeeze_excite`: input scaling, SiLU as Sigmoid * x, a squeeze-and-excitation gate
  (ReduceMean, 1x1 convs, HardSwish, HardSigmoid, Mul of two activations), a BatchNorm
  after no conv, Tanh, a residual Add, LeakyRelu, classifier.
"""
from __future__ import annotations

import numpy as np

from aidge_lite.ir import Graph, OpType

from . import builders as B

F32 = np.float32


def _bn(g, name, x, channels, rng):
    params = [g.add_constant(f"{name}_{k}", v.astype(F32)).name for k, v in
              (("s", rng.uniform(0.6, 1.4, channels)), ("b", rng.standard_normal(channels) * 0.1),
               ("m", rng.standard_normal(channels) * 0.1), ("v", rng.uniform(0.5, 1.5, channels)))]
    return B.add_op(g, name, OpType.BATCHNORM, [x] + params, epsilon=1e-5)


def _conv(g, name, x, shape, rng, group=1, pads=(1, 1, 1, 1), gain=0.4):
    B.add_conv(g, name, x, rng.standard_normal(shape) * gain, rng.standard_normal(shape[0]) * 0.1, pads=pads)
    if group > 1:
        g.node(name).attrs["group"] = group
    return name


def _normalised_input(g, channels):
    B.add_input(g, "x", [None, channels, 8, 8])
    k = g.add_constant("k255", np.array(1 / 255, F32)).name
    mean = g.add_constant("mean", np.linspace(0.4, 0.6, channels, dtype=F32).reshape(1, channels, 1, 1)).name
    std = g.add_constant("std", np.linspace(0.2, 0.3, channels, dtype=F32).reshape(1, channels, 1, 1)).name
    B.add_op(g, "to_unit", OpType.MUL, ["x", k])
    B.add_op(g, "center", OpType.SUB, ["to_unit", mean])
    return B.add_op(g, "norm", OpType.DIV, ["center", std])


def mobilenet_v2(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("mobilenet_v2_block")
    x = _normalised_input(g, 3)
    _conv(g, "stem", x, (8, 3, 3, 3), rng)
    B.add_op(g, "stem_relu6", OpType.CLIP, [_bn(g, "stem_bn", "stem", 8, rng)], min=0.0, max=6.0)
    _conv(g, "expand", "stem_relu6", (16, 8, 1, 1), rng, pads=(0, 0, 0, 0))
    B.add_op(g, "expand_relu6", OpType.CLIP, [_bn(g, "expand_bn", "expand", 16, rng)], min=0.0, max=6.0)
    _conv(g, "dw", "expand_relu6", (16, 1, 3, 3), rng, group=16, gain=0.8)
    B.add_op(g, "dw_relu6", OpType.CLIP, [_bn(g, "dw_bn", "dw", 16, rng)], min=0.0, max=6.0)
    _conv(g, "project", "dw_relu6", (8, 16, 1, 1), rng, pads=(0, 0, 0, 0), gain=0.3)
    B.add_op(g, "residual", OpType.ADD, [_bn(g, "project_bn", "project", 8, rng), "stem_relu6"])
    B.add_op(g, "pool", OpType.GLOBAL_AVGPOOL, ["residual"])
    B.add_op(g, "flat", OpType.FLATTEN, ["pool"], axis=1)
    B.add_gemm(g, "classifier", "flat", rng.standard_normal((5, 8)) * 0.5, rng.standard_normal(5) * 0.1)
    return B.finish(g, ["classifier"])


def squeeze_excite(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("squeeze_excite")
    x = _normalised_input(g, 3)
    _conv(g, "conv1", x, (8, 3, 3, 3), rng)
    B.add_op(g, "relu6", OpType.CLIP, ["conv1"], min=0.0, max=6.0)
    _conv(g, "dw", "relu6", (8, 1, 3, 3), rng, group=8, gain=0.5)
    B.add_op(g, "sig", OpType.SIGMOID, ["dw"])
    B.add_op(g, "silu", OpType.MUL, ["dw", "sig"])
    B.add_op(g, "squeeze", OpType.REDUCE_MEAN, ["silu"], axes=[2, 3], keepdims=1)
    _conv(g, "se1", "squeeze", (4, 8, 1, 1), rng, pads=(0, 0, 0, 0), gain=0.5)
    B.add_op(g, "hswish", OpType.HARD_SWISH, ["se1"])
    _conv(g, "se2", "hswish", (8, 4, 1, 1), rng, pads=(0, 0, 0, 0), gain=0.5)
    B.add_op(g, "hsig", OpType.HARD_SIGMOID, ["se2"], alpha=1 / 6, beta=0.5)
    B.add_op(g, "excite", OpType.MUL, ["silu", "hsig"])
    _bn(g, "bn", "excite", 8, rng)
    B.add_op(g, "tanh", OpType.TANH, ["bn"])
    _conv(g, "conv3", "tanh", (8, 8, 3, 3), rng, gain=0.2)
    B.add_op(g, "res", OpType.ADD, ["conv3", "bn"])
    B.add_op(g, "lrelu", OpType.LEAKY_RELU, ["res"], alpha=0.1)
    B.add_op(g, "gap", OpType.GLOBAL_AVGPOOL, ["lrelu"])
    B.add_op(g, "flat", OpType.FLATTEN, ["gap"], axis=1)
    B.add_gemm(g, "fc", "flat", rng.standard_normal((5, 8)) * 0.5, rng.standard_normal(5) * 0.1)
    return B.finish(g, ["fc"])


def images(n: int, seed: int, channels: int = 3) -> np.ndarray:
    """Smooth random 'images' in [0, 255] (a blurred noise field per channel)."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (n, channels, 10, 10))
    blurred = sum(noise[:, :, i:i + 8, j:j + 8] for i in range(3) for j in range(3)) / 9
    return blurred.astype(F32)
