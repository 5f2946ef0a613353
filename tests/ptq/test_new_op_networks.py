"""The exporter ops together: MobileNetV2- and squeeze-excite-style networks, data
movement ops, and random chains of the new ops (Hypothesis), both engines bit-exact.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aidge_lite
from aidge_lite.ir import Graph, OpType

from . import builders as B
from .new_ops_helpers import F32, ops, quantize_and_check


# ------------------------------------------------------- the ops together, in networks
@pytest.mark.parametrize("net", ["mobilenet_v2", "squeeze_excite"])
@pytest.mark.parametrize("options", [{}, {"preset": "best"}, {"single_shift": True, "optimize_signs": True}],
                         ids=["default", "best", "shift+signs"])
def test_exporter_style_networks(net, options, tmp_path):
    from . import exporter_nets as N

    graph = getattr(N, net)()
    q, snr = quantize_and_check(graph, N.images(64, 0), N.images(32, 1), **options)
    kinds = ops(q)
    for op in (OpType.CLIP, OpType.SUB, OpType.DIV, OpType.BATCHNORM, OpType.SIGMOID, OpType.TANH,
               OpType.HARD_SWISH, OpType.HARD_SIGMOID, OpType.LEAKY_RELU, OpType.REDUCE_MEAN):
        assert op not in kinds, op
    if net == "mobilenet_v2":
        assert OpType.MUL not in kinds and kinds.count(OpType.CONV) == 5  # 4 + the normalisation
    else:
        # SiLU (x * Sigmoid(x)) is one table; the excitation stays a product of activations
        assert kinds.count(OpType.MUL) == 1 and kinds.count(OpType.LOOKUP) == 5
        assert q.node("silu").attrs["function"] == "SiLU" and "sig" not in q
    if not options:  # the new nodes survive a save / load (tables, clamped bounds, products)
        from aidge_lite.serialize import load, save

        test = N.images(8, 2)
        again = load(save(q, tmp_path / "q.npz"))
        np.testing.assert_array_equal(aidge_lite.run(again, test, engine="integer")[q.outputs[0]],
                                      aidge_lite.run(q, test, engine="integer")[q.outputs[0]])
    # measured on held-out images: 26.6-30.7 dB (mobilenet_v2), 26.5-28.1 dB (squeeze_excite)
    assert min(snr.values()) > 24, snr


def test_data_movement_ops_pass_codes_through():
    """Slice, DepthToSpace and nearest Resize move codes without arithmetic: quantized as is."""
    rng = np.random.default_rng(15)
    g = Graph("movement")
    B.add_input(g, "x", [None, 2, 4, 4])
    B.add_conv(g, "conv", "x", rng.standard_normal((8, 2, 3, 3)) * 0.5, rng.standard_normal(8) * 0.1)
    B.add_op(g, "d2s", OpType.DEPTH_TO_SPACE, ["conv"], blocksize=2, mode="DCR")
    B.add_op(g, "crop", OpType.SLICE, ["d2s"], starts=[1, 1], ends=[7, 7], axes=[2, 3])
    B.add_op(g, "up", OpType.RESIZE, ["crop"], mode="nearest", scales=[1.0, 1.0, 2.0, 2.0],
             coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    B.add_conv(g, "head", "up", rng.standard_normal((1, 2, 3, 3)) * 0.5, [0.1])
    B.finish(g, ["head"])
    calib = rng.standard_normal((24, 2, 4, 4)).astype(F32)
    q, snr = quantize_and_check(g, calib, calib[:8])
    inter = aidge_lite.run(q, calib[:8], engine="integer", intermediates=True)
    assert inter["up"].dtype == np.int8 and {"d2s", "crop", "up"} <= {n.name for n in q.topo_order()}
    assert snr["head"] > 30, snr


# ------------------------------------------------------- random chains of the new ops
_BLOCKS = ("conv", "relu6", "clip", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky", "gelu",
           "scale", "shift", "bn", "gate", "silu", "mean_gap")


@st.composite
def new_op_graphs(draw):
    """A random chain of the ops above on (N, C, 5, 5) tensors, ending in a global pool + Gemm."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    g = Graph("random_new_ops")
    channels = draw(st.integers(1, 4))
    x = B.add_input(g, "x", [None, channels, 5, 5])
    for k, kind in enumerate(draw(st.lists(st.sampled_from(_BLOCKS), min_size=1, max_size=5))):
        name = f"{kind}{k}"
        const = lambda v: g.add_constant(f"{name}_c", np.asarray(v, F32)).name  # noqa: E731
        if kind == "conv":
            out = draw(st.integers(1, 4))
            x = B.add_conv(g, name, x, rng.standard_normal((out, channels, 3, 3)) * 0.5,
                           rng.standard_normal(out) * 0.2)
            channels = out
        elif kind in ("relu6", "clip"):
            # (a clip whose range misses the data's is a constant: see lookup_tables._fold_clamp)
            low, high = (0.0, 6.0) if kind == "relu6" else (rng.uniform(-2, 0), rng.uniform(0.1, 2))
            x = B.add_op(g, name, OpType.CLIP, [x], min=float(low), max=float(high))
        elif kind == "scale":
            x = B.add_op(g, name, OpType.MUL, [x, const(rng.uniform(-2, 2, (1, channels, 1, 1)))])
        elif kind == "shift":
            x = B.add_op(g, name, OpType.SUB, [x, const(rng.uniform(-1, 1, channels).reshape(channels, 1, 1))])
        elif kind == "bn":
            params = [g.add_constant(f"{name}_{p}", v.astype(F32)).name for p, v in
                      (("s", rng.uniform(0.5, 2, channels)), ("b", rng.standard_normal(channels)),
                       ("m", rng.standard_normal(channels)), ("v", rng.uniform(0.5, 2, channels)))]
            x = B.add_op(g, name, OpType.BATCHNORM, [x] + params)
        elif kind == "gate":  # squeeze-and-excitation: x * sigmoid(conv1x1(mean(x)))
            pooled = B.add_op(g, f"{name}_pool", OpType.GLOBAL_AVGPOOL, [x])
            fc = B.add_conv(g, f"{name}_fc", pooled, rng.standard_normal((channels, channels, 1, 1)),
                            rng.standard_normal(channels) * 0.2, pads=(0, 0, 0, 0))
            s = B.add_op(g, f"{name}_sig", OpType.SIGMOID, [fc])
            x = B.add_op(g, name, OpType.MUL, [x, s])
        elif kind == "silu":
            s = B.add_op(g, f"{name}_sig", OpType.SIGMOID, [x])
            x = B.add_op(g, name, OpType.MUL, [s, x])
        elif kind == "mean_gap":
            x = B.add_op(g, name, OpType.REDUCE_MEAN, [x], axes=[2, 3], keepdims=1)
            x = B.add_op(g, f"{name}_up", OpType.RESIZE, [x], mode="nearest", scales=[1.0, 1.0, 5.0, 5.0],
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        else:
            op, attrs = {"sigmoid": (OpType.SIGMOID, {}), "tanh": (OpType.TANH, {}),
                         "hardswish": (OpType.HARD_SWISH, {}), "gelu": (OpType.GELU, {}),
                         "hardsigmoid": (OpType.HARD_SIGMOID, {"alpha": 0.3, "beta": 0.4}),
                         "leaky": (OpType.LEAKY_RELU, {"alpha": 0.2})}[kind]
            x = B.add_op(g, name, op, [x], **attrs)
    pooled = B.add_op(g, "pool", OpType.GLOBAL_AVGPOOL, [x])
    flat = B.add_op(g, "flat", OpType.FLATTEN, [pooled], axis=1)
    B.add_gemm(g, "head", flat, rng.standard_normal((2, channels)), rng.standard_normal(2) * 0.1)
    return B.finish(g, ["head"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=new_op_graphs(), data=st.data())
def test_random_chains_of_new_ops_are_bit_exact(graph, data):
    rng = np.random.default_rng(0)
    calib = rng.normal(0, 2, (8, *graph.node("x").attrs["shape"][1:])).astype(F32)
    test = rng.normal(0, 3, (4, *calib.shape[1:])).astype(F32)
    nodes = [n.name for n in graph.topo_order() if n.op not in (OpType.INPUT, OpType.CONSTANT)]
    options = dict(nb_bits=data.draw(st.sampled_from([4, 8, 8, 12])),
                   optimize_signs=data.draw(st.booleans()), per_channel=data.draw(st.booleans()),
                   single_shift=data.draw(st.booleans()),
                   target=data.draw(st.sampled_from(["default", "tflite", "onnx", "mcu-shift"])),
                   exclude=data.draw(st.lists(st.sampled_from(nodes), max_size=2, unique=True)))
    if options["target"] == "tflite":
        options.update(nb_bits=8, optimize_signs=False)
    if options["nb_bits"] > 8:
        options["target"] = aidge_lite.Target(acc_bits=64)
    q = aidge_lite.quantize_network(graph, calib, **options)
    fake = aidge_lite.run(q, test)
    integer = aidge_lite.run(q, test, engine="integer")
    np.testing.assert_array_equal(fake["head"], integer["head"])
