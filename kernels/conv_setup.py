"""Set-up of the int16 fast paths of ``kernels.conv2d`` (internal): output extents,
padded/packed operand layouts, and the choice of the pixels-as-lanes kernel."""

import numba
import numpy as np

from .igemm import IM2COL_BELOW, nchw_int16, nhwc_int16, pack_conv_weights

ROWCONV_MAX_C = 4  # input channels up to which the pixels-as-lanes kernel is used


@numba.njit(cache=True)
def output_extent(size, kernel, stride, pad_begin, pad_end, dilation):
    """Output length along one axis (ONNX floor mode); <= 0 means invalid.

    Shared by convolution and pooling, from jitted and plain Python code.
    """
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


@numba.njit(cache=True)
def igemm_setup(x, w, geometry):
    """xbuf, geo, taps, kp, packed weights of the implicit-GEMM path (see kernels.igemm)."""
    n_batch, c_in, h, wd = x.shape
    k_out, cg, kh_size, kw_size = w.shape
    sh, sw, pt, pl = geometry[0], geometry[1], geometry[2], geometry[3]
    pb, pr, dh, dw = geometry[4], geometry[5], geometry[6], geometry[7]
    groups = geometry[8]
    oh_size = output_extent(h, kh_size, sh, pt, pb, dh)
    ow_size = output_extent(wd, kw_size, sw, pl, pr, dw)
    hp, wp = h + pt + pb, wd + pl + pr
    xbuf = nhwc_int16(x, pt, pb, pl, pr)
    kg = k_out // groups
    contiguous = groups == 1 and dw == 1
    if contiguous:
        taps = np.arange(kh_size) * (dh * wp * c_in)
        kp = (kw_size * cg + 1) // 2
    else:
        taps = np.empty(kh_size * kw_size, np.int64)
        for i in range(kh_size):
            for j in range(kw_size):
                taps[i * kw_size + j] = (i * dh * wp + j * dw) * c_in
        kp = (cg + 1) // 2
    pw = 8 if kg <= 8 else 16
    run = kw_size * cg if contiguous else cg
    im2col = kp < IM2COL_BELOW and taps.size > 1  # short taps: gather rows first
    if im2col:
        kp = (taps.size * run + 1) // 2
    bp = pack_conv_weights(w, groups, contiguous, pw, kp, im2col)
    geo = np.array([n_batch * oh_size * ow_size, oh_size * ow_size, ow_size,
                    hp * wp * c_in, sh * wp * c_in, sw * c_in, groups, cg, kg, pw,
                    run if im2col else 0], np.int64)
    return xbuf, geo, taps.astype(np.int64), kp, bp


@numba.njit(cache=True)
def depthwise_setup(x, w, geometry):
    """Padded NCHW int16 input, (K, KH, KW) int32 weights, [sh, sw, dh, dw]."""
    xpad = nchw_int16(x, geometry[2], geometry[4], geometry[3], geometry[5])
    w32 = np.empty((w.shape[0], w.shape[2], w.shape[3]), np.int32)
    for k in range(w.shape[0]):
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                w32[k, i, j] = w[k, 0, i, j]
    geo = np.array([geometry[0], geometry[1], geometry[6], geometry[7]], np.int64)
    return xpad, w32, geo


@numba.njit(cache=True)
def use_rowconv(x, w, geometry, ow_size):
    """Few input channels, unit stride and dilation along W: pixels-as-lanes kernel."""
    return (x.shape[1] <= ROWCONV_MAX_C and geometry[8] == 1 and geometry[1] == 1
            and geometry[7] == 1 and ow_size >= 8 and w.shape[3] >= 2)
