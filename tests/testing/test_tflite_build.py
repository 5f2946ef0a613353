"""The int8 ``.tflite`` builder, the LiteRT oracle and the model strategies.

The serialization checks need only the ``tflite`` schema package; every test
that runs a model needs the dev-only ``ai-edge-litert`` (skipped otherwise).
"""
import numpy as np
import pytest
import tflite
from hypothesis import given, settings

from aidge_lite.testing.tflite_build import Graph, Op, Tensor, build_model

RNG = np.random.default_rng(0)


def _i8(*shape):
    return RNG.integers(-127, 128, shape).astype(np.int8)


def _unary(method, shape=(1, 2, 3, 4), **kw):
    def make(g):
        return getattr(g, method)(g.input("x", shape, 0.05, -3), **kw)
    return make


def _binary(method):
    def make(g):
        a, b = g.input("a", (1, 4, 1, 3), 0.05, -128), g.input("b", (1, 1, 5, 3), 0.02, 127)
        return getattr(g, method)(a, b, out_scale=0.08, out_zero_point=1, activation="RELU")
    return make


#: One model per supported op: (builder, expected output shape at batch 1, dtype).
CASES = {
    "CONV_2D": (lambda g: g.conv2d(
        g.input("x", (1, 8, 8, 3), 0.05, -3), _i8(4, 3, 3, 3), RNG.integers(-999, 999, 4),
        w_scale=[0.01, 0.02, 0.005, 0.03], out_scale=0.1, out_zero_point=2, stride=2,
        padding="SAME", dilation=1, activation="RELU6"), (1, 4, 4, 4), np.int8),
    "DEPTHWISE_CONV_2D": (lambda g: g.depthwise_conv2d(
        g.input("x", (1, 9, 9, 3), 0.05, -3), _i8(1, 3, 3, 6), RNG.integers(-999, 999, 6),
        w_scale=np.linspace(0.001, 0.02, 6), out_scale=0.1, out_zero_point=2, dilation=2,
        activation="RELU_N1_TO_1"), (1, 5, 5, 6), np.int8),
    "FULLY_CONNECTED": (lambda g: g.fully_connected(
        g.input("x", (1, 3, 10), 0.05, -3), _i8(5, 10), RNG.integers(-999, 999, 5), w_scale=0.01,
        out_scale=0.1, out_zero_point=2, keep_num_dims=True), (1, 3, 5), np.int8),
    "ADD": (_binary("add"), (1, 4, 5, 3), np.int8),
    "SUB": (_binary("sub"), (1, 4, 5, 3), np.int8),
    "MUL": (_binary("mul"), (1, 4, 5, 3), np.int8),
    "AVERAGE_POOL_2D": (_unary("average_pool2d", (1, 7, 7, 3), filter_size=(3, 2), stride=2,
                               padding="SAME"), (1, 4, 4, 3), np.int8),
    "MAX_POOL_2D": (_unary("max_pool2d", (1, 7, 7, 3), filter_size=2, stride=(2, 1)),
                    (1, 3, 6, 3), np.int8),
    "MEAN": (_unary("mean", axes=[1, 2], keep_dims=True, out_scale=0.02, out_zero_point=5),
             (1, 1, 1, 4), np.int8),
    "PAD": (_unary("pad", paddings=[[0, 0], [1, 2], [0, 1], [0, 0]]), (1, 5, 4, 4), np.int8),
    "RESHAPE": (_unary("reshape", new_shape=[1, -1]), (1, 24), np.int8),
    "SQUEEZE": (_unary("squeeze", (1, 1, 3, 1), axes=[1]), (1, 3, 1), np.int8),
    "CONCATENATION": (lambda g: g.concatenation(
        [g.input("a", (1, 4, 3), 0.05, -3), g.input("b", (1, 4, 5), 0.05, -3)], axis=-1),
        (1, 4, 8), np.int8),
    "SOFTMAX": (_unary("softmax", beta=0.5), (1, 2, 3, 4), np.int8),
    "LOGISTIC": (_unary("logistic"), (1, 2, 3, 4), np.int8),
    "TANH": (_unary("tanh"), (1, 2, 3, 4), np.int8),
    "HARD_SWISH": (_unary("hard_swish", out_scale=0.03, out_zero_point=-100), (1, 2, 3, 4), np.int8),
    "QUANTIZE": (lambda g: g.quantize(g.input("x", (1, 10), dtype="float32"), out_scale=0.03,
                                      out_zero_point=-100), (1, 10), np.int8),
    "REQUANTIZE": (_unary("quantize", out_scale=0.03, out_zero_point=-100), (1, 2, 3, 4), np.int8),
    "DEQUANTIZE": (_unary("dequantize"), (1, 2, 3, 4), np.float32),
}


def _build(case):
    g = Graph()
    out = CASES[case][0](g)
    return g, out, g.build()


def _batch(g, n):
    inputs = {}
    for name in g.inputs:
        t = g.tensor(name)
        size = (n, *t.shape[1:])
        inputs[name] = (RNG.normal(size=size).astype(np.float32) if t.dtype == "float32"
                        else RNG.integers(-128, 128, size).astype(np.int8))
    return inputs


def test_serialization_follows_the_schema():
    g, out, model = _build("CONV_2D")
    m = tflite.Model.GetRootAs(model, 0)
    assert tflite.Model.ModelBufferHasIdentifier(model, 0) and m.Version() == 3
    assert m.Buffers(0).DataLength() == 0  # empty sentinel
    code = m.OperatorCodes(0)
    assert code.BuiltinCode() == code.DeprecatedBuiltinCode() == tflite.BuiltinOperator.CONV_2D
    sg = m.Subgraphs(0)
    tensors = {sg.Tensors(i).Name().decode(): sg.Tensors(i) for i in range(sg.TensorsLength())}
    w = tensors[g.ops[0].inputs[1]].Quantization()
    assert w.ScaleLength() == 4 and w.QuantizedDimension() == 0 and not w.ZeroPointAsNumpy().any()
    bias = tensors[g.ops[0].inputs[2]]
    assert bias.Type() == tflite.TensorType.INT32
    np.testing.assert_allclose(bias.Quantization().ScaleAsNumpy(),
                               np.float32(0.05) * np.float32([0.01, 0.02, 0.005, 0.03]))
    assert m.Buffers(bias.Buffer()).DataLength() == 4 * 4
    op = sg.Operators(0)
    opts = tflite.Conv2DOptions()
    opts.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
    assert (opts.StrideH(), opts.StrideW(), opts.Padding()) == (2, 2, tflite.Padding.SAME)
    assert opts.FusedActivationFunction() == tflite.ActivationFunctionType.RELU6
    assert tuple(tensors[out].ShapeAsNumpy()) == (1, 4, 4, 4)


def test_opcodes_above_127_keep_the_placeholder_in_the_deprecated_field():
    q = dict(scale=0.1, zero_point=0)
    tensors = [Tensor("x", (1, 4), "int8", **q), Tensor("y", (1, 4), "int8", **q)]
    model = build_model(tensors, [Op("GELU", ["x"], ["y"])], ["x"], ["y"])
    code = tflite.Model.GetRootAs(model, 0).OperatorCodes(0)
    assert code.BuiltinCode() == tflite.BuiltinOperator.GELU > 127
    assert code.DeprecatedBuiltinCode() == tflite.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES


def test_build_refuses_duplicate_names_and_unknown_options():
    with pytest.raises(ValueError, match="unique"):
        build_model([Tensor("x", (1,)), Tensor("x", (1,))], [], ["x"], ["x"])
    with pytest.raises(ValueError, match="no field"):
        build_model([Tensor("x", (1,)), Tensor("y", (1,))],
                    [Op("ADD", ["x", "x"], ["y"], {"stride": 1})], ["x"], ["y"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_op_runs_in_litert_with_the_declared_shape(case):
    pytest.importorskip("ai_edge_litert")
    from aidge_lite.testing.litert_oracle import run_litert
    g, out, model = _build(case)
    _, shape, dtype = CASES[case]
    assert g.tensor(out).shape == shape
    for n in (1, 3):
        tensors = run_litert(model, _batch(g, n))
        assert tensors[out].dtype == dtype
        assert tensors[out].shape == (n * shape[0], *shape[1:])
    assert set(tensors) == set(g.tensors)


def test_fixed_output_quantization_and_pass_through():
    g = Graph()
    x = g.input("x", (1, 4, 4, 2), 0.3, 7)
    assert g.tensor(g.logistic(x)).scale == 1 / 256 and g.tensor(g.logistic(x)).zero_point == -128
    assert (g.tensor(g.tanh(x)).scale, g.tensor(g.tanh(x)).zero_point) == (1 / 128, 0)
    for y in (g.max_pool2d(x, 2), g.pad(x, [[0, 0]] * 4), g.reshape(x, [1, 32]), g.mean(x, [1])):
        assert (g.tensor(y).scale, g.tensor(y).zero_point) == (0.3, 7)


def test_a_small_cnn_runs_in_litert():
    pytest.importorskip("ai_edge_litert")
    from aidge_lite.testing.litert_oracle import run_litert
    g = Graph()
    x = g.quantize(g.input("image", (1, 10, 10, 3), dtype="float32"), out_scale=0.02,
                   out_zero_point=-1)
    y = g.conv2d(x, _i8(8, 3, 3, 3), RNG.integers(-99, 99, 8), w_scale=np.full(8, 0.01),
                 out_scale=0.05, out_zero_point=-128, stride=2, padding="SAME", activation="RELU")
    y = g.depthwise_conv2d(y, _i8(1, 3, 3, 8), RNG.integers(-99, 99, 8), w_scale=np.full(8, 0.02),
                           out_scale=0.05, out_zero_point=-128, padding="SAME", activation="RELU6")
    skip = g.add(y, g.max_pool2d(y, 3, 1, "SAME"), out_scale=0.1, out_zero_point=-128)
    y = g.reshape(g.mean(skip, [1, 2], keep_dims=True), [1, 8])
    y = g.fully_connected(y, _i8(4, 8), RNG.integers(-99, 99, 4), w_scale=0.01, out_scale=0.1,
                          out_zero_point=0)
    y = g.dequantize(g.softmax(y))
    tensors = run_litert(g.build([y]), {"image": RNG.normal(size=(2, 10, 10, 3)).astype(np.float32)})
    assert tensors[y].shape == (2, 4) and tensors[y].dtype == np.float32
    np.testing.assert_allclose(tensors[y].sum(axis=1), 1, atol=0.05)


def test_oracle_batch_handling_and_errors():
    pytest.importorskip("ai_edge_litert")
    from aidge_lite.testing.litert_oracle import run_litert
    g, out, model = _build("ADD")
    batch = _batch(g, 4)
    full = run_litert(model, batch)
    for i in range(4):
        one = run_litert(model, {k: v[i:i + 1] for k, v in batch.items()})
        np.testing.assert_array_equal(one[out], full[out][i:i + 1])
    with pytest.raises(ValueError, match="missing inputs"):
        run_litert(model, {"a": batch["a"]})
    with pytest.raises(ValueError, match="pass a dict"):
        run_litert(model, batch["a"])
    with pytest.raises(ValueError, match="do not fit"):
        run_litert(model, {"a": batch["a"].astype(np.int32) * 300, "b": batch["b"]})
    with pytest.raises(ValueError, match="disagree"):
        run_litert(model, {"a": batch["a"], "b": batch["b"][:2]})


def _strategy_test(opcode):
    from aidge_lite.testing.tflite_strategies import OP_STRATEGIES

    @settings(max_examples=5)
    @given(OP_STRATEGIES[opcode]())
    def check(case):
        from aidge_lite.testing.litert_oracle import run_litert
        model, inputs = case
        n = len(next(iter(inputs.values())))
        y = run_litert(model, inputs)["output"]
        assert n == 1 or len(y) % n == 0
    return check


@pytest.mark.parametrize("opcode", ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD",
                                    "SUB", "MUL", "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "PAD",
                                    "RESHAPE", "SQUEEZE", "CONCATENATION", "SOFTMAX", "LOGISTIC",
                                    "TANH", "HARD_SWISH", "QUANTIZE", "DEQUANTIZE"])
def test_strategies_draw_models_litert_accepts(opcode):
    pytest.importorskip("ai_edge_litert")
    _strategy_test(opcode)()
