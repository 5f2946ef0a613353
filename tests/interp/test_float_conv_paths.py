"""The fast convolution paths of the NumPy reference (`interp/float_conv`) against a
plain convolution written as directly as possible, and the fake-quant engine
(float64 BLAS, float64 requantization) against the integer engine, bit for bit.

Cases cover every path: pointwise (1x1, strides 1 and 2), depthwise channels-last
(strides 1/2, dilation, odd pads) and in stride phases (few channels, stride 2),
grouped and dense im2col, batch > 1.
"""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite import Graph, Node, OpType, Target
from aidge_lite.interp import float_conv, float_ops
from aidge_lite.interp.shapes import infer_shapes
from aidge_lite.ir import verify

# (batch, in channels, H, W, out channels, group, kernel, stride, dilation, pads t/l/b/r)
CASES = {
    "pointwise": (2, 8, 7, 5, 6, 1, 1, 1, 1, (0, 0, 0, 0)),
    "pointwise_stride2": (3, 5, 9, 8, 4, 1, 1, 2, 1, (0, 0, 0, 0)),
    "pointwise_padded": (1, 4, 5, 5, 3, 1, 1, 1, 1, (1, 0, 0, 2)),
    "depthwise_3x3": (2, 12, 9, 11, 12, 12, 3, 1, 1, (1, 1, 1, 1)),
    "depthwise_5x5_stride2": (2, 16, 14, 13, 16, 16, 5, 2, 1, (2, 2, 2, 2)),
    "depthwise_wide_stride2": (1, 130, 9, 9, 130, 130, 3, 2, 1, (1, 0, 1, 2)),
    "depthwise_dilated": (2, 6, 12, 10, 6, 6, 3, 1, 2, (2, 2, 2, 2)),
    "depthwise_asymmetric_pads": (1, 5, 8, 7, 5, 5, 3, 2, 1, (0, 1, 2, 0)),
    "depthwise_multiplier": (2, 4, 8, 8, 8, 4, 3, 1, 1, (1, 1, 1, 1)),
    "grouped": (2, 6, 8, 9, 9, 3, 3, 2, 1, (1, 1, 1, 1)),
    "dense_dilated": (2, 3, 10, 9, 4, 1, 3, 1, 2, (0, 2, 1, 0)),
    "dense_stride2": (1, 3, 11, 11, 5, 1, 3, 2, 1, (1, 1, 1, 1)),
}


def _out_hw(h, w, k, s, d, pads):
    return ((h + pads[0] + pads[2] - d * (k - 1) - 1) // s + 1,
            (w + pads[1] + pads[3] - d * (k - 1) - 1) // s + 1)


def plain_conv(x, w, b, stride, dilation, pads, group):
    """Definition of the convolution: a sum over (input channel of the group, i, j) per output."""
    n, c, h, wd = x.shape
    k, cg, kh, _ = w.shape
    oh, ow = _out_hw(h, wd, kh, stride, dilation, pads)
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    y = np.zeros((n, k, oh, ow), x.dtype)
    kg = k // group
    for o in range(k):
        g = o // kg
        for ci in range(cg):
            for i in range(kh):
                for j in range(kh):
                    rows = slice(i * dilation, i * dilation + stride * (oh - 1) + 1, stride)
                    cols = slice(j * dilation, j * dilation + stride * (ow - 1) + 1, stride)
                    y[:, o] += xp[:, g * cg + ci, rows, cols] * w[o, ci, i, j]
    return y + b.reshape(1, -1, 1, 1)


def _operands(case, rng, integer=False):
    n, c, h, wd, k, group, ks, _, _, _ = case
    if integer:  # int8 / uint8 codes and an int32-like bias, as the fake-quant engine sees them
        x = rng.integers(0, 256, (n, c, h, wd)).astype(np.float64)
        w = rng.integers(-127, 128, (k, c // group, ks, ks)).astype(np.float64)
        b = rng.integers(-5000, 5000, k).astype(np.float64)
    else:
        x = rng.standard_normal((n, c, h, wd))
        w = rng.standard_normal((k, c // group, ks, ks))
        b = rng.standard_normal(k)
    return x, w, b


def _fast(x, w, b, case):
    _, _, h, wd, _, group, ks, s, d, pads = case
    return float_ops.conv2d(x, w, b, (s, s), (d, d), pads, _out_hw(h, wd, ks, s, d, pads), group)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_conv_matches_the_plain_definition(name, dtype):
    case = CASES[name]
    x, w, b = (a.astype(dtype) for a in _operands(case, np.random.default_rng(len(name))))
    got = _fast(x, w, b, case)
    want = plain_conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), *case[7:10], case[5])
    assert got.dtype == dtype and got.shape == want.shape
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("name", CASES)
def test_fast_conv_is_exact_on_integer_operands(name):
    """float64 holding integers (the fake-quant engine): every path returns the exact sum."""
    case = CASES[name]
    x, w, b = _operands(case, np.random.default_rng(100 + len(name)), integer=True)
    want = plain_conv(x.astype(np.int64), w.astype(np.int64), b.astype(np.int64), *case[7:10], case[5])
    got = _fast(x, w, b, case)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want.astype(np.float64))


def test_depthwise_paths_agree_with_each_other():
    """The phase path (few channels, strided) and the channels-last one on the same layer."""
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (2, 7, 13, 12)).astype(np.float64)
    w = rng.integers(-127, 128, (7, 9)).astype(np.float64)
    pads, out_hw = (1, 1, 1, 1), _out_hw(13, 12, 3, 2, 1, (1, 1, 1, 1))
    phases = np.concatenate([float_conv._depthwise_phases(float_ops._pad_hw(x[i:i + 1], pads, (0, 0), 0), w,
                                                          (3, 3), (2, 2), out_hw) for i in range(2)])
    nhwc = float_conv._depthwise_nhwc(x, w, (3, 3), (2, 2), (1, 1), pads, out_hw)
    np.testing.assert_array_equal(phases, nhwc)


def test_depthwise_blocks_cover_every_row(monkeypatch):
    """Row blocks smaller than the output (one row each) give the same result."""
    case = CASES["depthwise_5x5_stride2"]
    x, w, b = _operands(case, np.random.default_rng(8), integer=True)
    whole = _fast(x, w, b, case)
    monkeypatch.setattr(float_conv, "DEPTHWISE_BLOCK_BYTES", 1)
    np.testing.assert_array_equal(_fast(x, w, b, case), whole)


# ------------------------------------------------------------ fake-quant vs integer engine
def _graph(case, rng) -> Graph:
    """x -> conv (the case's geometry) -> relu -> 1x1 conv (output)."""
    _, c, h, wd, k, group, ks, s, d, pads = case
    g = Graph("conv_case")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, c, h, wd], "dtype": "float32"}))
    w1 = g.add_constant("w1", (rng.standard_normal((k, c // group, ks, ks)) * 0.4).astype(np.float32)).name
    b1 = g.add_constant("b1", (rng.standard_normal(k) * 0.1).astype(np.float32)).name
    attrs = {"pads": list(pads), "strides": [s, s], "dilations": [d, d], "kernel_shape": [ks, ks]}
    if group != 1:
        attrs["group"] = group
    g.add(Node("conv", OpType.CONV, ["x", w1, b1], attrs=attrs))
    g.add(Node("relu", OpType.RELU, ["conv"]))
    w2 = g.add_constant("w2", (rng.standard_normal((3, k, 1, 1)) * 0.3).astype(np.float32)).name
    b2 = g.add_constant("b2", (rng.standard_normal(3) * 0.1).astype(np.float32)).name
    g.add(Node("out", OpType.CONV, ["relu", w2, b2], attrs={"pads": [0, 0, 0, 0], "strides": [1, 1]}))
    g.outputs = ["out"]
    verify(g)
    infer_shapes(g)
    return g


TARGETS = {
    "default": None,
    "fixed_point_half_up": Target(rescale="fixed_point", rounding="half_up"),
    "fixed_point_half_even": Target(rescale="fixed_point", rounding="half_even"),
    "fixed_point_floor": Target(rescale="fixed_point", rounding="floor"),
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", ["pointwise_stride2", "depthwise_3x3", "depthwise_5x5_stride2",
                                  "depthwise_wide_stride2", "depthwise_dilated", "grouped", "dense_dilated"])
def test_fake_quant_engine_is_bit_exact_with_the_integer_engine(name, target):
    rng = np.random.default_rng(len(name) + len(target))
    case = CASES[name]
    g = _graph(case, rng)
    shape = (4,) + case[1:4]
    q = aidge_lite.quantize_network(g, rng.standard_normal(shape).astype(np.float32), target=TARGETS[target])
    x = rng.standard_normal((3,) + case[1:4]).astype(np.float32) * 1.5  # wider than calibration: clips
    fake = aidge_lite.run(q, x)["out"]
    ints = aidge_lite.run(q, x, engine="integer")["out"]
    np.testing.assert_array_equal(fake, ints)
    assert np.unique(fake).size > 4  # a real output, not a constant


def test_requant_float_route_equals_the_integer_twin():
    """`quant_ops._requant_int_float` against `kernels.requant_int_ref` on accumulators and
    shifts that hit ties, saturation and left shifts; and it declines beyond 2**53."""
    from aidge_lite import kernels
    from aidge_lite.interp.quant_ops import _requant_int_float
    from aidge_lite.kernels.rounding import ROUNDING_NAMES

    rng = np.random.default_rng(3)
    acc = rng.integers(-(1 << 20), 1 << 20, (2, 4, 50)).astype(np.int64)
    acc[0, :, :8] = [-6, -5, -4, -3, 3, 4, 5, 6]  # ties after a shift of 3 with multiplier 4
    multiplier = np.array([4, 1 << 30, (1 << 31) - 1, 12345], np.int64)
    shift = np.array([3, 40, 31, -2], np.int64)
    bounds = np.array([-128, 127], np.int64)
    for mode in ROUNDING_NAMES.values():
        want, got = np.empty(acc.shape, np.float64), np.empty(acc.shape, np.float64)
        kernels.requant_int_ref(acc, multiplier, shift, mode, bounds, want)
        assert _requant_int_float(acc.astype(np.float64), multiplier, shift, mode, bounds, got)
        np.testing.assert_array_equal(got, want)
    big = np.full((1, 4, 2), float(1 << 23))
    assert not _requant_int_float(big, multiplier, shift, 0, bounds, np.empty(big.shape))


# ------------------------------------------------------------ activations written in place
def _shared_conv_graph() -> Graph:
    """x -> conv -> relu -> conv2 -> clip (output); conv also feeds `side` (an Add with relu)."""
    rng = np.random.default_rng(11)
    g = Graph("in_place")
    g.add(Node("x", OpType.INPUT, attrs={"shape": [None, 3, 6, 6], "dtype": "float32"}))
    for name, src, cin in (("conv", "x", 3), ("conv2", "relu", 4)):
        w = g.add_constant(f"{name}_w", rng.standard_normal((4, cin, 3, 3)).astype(np.float32)).name
        g.add(Node(name, OpType.CONV, [src, w], attrs={"pads": [1, 1, 1, 1], "strides": [1, 1]}))
        if name == "conv":
            g.add(Node("relu", OpType.RELU, ["conv"]))
            g.add(Node("side", OpType.ADD, ["conv", "relu"]))
    g.add(Node("clip", OpType.CLIP, ["conv2"], attrs={"min": -1.0, "max": 1.0}))
    g.add(Node("relu_side", OpType.RELU, ["side"]))
    g.outputs = ["clip", "relu_side"]
    verify(g)
    infer_shapes(g)
    return g


def test_activations_in_place_change_no_value_another_node_reads():
    """`relu` may not overwrite `conv` (also read by `side`); `clip` and `relu_side` may
    overwrite their operand. Results equal the walk that keeps every tensor, and the
    caller's input is untouched."""
    from aidge_lite.interp.reference import ReferenceInterpreter

    g = _shared_conv_graph()
    x = np.random.default_rng(12).standard_normal((2, 3, 6, 6)).astype(np.float32)
    x_before = x.copy()
    every = aidge_lite.run(g, x, intermediates=True)
    assert (every["conv"] < 0).any() and (np.abs(every["conv2"]) > 1).any()  # nothing clipped there
    interp = ReferenceInterpreter()
    out = interp.run(g, x)
    interp.keep_all = False  # as during that run (reset after it)
    assert interp.owns(g.node("clip")) and interp.owns(g.node("relu_side"))
    assert not interp.owns(g.node("relu"))
    for name in g.outputs:
        np.testing.assert_array_equal(out[name], every[name])
    np.testing.assert_array_equal(every["side"], every["conv"] + np.maximum(every["conv"], 0))
    np.testing.assert_array_equal(x, x_before)
