"""A MobileNetV3-style int8 model built op by op (float input quantized in the model,
RELU6, depthwise, HARD_SWISH, squeeze-and-excitation with MEAN/LOGISTIC/broadcast MUL,
residual ADD, concat, pools, FC, SOFTMAX, DEQUANTIZE): every tensor equals LiteRT's
reference kernels in both engines."""
import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from aidge_lite.testing.tflite_build import Graph
from aidge_lite.testing.tflite_check import litert_mismatches


def _model(seed):
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.integers(-127, 128, shape)  # noqa: E731
    b = lambda n: rng.integers(-2000, 2000, n)  # noqa: E731
    g = Graph()
    x = g.input("image", (1, 12, 12, 3), dtype="float32")
    q = g.quantize(x, out_scale=0.02, out_zero_point=-3)
    h = g.conv2d(q, w(8, 3, 3, 3), b(8), w_scale=rng.uniform(0.002, 0.01, 8), out_scale=0.05,
                 out_zero_point=-128, stride=2, padding="SAME", activation="RELU6")
    d = g.depthwise_conv2d(h, w(1, 3, 3, 16), b(16), w_scale=rng.uniform(0.005, 0.02, 16),
                           out_scale=0.08, out_zero_point=5, padding="SAME")
    d = g.hard_swish(d, out_scale=0.06, out_zero_point=-20)
    s = g.mean(d, [1, 2], keep_dims=True, out_scale=0.03, out_zero_point=-10)
    s = g.conv2d(s, w(16, 1, 1, 16), b(16), w_scale=rng.uniform(0.002, 0.01, 16), out_scale=0.1,
                 out_zero_point=0)
    s = g.logistic(s)
    e = g.mul(d, s, out_scale=0.05, out_zero_point=-15)
    p = g.conv2d(e, w(16, 1, 1, 16), b(16), w_scale=rng.uniform(0.002, 0.01, 16), out_scale=0.07,
                 out_zero_point=3)
    r = g.add(p, d, out_scale=0.09, out_zero_point=-7, activation="RELU")
    m = g.max_pool2d(r, 2, 2, "VALID")
    a = g.average_pool2d(r, 2, 2, "VALID")
    c = g.concatenation([m, g.pad(a, [[0, 0], [0, 0], [0, 0], [0, 0]])], axis=3) \
        if g.tensor(m).scale == g.tensor(a).scale else m
    f = g.reshape(c, (1, -1))
    o = g.fully_connected(f, w(5, int(np.prod(g.tensor(f).shape[1:]))), b(5), w_scale=[0.004],
                          out_scale=0.2, out_zero_point=1)
    o = g.softmax(o)
    g.dequantize(o, name="probabilities")
    return g.build()


@pytest.mark.parametrize("seed", [0, 1])
def test_mobilenet_v3_style_model_equals_litert(seed):
    x = np.random.default_rng(seed).normal(0, 1, (16, 12, 12, 3)).astype(np.float32)
    x[0] = 0.0
    x[1, ..., 0] = 100.0  # saturates the input QUANTIZE
    result = litert_mismatches(_model(seed), x)
    for engine, counts in result.items():
        assert len(counts) > 30
        bad = {name: n for name, n in counts.items() if n}
        assert not bad, f"{engine}: {bad}"
