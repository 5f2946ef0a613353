"""Public Hypothesis strategies drawing random float graphs and their quantized
versions, for end-to-end tests of the PTQ and of the two quantized engines.

``float_graphs()``
    A small float32 graph built with :class:`aidge_lite.ir.Graph`: an input
    ``N x C x H x W`` (C 1..4, H, W 4..10) or ``N x F``, then a random
    sequence of blocks: Conv (kernel 1..3 per axis, stride 1..2, dilation
    1..2, asymmetric pads, plain / grouped / depthwise with a channel
    multiplier, with or without a bias), Relu, MaxPool and AveragePool
    (pads, dilation, ceil_mode, count_include_pad), GlobalAveragePool,
    residual Add (conv + skip, or two conv branches), Concat of 2-3 conv
    branches on axis 1, zero Pad of H and W, Flatten + Gemm (``transB`` 0 or 1) and, on vectors,
    Gemm / Relu / residual Add. Weights are random normal with occasional
    all-zero or nearly dead (x 1e-5) output channels and, rarely, an all-zero
    tensor.

``targets()``
    A random :class:`aidge_lite.Target` with a non-raising overflow rule.

``quantizable_graphs()``
    A float graph, a random float calibration batch, ``nb_bits`` (2..8,
    occasionally 12 or 16) and a target, quantized with
    :func:`aidge_lite.quantize_network`, plus a random float test batch
    (sometimes beyond the calibration range, to exercise clipping).

Shapes stay small so that hundreds of examples run in seconds once the Numba
kernels are compiled. Bulk arrays come from a NumPy generator seeded by a
drawn integer; every structural choice is a Hypothesis draw, so failures
shrink to a short block list.

The block builder is in `graph_builder`, the two-engine runner (`run_engines`,
`assert_bit_exact`) in `engines`; their public names are importable from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from ..ir import Graph, Node, OpType
from ..target import ROUNDINGS, RESCALES, Target
from .engines import EngineRun, assert_bit_exact, first_mismatch, run_engines  # noqa: F401
from .graph_builder import _Builder, window_overlaps_input  # noqa: F401

__all__ = [
    "FloatGraphCase", "QuantizedGraphCase", "float_graphs", "targets", "quantizable_graphs",
    "nb_bits_values", "ptq_options", "window_overlaps_input", "DEFAULT_RESCALES",
    "EngineRun", "run_engines", "first_mismatch", "assert_bit_exact",
]

#: Rescale modes drawn by default (the brief's integer targets).
DEFAULT_RESCALES = ("float", "fixed_point")
#: Accumulator widths drawn by default.
DEFAULT_ACC_BITS = (32, 64)
#: Overflow rules that let a graph run to the end (they warn and count).
NON_RAISING_OVERFLOWS = ("saturate", "wrap")

_IMAGE_BLOCKS = ("conv", "conv", "conv", "relu", "relu", "maxpool", "avgpool", "global_avgpool",
                 "residual", "residual", "concat", "flatten_gemm", "pad")
_VECTOR_BLOCKS = ("gemm", "gemm", "relu", "residual")


@dataclass
class FloatGraphCase:
    """A random float graph: `graph`, its per-sample input shape, the drawn blocks."""

    graph: Graph
    input_shape: tuple
    blocks: list = field(default_factory=list)

    def __repr__(self):
        return (f"FloatGraphCase(input={self.input_shape}, blocks={self.blocks}, "
                f"outputs={self.graph.outputs})")


@dataclass
class QuantizedGraphCase:
    """A quantized random graph with everything needed to rerun the case."""

    float_graph: Graph
    graph: Graph
    calibration: np.ndarray
    test_x: np.ndarray
    nb_bits: int
    target: Target
    options: dict
    input_shape: tuple
    blocks: list

    def __repr__(self):
        return (f"QuantizedGraphCase(input={self.input_shape}, blocks={self.blocks}, "
                f"nb_bits={self.nb_bits}, target={self.target}, options={self.options}, "
                f"calibration={self.calibration.shape}, test_x={self.test_x.shape} "
                f"{self.test_x.dtype}, outputs={self.graph.outputs})")


def nb_bits_values():
    """2..8 most of the time, 12 or 16 about one draw in ten."""
    return st.integers(0, 9).flatmap(
        lambda k: st.sampled_from((12, 16)) if k == 0 else st.integers(2, 8))


@st.composite
def targets(draw, rescales=DEFAULT_RESCALES, acc_bits=DEFAULT_ACC_BITS,
            overflows=NON_RAISING_OVERFLOWS, roundings=ROUNDINGS):
    """A random `Target` (any rounding, the given rescale modes and widths)."""
    return Target(acc_bits=draw(st.sampled_from(acc_bits)),
                  rounding=draw(st.sampled_from(roundings)),
                  rescale=draw(st.sampled_from(rescales)),
                  overflow=draw(st.sampled_from(overflows)))


@st.composite
def float_graphs(draw, max_blocks: int = 5, allow_vector_input: bool = True,
                 allow_multiple_outputs: bool = True):
    """A random quantizable float32 graph (see the module docstring)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b = _Builder(draw, rng, "random")
    if allow_vector_input and draw(st.integers(0, 4)) == 0:
        shape = (draw(st.integers(1, 16)),)
    else:
        shape = (draw(st.integers(1, 4)), draw(st.integers(4, 10)), draw(st.integers(4, 10)))
    input_shape = shape
    x = b.graph.add(Node("input", OpType.INPUT, attrs={"shape": [None, *shape],
                                                          "dtype": "float32"})).name
    tensors = []  # candidates for an extra output
    for _ in range(draw(st.integers(1, max_blocks))):
        if len(shape) == 3:
            kind = draw(st.sampled_from(_IMAGE_BLOCKS))
        else:
            kind = draw(st.sampled_from(_VECTOR_BLOCKS))
        b.blocks.append(kind)
        if kind == "conv":
            x, shape = b.conv(x, shape)
        elif kind == "relu":
            x = b.node("relu", OpType.RELU, [x])
        elif kind == "maxpool":
            x, shape = b.pool(x, shape, OpType.MAXPOOL)
        elif kind == "avgpool":
            x, shape = b.pool(x, shape, OpType.AVGPOOL)
        elif kind == "pad":  # zero constant padding of H and W (ONNX pads, all 4 axes)
            top, left, bottom, right = (draw(st.integers(0, 2)) for _ in range(4))
            x = b.node("pad", OpType.PAD, [x], pads=[0, 0, top, left, 0, 0, bottom, right],
                       mode="constant")
            shape = (shape[0], shape[1] + top + bottom, shape[2] + left + right)
        elif kind == "global_avgpool":
            x, shape = b.node("gap", OpType.GLOBAL_AVGPOOL, [x]), (shape[0], 1, 1)
        elif kind == "flatten_gemm":
            x = b.node("flatten", OpType.FLATTEN, [x], axis=1)
            x, shape = b.gemm(x, int(np.prod(shape)))
        elif kind == "gemm":
            x, shape = b.gemm(x, shape[0])
        elif kind == "residual" and len(shape) == 1:
            if draw(st.booleans()):  # gemm + skip
                branch, _ = b.gemm(x, shape[0], shape[0])
                operands = [b.maybe_relu(branch), x]
            else:
                out = draw(st.integers(1, 8))
                operands = [b.maybe_relu(b.gemm(x, shape[0], out)[0]) for _ in range(2)]
                shape = (out,)
            if draw(st.booleans()):
                operands.reverse()
            x = b.maybe_relu(b.node("add", OpType.ADD, operands))
        elif kind == "residual":
            if draw(st.booleans()):  # conv + skip
                branch, _ = b.conv(x, shape, k_out=shape[0], stride=1)
                operands = [b.maybe_relu(branch), x]
            else:  # two conv branches of one shape
                k_out, stride = draw(st.integers(1, 4)), draw(st.integers(1, 2))
                branches = [b.conv(x, shape, k_out=k_out, stride=stride) for _ in range(2)]
                operands = [b.maybe_relu(name) for name, _ in branches]
                shape = branches[0][1]
            if draw(st.booleans()):
                operands.reverse()
            x = b.maybe_relu(b.node("add", OpType.ADD, operands))
        elif kind == "concat":
            stride = draw(st.integers(1, 2))
            branches = [b.conv(x, shape, stride=stride)
                        for _ in range(draw(st.sampled_from((2, 2, 3))))]
            names = [b.maybe_relu(name) for name, _ in branches]
            x = b.node("concat", OpType.CONCAT, names, axis=1)
            shape = (sum(s[0] for _, s in branches), *branches[0][1][1:])
        tensors.append(x)
    if len(shape) == 3 and draw(st.integers(0, 2)) == 0:  # classifier head
        b.blocks.append("head")
        x = b.node("flatten", OpType.FLATTEN, [x], axis=1)
        x, shape = b.gemm(x, int(np.prod(shape)), draw(st.integers(1, 10)))
    b.graph.outputs = [x]
    extra = [t for t in tensors if t != x]
    if allow_multiple_outputs and extra and draw(st.integers(0, 7)) == 0:
        b.graph.outputs.append(draw(st.sampled_from(extra)))
        b.blocks.append("extra_output")
    return FloatGraphCase(b.graph, input_shape, b.blocks)


def _float_batch(rng, n, shape, kind, scale):
    if kind == "normal":
        x = rng.normal(0.0, scale, (n, *shape))
    elif kind == "uniform":
        x = rng.uniform(0.0, scale, (n, *shape))
    elif kind == "pixels":
        x = rng.integers(0, 256, (n, *shape)).astype(np.float64)
    else:  # "zeros"
        x = np.zeros((n, *shape))
    return x


@st.composite
def ptq_options(draw, target: Target, per_channel_rescales=RESCALES):
    """Random extra options of `quantize_network` (per_channel, optimize_signs,
    single_shift, cle). `per_channel` is only drawn when the target's rescale
    mode is in `per_channel_rescales` (lets a test steer around a known problem)."""
    single_shift = draw(st.integers(0, 3)) == 0
    per_channel = target.rescale in per_channel_rescales and draw(st.booleans())
    return dict(per_channel=per_channel, optimize_signs=draw(st.booleans()),
                single_shift=single_shift, cle=draw(st.integers(0, 3)) == 0)


@st.composite
def quantizable_graphs(draw, max_blocks: int = 5, rescales=DEFAULT_RESCALES,
                       acc_bits=DEFAULT_ACC_BITS, extended: bool = False,
                       per_channel_rescales=RESCALES, nb_bits=None):
    """A random float graph quantized with random bits and target, plus a test batch.

    With ``extended`` the other PTQ options are drawn too (see `ptq_options`);
    pass ``rescales=RESCALES`` to draw every rescale mode of `Target`.
    """
    import aidge_lite

    case = draw(float_graphs(max_blocks=max_blocks))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(("normal", "normal", "uniform", "pixels"))
                if draw(st.integers(0, 19)) else st.just("zeros"))
    scale = draw(st.sampled_from((0.1, 1.0, 10.0, 255.0)))
    calib = _float_batch(rng, draw(st.integers(1, 8)), case.input_shape, kind, scale)
    calib = calib.astype(np.float32)
    stretch = draw(st.sampled_from((1.0, 1.0, 1.0, 1.5, 4.0)))
    test_kind = kind if kind != "zeros" else "normal"
    test_x = _float_batch(rng, draw(st.integers(1, 4)), case.input_shape, test_kind,
                          scale * stretch)
    test_x = test_x.astype(draw(st.sampled_from((np.float32, np.float32, np.float64))))
    bits = draw(nb_bits_values() if nb_bits is None else nb_bits)
    target = draw(targets(rescales=rescales, acc_bits=acc_bits))
    options = draw(ptq_options(target, per_channel_rescales)) if extended else {}
    qgraph = aidge_lite.quantize_network(case.graph, calib, nb_bits=bits, target=target, **options)
    return QuantizedGraphCase(case.graph, qgraph, calib, test_x, bits, target, options,
                              case.input_shape, case.blocks)
