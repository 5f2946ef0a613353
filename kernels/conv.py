"""Grouped 2-D convolution with exact int64 accumulation (NCHW, zero padding).

``geometry`` is an int64 array
``[stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dil_h, dil_w, group]``.
"""

import numba
import numpy as np


@numba.njit(cache=True)
def output_extent(size, kernel, stride, pad_begin, pad_end, dilation):
    """Output length along one axis (ONNX floor mode); <= 0 means invalid.

    Shared by convolution and pooling, from jitted and plain Python code.
    """
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def conv2d_output_shape(x_shape, w_shape, geometry):
    """Return ``(N, K, OH, OW)`` as Python ints (OH, OW <= 0 if invalid)."""
    sh, sw, pt, pl, pb, pr, dh, dw, _ = (int(g) for g in geometry)
    oh = output_extent(int(x_shape[2]), int(w_shape[2]), sh, pt, pb, dh)
    ow = output_extent(int(x_shape[3]), int(w_shape[3]), sw, pl, pr, dw)
    return int(x_shape[0]), int(w_shape[0]), int(oh), int(ow)


@numba.njit(cache=True)
def conv2d(x, w, bias, geometry):
    """Grouped 2-D convolution, exact integer arithmetic.

    Parameters
    ----------
    x : (N, C, H, W) int8, uint8, int16, uint16 or int32
    w : (K, C // group, KH, KW) int8, int16 or int32
    bias : (K,) int32 or int64
    geometry : (9,) int64
        ``[stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right,
        dil_h, dil_w, group]``; ``K`` is a multiple of ``group``
        (depthwise: ``group == C == K``).

    Returns
    -------
    (N, K, OH, OW) int64
        ``bias[k] + sum x * w`` over the window; padded positions are zero.

    Notes
    -----
    Accumulator: int64, every product widened to int64 first; exact while the
    true sum fits in int64 (otherwise wraps modulo 2**64, like the twin).
    No rounding. Shapes are validated by the caller.
    """
    n_batch, _, h, wd = x.shape
    k_out, c_per_group, kh_size, kw_size = w.shape
    sh, sw, pt, pl = geometry[0], geometry[1], geometry[2], geometry[3]
    pb, pr, dh, dw = geometry[4], geometry[5], geometry[6], geometry[7]
    k_per_group = k_out // geometry[8]
    oh_size = output_extent(h, kh_size, sh, pt, pb, dh)
    ow_size = output_extent(wd, kw_size, sw, pl, pr, dw)
    out = np.empty((n_batch, k_out, oh_size, ow_size), np.int64)
    for n in range(n_batch):
        for k in range(k_out):
            c0 = (k // k_per_group) * c_per_group  # first input channel of k's group
            for oh in range(oh_size):
                ih0 = oh * sh - pt
                for ow in range(ow_size):
                    iw0 = ow * sw - pl
                    acc = np.int64(bias[k])
                    for c in range(c_per_group):
                        for kh in range(kh_size):
                            ih = ih0 + kh * dh
                            if ih < 0 or ih >= h:
                                continue
                            for kw in range(kw_size):
                                iw = iw0 + kw * dw
                                if 0 <= iw < wd:
                                    acc += (np.int64(x[n, c0 + c, ih, iw])
                                            * np.int64(w[k, c, kh, kw]))
                    out[n, k, oh, ow] = acc
    return out


def conv2d_ref(x, w, bias, geometry):
    """NumPy twin of :func:`conv2d` (the spec): pad, slice per tap, einsum.

    Same parameters and result; accumulates in int64.
    """
    sh, sw, pt, pl, pb, pr, dh, dw, group = (int(g) for g in geometry)
    n_batch = x.shape[0]
    k_out, c_per_group, kh_size, kw_size = w.shape
    _, _, oh, ow = conv2d_output_shape(x.shape, w.shape, geometry)
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    xg = xp.reshape(n_batch, group, c_per_group, *xp.shape[2:])
    wg = w.astype(np.int64).reshape(group, k_out // group, c_per_group, kh_size, kw_size)
    out = np.zeros((n_batch, group, k_out // group, oh, ow), np.int64)
    for kh in range(kh_size):
        for kw in range(kw_size):
            tap = xg[..., kh * dh: kh * dh + sh * (oh - 1) + 1: sh,
                     kw * dw: kw * dw + sw * (ow - 1) + 1: sw]
            out += np.einsum("ngchw,gkc->ngkhw", tap, wg[..., kh, kw])
    return out.reshape(n_batch, k_out, oh, ow) + bias.astype(np.int64)[:, None, None]
