"""One-sample calls of the integer engine: the per-(shape, dtype) prepared conv
(`kernels.conv_packed.conv2d_requant_prepare`), the prepared Gemm (`kernels.dense.gemm_prepare`) and the engine's memoized op calls
give exactly what the checked entry points give, and still refuse what those refuse."""
from __future__ import annotations

import numpy as np
import pytest

import aidge_lite
from aidge_lite import kernels
from aidge_lite.kernels.conv_packed import conv2d_requant_prepare
from aidge_lite.kernels.dense import gemm_prepare

CASES = [  # (x shape, x dtype, w shape, geometry): depthwise/few-channel, implicit GEMM, pointwise
    ((1, 1, 28, 28), np.int8, (8, 1, 5, 5), [1, 1, 2, 2, 2, 2, 1, 1, 1]),
    ((1, 8, 14, 14), np.int8, (16, 8, 5, 5), [1, 1, 2, 2, 2, 2, 1, 1, 1]),
    ((2, 16, 7, 7), np.uint8, (24, 16, 1, 1), [1, 1, 0, 0, 0, 0, 1, 1, 1]),
    ((1, 6, 11, 10), np.int8, (6, 1, 3, 3), [2, 2, 1, 1, 1, 1, 1, 1, 6]),
    ((1, 3, 9, 9), np.int16, (4, 3, 3, 3), [1, 1, 1, 1, 1, 1, 1, 1, 1]),
]


def _operand(rng, shape, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


@pytest.mark.parametrize("x_shape, x_dtype, w_shape, geometry", CASES)
@pytest.mark.parametrize("out_dtype", [np.int8, np.int16])
def test_prepared_conv_equals_checked_entry(x_shape, x_dtype, w_shape, geometry, out_dtype):
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    w = _operand(rng, w_shape, np.int8)
    bias = rng.integers(-5000, 5000, w_shape[0]).astype(np.int32)
    multiplier = rng.uniform(1e-4, 3e-3, w_shape[0])
    info = np.iinfo(out_dtype)
    params = np.array([kernels.HALF_AWAY, info.min, info.max], np.int64)
    layer = kernels.conv2d_pack(w, np.array(geometry, np.int64))
    prepared = conv2d_requant_prepare(x_shape, x_dtype, layer, bias, multiplier, params, out_dtype)
    assert prepared is not None  # every case here: the dtypes prove the int32 bound
    for _ in range(2):
        x = _operand(rng, x_shape, x_dtype)
        want = np.empty(prepared.out_shape, out_dtype)
        want_minmax = kernels.conv2d_requant_into(x, layer, bias, multiplier, params, want)
        got = np.empty(prepared.out_shape, out_dtype)
        np.testing.assert_array_equal(prepared(x, got), want_minmax)
        np.testing.assert_array_equal(got, want)
        got_t = np.empty(prepared.out_shape, out_dtype)  # a non-contiguous x is copied, same values
        xt = np.asfortranarray(x)
        np.testing.assert_array_equal(prepared(xt, got_t), want_minmax)
        np.testing.assert_array_equal(got_t, want)


def test_prepared_conv_refuses_other_shapes_and_dtypes():
    w = np.ones((8, 1, 5, 5), np.int8)
    layer = kernels.conv2d_pack(w, np.array([1, 1, 2, 2, 2, 2, 1, 1, 1], np.int64))
    params = np.array([kernels.HALF_AWAY, -128, 127], np.int64)
    prepared = conv2d_requant_prepare((1, 1, 28, 28), np.int8, layer, np.zeros(8, np.int64),
                                      np.full(8, 1e-3), params, np.int8)
    out = np.empty((1, 8, 28, 28), np.int8)
    for x in (np.zeros((1, 1, 27, 28), np.int8), np.zeros((1, 1, 28, 28), np.int16)):
        with pytest.raises(ValueError, match="prepared for"):
            prepared(x, out)
    with pytest.raises(ValueError, match="prepared for"):
        prepared(np.zeros((1, 1, 28, 28), np.int8), np.empty((1, 8, 28, 28), np.int16))
    with pytest.raises(ValueError, match="do not fit"):  # prepare checks like the public entry
        conv2d_requant_prepare((1, 2, 28, 28), np.int8, layer, np.zeros(8, np.int64), np.full(8, 1e-3),
                               params, np.int8)
    with pytest.raises(ValueError, match="cannot hold"):
        conv2d_requant_prepare((1, 1, 28, 28), np.int8, layer, np.zeros(8, np.int64), np.full(8, 1e-3),
                               np.array([kernels.HALF_AWAY, -300, 127], np.int64), np.int8)


def test_prepared_conv_leaves_value_dependent_paths_to_the_checked_entry():
    # int16 activations and weights: whether byte limbs are needed depends on the values
    w = np.ones((4, 3, 3, 3), np.int16)
    layer = kernels.conv2d_pack(w, np.array([1, 1, 1, 1, 1, 1, 1, 1, 1], np.int64))
    params = np.array([kernels.HALF_AWAY, -128, 127], np.int64)
    assert conv2d_requant_prepare((1, 3, 9, 9), np.int16, layer, np.zeros(4, np.int64), np.full(4, 1e-3),
                                  params, np.int8) is None


def test_one_sample_calls_equal_batch_and_fake_quant(mnist8):
    graph, images = mnist8
    batch = aidge_lite.run(graph, images, engine="integer")
    fake = aidge_lite.run(graph, images)
    (name,) = batch
    np.testing.assert_array_equal(batch[name], fake[name])
    for i in range(len(images)):  # the second call of a shape takes the memoized calls
        for _ in range(2):
            one = aidge_lite.run(graph, images[i:i + 1], engine="integer")
            np.testing.assert_array_equal(one[name], batch[name][i:i + 1])


def _assert_replaced_weight_is_seen(mnist8, op):
    """Negating the first `op` node's weight with `set_constant` changes the integer engine's
    output (== fake-quant), and restoring it brings the original output back."""
    graph, images = mnist8
    graph = graph.copy()  # the module's fixture stays as it was
    x = images[:1]
    (name,) = aidge_lite.run(graph, x, engine="integer")
    node = next(n for n in graph.topo_order() if n.op is op)
    weight = graph.node(node.inputs[1])
    before = aidge_lite.run(graph, x, engine="integer")[name]  # the prepared path serves this call
    old = weight.attrs["value"]
    try:
        graph.set_constant(weight.name, -old)
        after = aidge_lite.run(graph, x, engine="integer")[name]
        np.testing.assert_array_equal(after, aidge_lite.run(graph, x)[name])
        assert not np.array_equal(after, before)
    finally:
        graph.set_constant(weight.name, old)
    np.testing.assert_array_equal(aidge_lite.run(graph, x, engine="integer")[name], before)


def test_replaced_weight_is_seen_by_the_fast_path(mnist8):
    _assert_replaced_weight_is_seen(mnist8, aidge_lite.OpType.CONV)


def test_prepared_depthwise_conv_packs_its_weights_once():
    # the few-channel VNNI path gets the weight pairs and layout made at preparation
    from aidge_lite.kernels.depthwise import depthwise_conv_requant_packed, use_depthwise

    x_shape, _, w_shape, geometry = CASES[0]
    if not use_depthwise(x_shape, w_shape, np.array(geometry, np.int64)):
        pytest.skip("no AVX-512 VNNI on this host: the depthwise path is not taken")
    layer = kernels.conv2d_pack(np.ones(w_shape, np.int8), np.array(geometry, np.int64))
    params = np.array([kernels.HALF_AWAY, -128, 127], np.int64)
    prepared = conv2d_requant_prepare(x_shape, np.int8, layer, np.zeros(8, np.int64), np.full(8, 1e-3),
                                      params, np.int8)
    assert prepared.kernel is depthwise_conv_requant_packed


@pytest.mark.parametrize("a_shape, a_dtype, b_shape", [
    ((1, 256), np.int8, (256, 10)), ((3, 40), np.uint8, (40, 17)), ((2, 33), np.int16, (33, 8))])
def test_prepared_gemm_equals_checked_entry(a_shape, a_dtype, b_shape):
    rng = np.random.default_rng(sum(a_shape) + sum(b_shape))
    b = _operand(rng, b_shape, np.int8)
    bias = rng.integers(-5000, 5000, b_shape[1]).astype(np.int32)
    packed = kernels.gemm_pack(b)
    prepared = gemm_prepare(a_shape, a_dtype, packed, bias)
    assert prepared is not None
    for _ in range(2):
        a = _operand(rng, a_shape, a_dtype)
        want = kernels.gemm_packed(a, packed, bias)
        np.testing.assert_array_equal(want, kernels.gemm_ref(a, b, bias))
        np.testing.assert_array_equal(prepared(a), want)
        np.testing.assert_array_equal(prepared(np.asfortranarray(a)), want)


def test_prepared_gemm_checks_once_and_refuses_others():
    b = np.ones((16, 4), np.int8)
    packed = kernels.gemm_pack(b)
    prepared = gemm_prepare((1, 16), np.int8, packed, np.zeros(4, np.int64))
    for a in (np.zeros((2, 16), np.int8), np.zeros((1, 16), np.int16)):
        with pytest.raises(ValueError, match="prepared for"):
            prepared(a)
    with pytest.raises(ValueError, match="are not"):  # prepare checks like the public entry
        gemm_prepare((1, 15), np.int8, packed, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="bias"):
        gemm_prepare((1, 16), np.int8, packed, np.zeros(5, np.int64))
    # wider activations: gemm_packed decides on the values, per call
    assert gemm_prepare((1, 16), np.int64, packed, np.zeros(4, np.int64)) is None
    assert gemm_prepare((1, 16), np.int32, packed, np.zeros(4, np.int64)) is None


def test_replaced_gemm_weight_is_seen_by_the_fast_path(mnist8):
    _assert_replaced_weight_is_seen(mnist8, aidge_lite.OpType.GEMM)
