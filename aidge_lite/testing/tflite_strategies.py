"""Hypothesis strategies drawing single-op int8 ``.tflite`` models and input batches.

Every strategy draws ``(model_bytes, inputs)`` where ``inputs`` maps each
model input name to a batch ``(N, *shape[1:])`` (models have batch 1; see
:func:`aidge_lite.testing.litert_oracle.run_litert`). Models are valid for
LiteRT's reference kernels: the draws respect the Prepare checks of
LiteRT 2.3 (listed in each strategy), some of which abort the process
instead of failing cleanly.

Scales are drawn so that the effective requantization multipliers cover
normal values, values just below and just above 1, exactly 1, large values
and tiny values (whose fixed-point shift goes below -31). Zero points
include the extremes -128 and 127. Tensor contents come from a NumPy
generator seeded by the draw (fast; Hypothesis still shrinks the seed).
"""
import numpy as np
from hypothesis import strategies as st

from .tflite_build import Graph

__all__ = ["scales", "zero_points", "activations", "int8_batches", "float_batches",
           "conv2d_models", "depthwise_conv2d_models", "fully_connected_models",
           "binary_models", "pool2d_models", "mean_models", "pad_models", "reshape_models",
           "squeeze_models", "concatenation_models", "softmax_models", "logistic_models",
           "tanh_models", "hard_swish_models", "quantize_models", "dequantize_models",
           "OP_STRATEGIES", "single_op_models"]

_F32 = np.float32


def scales(lo=-12.0, hi=4.0):
    """Positive float32 scales ``2**u``, ``u`` uniform in [lo, hi], plus a few round values."""
    return st.one_of(st.floats(lo, hi).map(lambda u: float(_F32(2.0 ** u))),
                     st.sampled_from([v for v in (1 / 256, 1 / 128, 0.02, 0.1, 1.0)
                                      if 2.0 ** lo <= v <= 2.0 ** hi]))


def zero_points():
    """int8 zero points, extremes -128 / 127 and 0 drawn often."""
    return st.one_of(st.sampled_from([-128, 127, 0]), st.integers(-128, 127))


def activations():
    """Fused activations supported for int8."""
    return st.sampled_from(["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])


def multipliers():
    """Effective multipliers: normal, just below 1, 1, just above 1, large, tiny."""
    return st.one_of(
        st.floats(-6.0, 2.0).map(lambda u: 2.0 ** u),
        st.integers(1, 20).map(lambda k: 1.0 - 2.0 ** -k),
        st.just(1.0),
        st.integers(1, 20).map(lambda k: 1.0 + 2.0 ** -k),
        st.floats(1.0, 16.0).map(lambda u: 2.0 ** u),
        st.floats(-40.0, -20.0).map(lambda u: 2.0 ** u))


def _out_scale(draw, ref, natural):
    """``ref / m`` for a drawn multiplier ``m``, or a 'natural' scale around ``natural``."""
    if draw(st.booleans()):
        return float(_F32(natural * 2.0 ** draw(st.floats(-2.0, 2.0))))
    return float(_F32(ref / draw(multipliers())))


def _rng(draw):
    return np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))


@st.composite
def int8_batches(draw, shape, max_batch=3):
    """int8 batches ``(N, *shape[1:])``: uniform, all -128, all 127, only extremes, or small."""
    n, rng = draw(st.integers(1, max_batch)), _rng(draw)
    size = (n, *shape[1:])
    mode = draw(st.sampled_from(["uniform", "uniform", "min", "max", "extremes", "small"]))
    if mode == "min":
        return np.full(size, -128, np.int8)
    if mode == "max":
        return np.full(size, 127, np.int8)
    if mode == "extremes":
        return rng.choice(np.array([-128, 127], np.int8), size)
    lim = 128 if mode == "uniform" else 4
    return rng.integers(-lim, lim, size).astype(np.int8)


@st.composite
def float_batches(draw, shape, scale, zero_point, max_batch=3):
    """float32 batches around the int8 grid ``scale * (q - zero_point)``: random values,
    (near) rounding ties (half-way points) and out-of-range values."""
    n, rng = draw(st.integers(1, max_batch)), _rng(draw)
    size = (n, *shape[1:])
    q = rng.integers(-140, 140, size) - zero_point
    half = draw(st.booleans())
    jitter = 0.5 if half else rng.uniform(-0.5, 0.5, size)
    return (_F32(scale) * (q + jitter)).astype(np.float32)


def _weights(rng, shape):
    return rng.integers(-127, 128, shape).astype(np.int8)  # int8 weights are in [-127, 127]


def _bias(rng, n, big):
    """int32 bias in +-2**12 or +-2**20 (far from int32 accumulator overflow)."""
    lim = 2 ** 20 if big else 2 ** 12
    return rng.integers(-lim, lim, n).astype(np.int32)


@st.composite
def _spatial(draw, max_hw=10, max_k=4, max_stride=3, max_dil=3):
    """(h, w, kh, kw, stride, dilation, padding) with a valid (>= 1) output."""
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    kh, kw = draw(st.integers(1, max_k)), draw(st.integers(1, max_k))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    dil = (draw(st.integers(1, max_dil)), draw(st.integers(1, max_dil)))
    if padding == "VALID":
        h = draw(st.integers(dil[0] * (kh - 1) + 1, dil[0] * (kh - 1) + max_hw))
        w = draw(st.integers(dil[1] * (kw - 1) + 1, dil[1] * (kw - 1) + max_hw))
    else:
        h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    return h, w, kh, kw, stride, dil, padding


def _finish(draw, g, float_grid=(1.0, 0)):
    """``(model_bytes, inputs)``: an int8 batch per graph input (float32 inputs: a
    :func:`float_batches` batch on the grid ``float_grid = (scale, zero_point)``)."""
    inputs = {}
    for name in g.inputs:
        t = g.tensor(name)
        if t.dtype == "float32":
            inputs[name] = draw(float_batches(t.shape, *float_grid))
        else:
            inputs[name] = draw(int8_batches(t.shape))
    n = min(len(v) for v in inputs.values())
    return g.build(), {k: v[:n] for k, v in inputs.items()}


@st.composite
def conv2d_models(draw, max_channels=8):
    """CONV_2D: per-channel weights, bias (required by LiteRT), stride, dilation, padding,
    fused activation; effective multipliers ``in * w[c] / out`` from :func:`multipliers`."""
    h, w, kh, kw, stride, dil, padding = draw(_spatial())
    c, o = draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))
    rng, in_s = _rng(draw), draw(scales())
    w_s = (draw(scales(-10, -2)) * 2.0 ** rng.uniform(-1, 1, o)).astype(np.float32)
    out_s = _out_scale(draw, in_s * w_s.max(), in_s * w_s.max() * 127 * np.sqrt(kh * kw * c))
    g = Graph()
    x = g.input("input", (1, h, w, c), in_s, draw(zero_points()))
    g.conv2d(x, _weights(rng, (o, kh, kw, c)), _bias(rng, o, draw(st.booleans())),
             w_scale=w_s, out_scale=out_s, out_zero_point=draw(zero_points()), stride=stride,
             padding=padding, dilation=dil, activation=draw(activations()), name="output")
    return _finish(draw, g)


@st.composite
def depthwise_conv2d_models(draw, max_channels=6, max_multiplier=3, optional_bias=False):
    """DEPTHWISE_CONV_2D: weights [1, kh, kw, C*M], per-channel (axis 3), bias.

    ``optional_bias`` also draws models without bias: valid for the reference
    kernels, but LiteRT's optimized int8 depthwise kernel segfaults on them.
    """
    h, w, kh, kw, stride, dil, padding = draw(_spatial())
    c, m = draw(st.integers(1, max_channels)), draw(st.integers(1, max_multiplier))
    rng, in_s = _rng(draw), draw(scales())
    w_s = (draw(scales(-10, -2)) * 2.0 ** rng.uniform(-1, 1, c * m)).astype(np.float32)
    out_s = _out_scale(draw, in_s * w_s.max(), in_s * w_s.max() * 127 * np.sqrt(kh * kw))
    has_bias = not optional_bias or draw(st.booleans())
    bias = _bias(rng, c * m, draw(st.booleans())) if has_bias else None
    g = Graph()
    x = g.input("input", (1, h, w, c), in_s, draw(zero_points()))
    g.depthwise_conv2d(x, _weights(rng, (1, kh, kw, c * m)), bias, w_scale=w_s, out_scale=out_s,
                       out_zero_point=draw(zero_points()), stride=stride, padding=padding,
                       dilation=dil, activation=draw(activations()), name="output")
    return _finish(draw, g)


@st.composite
def fully_connected_models(draw, max_features=32, per_channel=False):
    """FULLY_CONNECTED: per-tensor weights [out, in] (per-channel if ``per_channel``),
    optional bias, input rank 2-4, keep_num_dims."""
    n_in, n_out = draw(st.integers(1, max_features)), draw(st.integers(1, max_features))
    lead = draw(st.lists(st.integers(1, 3), max_size=2))
    rng, in_s = _rng(draw), draw(scales())
    w_s = draw(scales(-10, -2))
    if per_channel and draw(st.booleans()):
        w_s = (w_s * 2.0 ** rng.uniform(-1, 1, n_out)).astype(np.float32)
    w_max = float(np.max(w_s))
    out_s = _out_scale(draw, in_s * w_max, in_s * w_max * 127 * np.sqrt(n_in))
    bias = _bias(rng, n_out, draw(st.booleans())) if draw(st.booleans()) else None
    g = Graph()
    x = g.input("input", (1, *lead, n_in), in_s, draw(zero_points()))
    g.fully_connected(x, _weights(rng, (n_out, n_in)), bias, w_scale=w_s, out_scale=out_s,
                      out_zero_point=draw(zero_points()), keep_num_dims=draw(st.booleans()),
                      activation=draw(activations()), name="output")
    return _finish(draw, g)


@st.composite
def _broadcast_shapes(draw, max_rank=4, max_dim=5):
    """Two broadcast-compatible shapes with batch 1; the second may have a lower rank."""
    rank = draw(st.integers(1, max_rank))
    full = [1] + [draw(st.integers(1, max_dim)) for _ in range(rank - 1)]
    a = [d if draw(st.booleans()) else 1 for d in full]
    b = [d if draw(st.booleans()) else 1 for d in full]
    a[0] = b[0] = 1
    if draw(st.booleans()):
        b = b[draw(st.integers(0, rank - 1)):]  # lower rank: a constant operand
    return tuple(a), tuple(b)


@st.composite
def binary_models(draw, opcode="ADD"):
    """ADD / SUB / MUL with broadcasting; the second operand is an input or a constant.

    ADD and SUB: LiteRT computes ``2 * max(s_a, s_b) / (2**20 * s_out)`` with
    ``QuantizeMultiplierSmallerThanOneExp`` and aborts when it is >= 1, so
    ``s_out > 2 * max(s_a, s_b) / 2**20`` (drawn up to 2**-20 below the limit).
    """
    sa, sb = draw(scales()), draw(scales())
    a_shape, b_shape = draw(_broadcast_shapes())
    rng, g = _rng(draw), Graph()
    a = g.input("a", a_shape, sa, draw(zero_points()))
    if len(b_shape) < len(a_shape) or draw(st.booleans()):
        b = g.const(rng.integers(-128, 128, b_shape), "int8", sb, draw(zero_points()), name="b")
    else:
        b = g.input("b", b_shape, sb, draw(zero_points()))
    if opcode == "MUL":
        out_s = _out_scale(draw, sa * sb, sa * sb * 128)
    else:
        limit = 2 * max(sa, sb) / 2 ** 20
        out_s = float(_F32(limit / (1 - 2.0 ** -draw(st.integers(1, 20)))))
        if draw(st.integers(0, 3)):
            out_s = float(_F32(max(sa, sb) * 2.0 ** draw(st.floats(-6.0, 12.0))))
        while 2 * max(sa, sb) / (2 ** 20 * out_s) >= 1 - 2.0 ** -21:
            out_s = float(np.nextafter(_F32(out_s), _F32(np.inf)))
    getattr(g, opcode.lower())(a, b, out_scale=out_s, out_zero_point=draw(zero_points()),
                               activation=draw(activations()), name="output")
    return _finish(draw, g)


@st.composite
def pool2d_models(draw, opcode="AVERAGE_POOL_2D"):
    """AVERAGE_POOL_2D / MAX_POOL_2D: filter (may exceed the input with SAME), stride,
    padding, fused activation; the output keeps the input quantization."""
    h, w, kh, kw, stride, _, padding = draw(_spatial(max_dil=1))
    g = Graph()
    x = g.input("input", (1, h, w, draw(st.integers(1, 6))), draw(scales()), draw(zero_points()))
    pool = g.average_pool2d if opcode == "AVERAGE_POOL_2D" else g.max_pool2d
    pool(x, (kh, kw), stride, padding, draw(activations()), name="output")
    return _finish(draw, g)


def _shape(draw, min_rank=1, max_rank=4, max_dim=6):
    rank = draw(st.integers(min_rank, max_rank))
    return (1, *[draw(st.integers(1, max_dim)) for _ in range(rank - 1)])


@st.composite
def mean_models(draw):
    """MEAN over a non-empty axis set (often [1, 2] of a 4D tensor), keep_dims, with the
    input quantization or another one."""
    if draw(st.booleans()):
        shape, axes = (1, draw(st.integers(1, 8)), draw(st.integers(1, 8)), draw(st.integers(1, 6))), [1, 2]
    else:
        shape = _shape(draw, 2)
        axes = draw(st.lists(st.integers(1, len(shape) - 1), min_size=1, unique=True))
    in_s, g = draw(scales()), Graph()
    x = g.input("input", shape, in_s, draw(zero_points()))
    same = draw(st.booleans())
    out_s = None if same else _out_scale(draw, in_s, in_s)
    g.mean(x, axes, draw(st.booleans()), out_s, None if same else draw(zero_points()), name="output")
    return _finish(draw, g)


@st.composite
def pad_models(draw):
    """PAD (int32 paddings constant, batch axis unpadded); pads with the zero point."""
    shape, g = _shape(draw), Graph()
    pads = [[0, 0]] + [[draw(st.integers(0, 3)), draw(st.integers(0, 3))] for _ in shape[1:]]
    x = g.input("input", shape, draw(scales()), draw(zero_points()))
    g.pad(x, pads, name="output")
    return _finish(draw, g)


@st.composite
def reshape_models(draw):
    """RESHAPE to a batch-1 shape made of a permutation of the size's factors, maybe with -1."""
    shape, g = _shape(draw), Graph()
    size, factors = int(np.prod(shape)), []
    rest = size
    for p in (2, 3, 5):
        while rest % p == 0:
            factors.append(p)
            rest //= p
    factors = draw(st.permutations(factors + ([rest] if rest > 1 else [])))
    cut = sorted(draw(st.lists(st.integers(0, len(factors)), max_size=3)))
    parts = [int(np.prod(factors[i:j])) for i, j in zip([0] + cut, cut + [len(factors)])]
    new = [1] + parts
    if draw(st.booleans()):
        new[draw(st.integers(1, len(new) - 1))] = -1
    x = g.input("input", shape, draw(scales()), draw(zero_points()))
    g.reshape(x, new, name="output")
    return _finish(draw, g)


@st.composite
def squeeze_models(draw):
    """SQUEEZE given unit axes (batch kept), or every unit axis (``squeeze_dims`` empty)."""
    shape = tuple(d if draw(st.booleans()) else 1 for d in _shape(draw, 2))
    units = [i for i, d in enumerate(shape) if d == 1 and i > 0]
    axes = None if not units or draw(st.integers(0, 3)) == 0 else \
        draw(st.lists(st.sampled_from(units), min_size=1, unique=True))
    g = Graph()
    x = g.input("input", shape, draw(scales()), draw(zero_points()))
    g.squeeze(x, axes, name="output")
    return _finish(draw, g)


@st.composite
def concatenation_models(draw):
    """CONCATENATION of 1-3 inputs along a non-batch axis (maybe negative). LiteRT
    rejects a fused activation other than NONE and int8 inputs whose scale / zero
    point differ from the output's."""
    base = _shape(draw, 2)
    axis = draw(st.integers(1, len(base) - 1))
    sc, zp, g = draw(scales()), draw(zero_points()), Graph()
    xs = []
    for i in range(draw(st.integers(1, 3))):
        shape = list(base)
        shape[axis] = draw(st.integers(1, 4))
        xs.append(g.input(f"input{i}", shape, sc, zp))
    g.concatenation(xs, axis - len(base) * draw(st.booleans()), name="output")
    return _finish(draw, g)


@st.composite
def softmax_models(draw):
    """SOFTMAX over the last axis, beta > 0 (LiteRT aborts unless
    ``beta * in_scale * 2**26 > 1``); output 1/256, zero point -128."""
    shape, g = _shape(draw, 2), Graph()
    beta = draw(st.one_of(st.just(1.0), st.floats(-6.0, 4.0).map(lambda u: 2.0 ** u)))
    x = g.input("input", shape, draw(scales(-12, 2)), draw(zero_points()))
    g.softmax(x, beta, name="output")
    return _finish(draw, g)


@st.composite
def _unary(draw, method):
    shape, g = _shape(draw), Graph()
    x = g.input("input", shape, draw(scales(-12, 2)), draw(zero_points()))
    getattr(g, method)(x, name="output")
    return _finish(draw, g)


def logistic_models():
    """LOGISTIC; output 1/256, zero point -128."""
    return _unary("logistic")


def tanh_models():
    """TANH; output 1/128, zero point 0."""
    return _unary("tanh")


@st.composite
def hard_swish_models(draw):
    """HARD_SWISH. LiteRT requires ``in_scale / (128 * out_scale) < 1`` (multiplier
    exponent <= 0): drawn up to 2**-20 below that limit."""
    shape, g, in_s = _shape(draw), Graph(), draw(scales())
    out_s = float(_F32(in_s / 128 / draw(st.one_of(
        st.floats(-12.0, -0.01).map(lambda u: 2.0 ** u),
        st.integers(1, 20).map(lambda k: 1.0 - 2.0 ** -k)))))
    while _F32(_F32(in_s / 128) / _F32(out_s)) >= 1 - 2.0 ** -21:
        out_s = float(np.nextafter(_F32(out_s), _F32(np.inf)))
    x = g.input("input", shape, in_s, draw(zero_points()))
    g.hard_swish(x, out_scale=out_s, out_zero_point=draw(zero_points()), name="output")
    return _finish(draw, g)


@st.composite
def quantize_models(draw):
    """QUANTIZE float32 -> int8 (inputs on and between grid points, incl. ties and
    out-of-range), or int8 -> int8 requantization (multiplier from :func:`multipliers`)."""
    shape, g = _shape(draw), Graph()
    out_s, out_zp = draw(scales()), draw(zero_points())
    if draw(st.booleans()):
        x = g.input("input", shape, dtype="float32")
        g.quantize(x, out_scale=out_s, out_zero_point=out_zp, name="output")
        return _finish(draw, g, (out_s, out_zp))
    in_s = float(_F32(out_s * draw(multipliers())))
    x = g.input("input", shape, in_s, draw(zero_points()))
    g.quantize(x, out_scale=out_s, out_zero_point=out_zp, name="output")
    return _finish(draw, g)


@st.composite
def dequantize_models(draw):
    """DEQUANTIZE int8 -> float32."""
    shape, g = _shape(draw), Graph()
    x = g.input("input", shape, draw(scales()), draw(zero_points()))
    g.dequantize(x, name="output")
    return _finish(draw, g)


#: A strategy of ``(model_bytes, inputs)`` for each supported op.
OP_STRATEGIES = {
    "CONV_2D": conv2d_models, "DEPTHWISE_CONV_2D": depthwise_conv2d_models,
    "FULLY_CONNECTED": fully_connected_models,
    "ADD": lambda: binary_models("ADD"), "SUB": lambda: binary_models("SUB"),
    "MUL": lambda: binary_models("MUL"),
    "AVERAGE_POOL_2D": lambda: pool2d_models("AVERAGE_POOL_2D"),
    "MAX_POOL_2D": lambda: pool2d_models("MAX_POOL_2D"),
    "MEAN": mean_models, "PAD": pad_models, "RESHAPE": reshape_models, "SQUEEZE": squeeze_models,
    "CONCATENATION": concatenation_models, "SOFTMAX": softmax_models,
    "LOGISTIC": logistic_models, "TANH": tanh_models, "HARD_SWISH": hard_swish_models,
    "QUANTIZE": quantize_models, "DEQUANTIZE": dequantize_models,
}


def single_op_models(opcodes=None):
    """``(model_bytes, inputs)`` for one op drawn among ``opcodes`` (default: all)."""
    return st.one_of(*[OP_STRATEGIES[op]() for op in (opcodes or OP_STRATEGIES)])
