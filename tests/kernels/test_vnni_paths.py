"""The AVX-512 VNNI paths of conv2d / conv2d_requant (kernels.pointwise, kernels.depthwise),
the prepared-weight entries (conv2d_pack + conv2d_requant_into, gemm_pack + gemm_packed)
and the int32 accumulator bound that chooses them, against the NumPy twins.

On a host without AVX-512 VNNI the same calls take the older paths: the equality tests
still hold there; the routing tests are skipped.
"""

import numpy as np
import pytest

from aidge_lite import kernels
from aidge_lite.kernels import conv2d, conv2d_ref, conv2d_requant, conv2d_requant_ref
from aidge_lite.kernels import conv_vnni, depthwise, pointwise

VNNI = pytest.mark.skipif(not pointwise.HAS_VNNI512, reason="host without AVX-512 VNNI")


def geom(stride=(1, 1), pads=(0, 0, 0, 0), group=1):
    return np.array([*stride, *pads, 1, 1, group], np.int64)


def _operand(rng, shape, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


POINTWISE = [  # (x shape, K): odd C and K, pixels not a multiple of the tile, > one chunk
    ((1, 16, 12, 12), 24),
    ((2, 17, 5, 7), 13),
    ((1, 3, 23, 29), 9),     # 667 pixels: two chunks, a tail tile
    ((3, 1, 4, 4), 1),
    ((1, 64, 7, 7), 40),
]

GROUPED = [  # (x shape, w shape, geometry): depthwise and few-channel groups, strides 1/2, pads
    ((1, 24, 14, 14), (24, 1, 3, 3), geom((2, 2), (1, 1, 1, 1), 24)),
    ((2, 16, 7, 7), (16, 1, 5, 5), geom(pads=(2, 2, 2, 2), group=16)),
    ((2, 5, 9, 13), (5, 1, 3, 3), geom((2, 2), (0, 1, 2, 0), 5)),
    ((1, 6, 11, 10), (6, 1, 5, 5), geom((2, 2), (2, 2, 2, 2), 6)),
    ((2, 3, 7, 6), (6, 1, 4, 4), geom(pads=(1, 0, 2, 3), group=3)),          # 2 outputs per group
    ((1, 3, 19, 18), (8, 3, 3, 3), geom((2, 2), (0, 0, 1, 1))),              # an RGB stem
    ((1, 8, 9, 9), (12, 2, 3, 3), geom(pads=(1, 1, 1, 1), group=4)),
    ((1, 4, 6, 17), (7, 4, 2, 2), geom((2, 2))),
    ((1, 3, 5, 5), (3, 1, 1, 1), geom(group=3)),                             # 1x1 per channel
]


@pytest.mark.parametrize("x_shape, k", POINTWISE)
@pytest.mark.parametrize("x_dtype", [np.int8, np.uint8, np.int16])
def test_pointwise_matches_ref(x_shape, k, x_dtype, rng):
    x = _operand(rng, x_shape, x_dtype)
    w = _operand(rng, (k, x_shape[1], 1, 1), np.int8)
    b = rng.integers(-2 ** 40, 2 ** 40, k)
    g = geom()
    expected = conv2d_ref(x, w, b, g)
    np.testing.assert_array_equal(pointwise.pointwise_ref(x, w, b), expected)
    np.testing.assert_array_equal(conv2d(x, w, b, g), expected)


@pytest.mark.parametrize("x_shape, w_shape, g", GROUPED)
@pytest.mark.parametrize("x_dtype", [np.int8, np.uint8])
def test_grouped_matches_ref(x_shape, w_shape, g, x_dtype, rng):
    x = _operand(rng, x_shape, x_dtype)
    w = _operand(rng, w_shape, np.int8)
    b = rng.integers(-10 ** 6, 10 ** 6, w_shape[0])
    expected = conv2d_ref(x, w, b, g)
    np.testing.assert_array_equal(depthwise.depthwise_ref(x, w, b, g), expected)
    np.testing.assert_array_equal(conv2d(x, w, b, g), expected)


CASES = [(x, (k, x[1], 1, 1), geom()) for x, k in POINTWISE] + GROUPED


@pytest.mark.parametrize("x_shape, w_shape, g", CASES)
@pytest.mark.parametrize("mode", [kernels.HALF_AWAY, kernels.HALF_UP, kernels.HALF_EVEN, kernels.FLOOR])
@pytest.mark.parametrize("out_dtype, bounds", [(np.int8, (-128, 127)), (np.uint8, (0, 255)),
                                               (np.int16, (-300, 2000))])
def test_requant_into_matches_ref(x_shape, w_shape, g, mode, out_dtype, bounds, rng):
    x = _operand(rng, x_shape, np.uint8 if out_dtype == np.uint8 else np.int8)
    w = _operand(rng, w_shape, np.int8)
    b = rng.integers(-5000, 5000, w_shape[0])
    # scales with exact halves among the products: every rounding mode meets ties
    m = rng.choice([2.0 ** -8, 2.0 ** -9, 3 * 2.0 ** -11, 1e-3], w_shape[0])
    params = np.array([mode, *bounds], np.int64)
    want, want_mm = conv2d_requant_ref(x, w, b, g, m, params)
    got, got_mm = conv2d_requant(x, w, b, g, m, params)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_mm, want_mm)
    layer = kernels.conv2d_pack(w, g)
    out = np.empty(want.shape, out_dtype)
    np.testing.assert_array_equal(kernels.conv2d_requant_into(x, layer, b, m, params, out), want_mm)
    np.testing.assert_array_equal(out, want.astype(out_dtype))
    ref_out = np.empty_like(out)
    kernels.conv2d_requant_into_ref(x, layer, b, m, params, ref_out)
    np.testing.assert_array_equal(out, ref_out)


def test_requant_into_refuses_an_out_that_cannot_hold_the_result(rng):
    x, w = _operand(rng, (1, 4, 5, 5), np.int8), _operand(rng, (6, 4, 1, 1), np.int8)
    layer, b, m = kernels.conv2d_pack(w, geom()), np.zeros(6, np.int64), np.full(6, 0.01)
    with pytest.raises(ValueError, match="bounds"):
        kernels.conv2d_requant_into(x, layer, b, m, np.array([0, -128, 127]),
                                    np.empty((1, 6, 5, 5), np.uint8))
    with pytest.raises(ValueError, match="out must be"):
        kernels.conv2d_requant_into(x, layer, b, m, np.array([0, -128, 127]), np.empty((1, 6, 5, 4), np.int8))


@VNNI
def test_routing():
    assert conv_vnni._operands(np.zeros((1, 8, 4, 4), np.int8), np.zeros((5, 8, 1, 1), np.int8), geom())
    for x_shape, w_shape, g in GROUPED:
        assert depthwise.use_depthwise(x_shape, w_shape, g)
    assert not depthwise.use_depthwise((1, 8, 9, 9), (8, 8, 3, 3), geom())  # 8 channels a group
    assert not depthwise.use_depthwise((1, 4, 9, 9), (4, 1, 3, 3), np.array([1, 3, 0, 0, 0, 0, 1, 1, 4]))
    assert kernels.conv2d_pack(np.zeros((4, 8, 1, 1), np.int8), geom()).panels is not None
    assert kernels.conv2d_pack(np.zeros((4, 8, 3, 3), np.int8), geom()).panels is None


@VNNI
@pytest.mark.parametrize("kind", ["pointwise", "depthwise"])
def test_int32_accumulator_edge(kind):
    """int16 operands at 32767: the int32 path is taken exactly while
    ``max|x| * max|w| * kdim <= 2**31 - 1`` (kdim 2: yes, 3: no, int64 path); both exact."""
    top = 32767
    for kdim, proven in ((2, True), (3, False)):
        if kind == "pointwise":
            x = np.full((1, kdim, 3, 5), top, np.int16)
            w = np.full((4, kdim, 1, 1), top, np.int16)
            g = geom()
        else:
            x = np.full((1, 2, 3, 5), top, np.int16)
            w = np.full((2, 1, 1, kdim), top, np.int16)
            g = geom(group=2)
        assert (conv_vnni._operands(x, w, g) is not None) == proven
        b = np.array([-7] * w.shape[0], np.int64)
        np.testing.assert_array_equal(conv2d(x, w, b, g), conv2d_ref(x, w, b, g))
    assert int(conv2d(x, w, b, g).max()) > 2 ** 31  # the unproven case really needs int64


@VNNI
def test_vnni_tile_matches_portable_twin_with_wraparound(rng):
    """The micro-kernel and its plain-Numba twin agree even where int32 wraps."""
    import numba

    @numba.njit
    def tiles(w, ntaps, x, c_vnni, c_port):
        pointwise._vnni_tile(w, 0, ntaps, x, 0, 2 * pointwise.TP, c_vnni, 0, pointwise.TP)
        pointwise.micro_kernel_portable(w, 0, ntaps, x, 0, 2 * pointwise.TP, c_port, 0, pointwise.TP)

    ntaps = 9
    w = rng.integers(-2 ** 15, 2 ** 15, pointwise.MR * ntaps * 2).astype(np.int16)
    x = rng.integers(-2 ** 15, 2 ** 15, ntaps * pointwise.TP * 2).astype(np.int16)
    c_vnni = np.zeros(pointwise.MR * pointwise.TP, np.int32)
    c_port = np.ones_like(c_vnni)
    tiles(w, ntaps, x, c_vnni, c_port)
    np.testing.assert_array_equal(c_vnni, c_port)
    exact = (w.reshape(pointwise.MR, 1, ntaps * 2).astype(np.int64)
             * x.reshape(ntaps, pointwise.TP, 2).transpose(1, 0, 2).reshape(1, pointwise.TP, -1)).sum(-1)
    np.testing.assert_array_equal(c_vnni.reshape(pointwise.MR, -1), exact.astype(np.int32))  # mod 2**32


@pytest.mark.parametrize("a_dtype", [np.int8, np.uint8, np.int64])
@pytest.mark.parametrize("m, k, n", [(1, 1280, 1000), (5, 33, 7), (97, 64, 17)])
def test_gemm_packed_matches_ref(a_dtype, m, k, n, rng):
    a = _operand(rng, (m, k), np.int8 if a_dtype == np.int64 else a_dtype).astype(a_dtype)
    b = _operand(rng, (k, n), np.int8)
    bias = rng.integers(-10 ** 6, 10 ** 6, n)
    packed = kernels.gemm_pack(b)
    assert packed[1].size > 0
    np.testing.assert_array_equal(kernels.gemm_packed(a, packed, bias), kernels.gemm_ref(a, b, bias))
    np.testing.assert_array_equal(kernels.gemm_packed_ref(a, packed, bias), kernels.gemm_ref(a, b, bias))


def test_gemm_packed_falls_back_beyond_the_bound(rng):
    a = np.full((2, 3), 2 ** 20, np.int64)  # not int16: the packed panels cannot serve
    b = np.full((3, 4), 127, np.int8)
    bias = np.zeros(4, np.int64)
    np.testing.assert_array_equal(kernels.gemm_packed(a, kernels.gemm_pack(b), bias),
                                  kernels.gemm_ref(a, b, bias))
    wide = kernels.gemm_pack(np.full((3, 4), 2 ** 20, np.int32))  # int32 weights: no panels
    assert wide[1].size == 0
    np.testing.assert_array_equal(kernels.gemm_packed(a, wide, bias),
                                  kernels.gemm_ref(a, np.full((3, 4), 2 ** 20, np.int32), bias))
    with pytest.raises(ValueError, match="panels"):
        kernels.gemm_packed(a[:, :2].astype(np.int8), (b[:2], kernels.gemm_pack(b)[1], 127), bias)


@pytest.mark.parametrize("x_shape, k", POINTWISE[:3])
def test_requant_int16_activations_take_the_pair_path(x_shape, k, rng):
    """int16 activations (a 16-bit model): ``vpdpwssd`` pairs instead of byte quads."""
    x = rng.integers(-3000, 3000, x_shape).astype(np.int16)
    w = _operand(rng, (k, x_shape[1], 1, 1), np.int16)
    b, m = rng.integers(-10 ** 6, 10 ** 6, k), rng.uniform(1e-7, 1e-5, k)
    params = np.array([kernels.HALF_EVEN, -2 ** 15, 2 ** 15 - 1], np.int64)
    want, want_mm = conv2d_requant_ref(x, w, b, geom(), m, params)
    out = np.empty(want.shape, np.int16)
    mm = kernels.conv2d_requant_into(x, kernels.conv2d_pack(w, geom()), b, m, params, out)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(mm, want_mm)


def test_byte_quads_only_within_their_bound():
    from aidge_lite.kernels import pointwise_u8

    w8 = np.zeros((2, pointwise_u8.MAX_C, 1, 1), np.int8)
    assert pointwise_u8.usable(np.zeros((1, pointwise_u8.MAX_C, 1, 1), np.int8), w8)
    assert not pointwise_u8.usable(np.zeros((1, pointwise_u8.MAX_C + 1, 1, 1), np.int8), w8)
    assert not pointwise_u8.usable(np.zeros((1, 4, 1, 1), np.int16), np.zeros((2, 4, 1, 1), np.int8))
