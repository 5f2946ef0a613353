"""Grouped 2-D convolution with exact int64 accumulation (NCHW, zero padding).

``geometry`` is an int64 array
``[stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dil_h, dil_w, group]``.
"""

import numba
import numpy as np

from .canonical import as_array, as_operand
from .checks import check_conv_args, check_requant_args
from .conv_setup import ROWCONV_MAX_C, output_extent  # noqa: F401 (re-exported: kernels.pool, tests)
from .conv_setup import depthwise_setup as _depthwise_setup
from .conv_setup import igemm_setup as _igemm_setup
from .conv_setup import use_rowconv as _use_rowconv
from .conv_vnni import vnni_conv, vnni_conv_requant
from .igemm import (BLOCK, depthwise_requant_run, depthwise_run, igemm_requant_run, igemm_run, int32_exact,
                    max_abs)
from .requant import requant_float, requant_float_ref
from .rowconv import rowconv_requant_run, rowconv_run, rowconv_setup
from .threads import call_with_threads



def conv2d_output_shape(x_shape, w_shape, geometry):
    """Return ``(N, K, OH, OW)`` as Python ints (OH, OW <= 0 if invalid)."""
    sh, sw, pt, pl, pb, pr, dh, dw, _ = (int(g) for g in geometry)
    oh = output_extent(int(x_shape[2]), int(w_shape[2]), sh, pt, pb, dh)
    ow = output_extent(int(x_shape[3]), int(w_shape[3]), sw, pl, pr, dw)
    return int(x_shape[0]), int(w_shape[0]), int(oh), int(ow)


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
    On a host with AVX-512 VNNI, 1x1 convs (unit stride, no padding, one
    group) and convs with at most 4 input channels per group (depthwise, an
    RGB stem; dilation 1, ``stride_w`` 1 or 2) first try
    :mod:`kernels.conv_vnni`: ``vpdpwssd`` on int16 pairs with pixels as
    lanes, under the same int32 bound as below.
    Fast path (:mod:`kernels.igemm`): when the actual operand bounds prove
    it exact (``max|x| * max|w| * C/group * KH * KW <= 2**31 - 1``, both
    maxima ``<= 32767``), an implicit GEMM on int16 operands with int32
    accumulation (register-blocked ``vpmaddwd`` micro-kernels, ``prange``
    over pixel blocks), or a kernel vectorised along output rows for depthwise convs;
    int64 bias added afterwards. Otherwise: direct loops with an int64
    accumulator, every product widened to int64 first; exact while the true
    sum fits in int64 (otherwise wraps modulo 2**64, like the twin).
    Between the two, 16-bit operands (``max|x|, max|w| <= 65535``) that miss
    the fast path's bound are split into bytes, ``x = 256 * x_hi + x_lo``
    (and ``w`` likewise if needed), and the partial convolutions, each
    proven exact on the fast path, are combined in int64
    (:func:`_limb_terms`): still pure integer arithmetic, exact.
    No rounding. Shapes are validated by the caller. A Python function: it
    widens the operands to int16 / int64 (:mod:`kernels.canonical`), then
    calls one jitted body compiled for those types only.
    """
    check_conv_args(x, w, np.asarray(bias), geometry)  # O(1): Numba would read past buffers
    fast = vnni_conv(x, w, bias, geometry, None, conv_work(x.shape, w.shape, np.asarray(geometry)))
    if fast is not None:
        return fast
    wide = _wider_than_bytes(x, w)
    x, w = as_operand(x), as_operand(w)
    bias, geometry = as_array(bias, np.int64), as_array(geometry, np.int64)
    terms = _limb_terms(x, w, geometry) if wide else None
    if terms is None:
        return call_with_threads(conv_work(x.shape, w.shape, geometry), _conv2d_body, x, w, bias, geometry)
    return _limb_sum(terms, bias, geometry)


def conv_work(x_shape, w_shape, geometry) -> int:
    """About how many multiply-adds (plus input copies) a conv costs: sets its thread count."""
    n, c, h, wd = x_shape
    k, cg, kh, kw = w_shape
    sh, sw = geometry[:2].tolist()
    return n * (k * (h // max(sh, 1)) * (wd // max(sw, 1)) * cg * kh * kw + c * h * wd)


def _wider_than_bytes(x, w) -> bool:
    """Whether an operand's dtype is wider than 8 bits: byte limbs cannot help 8-bit operands,
    and skipping the check keeps the int8 hot path free of it."""
    return max(np.dtype(x.dtype).itemsize, np.dtype(w.dtype).itemsize) > 1


#: Largest |operand| the byte split handles: its high byte then fits in [-256, 255].
LIMB_MAX = 2 ** 16 - 1


def _byte_limbs(a):
    """``(hi, lo)`` int16 with ``a == 256 * hi + lo`` and ``0 <= lo <= 255`` (two's complement)."""
    return np.right_shift(a, 8).astype(np.int16), np.bitwise_and(a, 255).astype(np.int16)


def _limb_terms(x, w, geometry):
    """``[(shift, x_part, w_part)]`` with ``conv(x, w) == sum(conv(x_part, w_part) << shift)``,
    every part exact on the int16 fast path; None when no split is needed (the fast path
    takes ``x, w`` as they are) or none helps (an operand beyond :data:`LIMB_MAX`).

    ``x`` is split first (activations are the wide operand of a 16-bit model); ``w``
    too when the halves still miss the bound (large ``C * KH * KW``)."""
    if _fast_ok(x, w, geometry) or max_abs(x) > LIMB_MAX or max_abs(w) > LIMB_MAX:
        return None
    x_hi, x_lo = _byte_limbs(x)
    terms = [(8, x_hi, w), (0, x_lo, w)]
    if not all(_fast_ok(xp, wp, geometry) for _, xp, wp in terms):
        w_hi, w_lo = _byte_limbs(w)
        terms = [(16, x_hi, w_hi), (8, x_hi, w_lo), (8, x_lo, w_hi), (0, x_lo, w_lo)]
        if not all(_fast_ok(xp, wp, geometry) for _, xp, wp in terms):
            return None
    return terms


def _limb_sum(terms, bias, geometry):
    """``bias + sum(conv(x_part, w_part) << shift)`` in int64 (exact: the true sum fits)."""
    no_bias = np.zeros_like(bias)
    total = None
    for shift, x_part, w_part in terms:
        part = call_with_threads(conv_work(x_part.shape, w_part.shape, geometry), _conv2d_body,
                                 x_part, w_part, no_bias, geometry)
        part *= np.int64(1) << shift
        total = part if total is None else np.add(total, part, out=total)
    total += bias.reshape(1, -1, 1, 1)
    return total


@numba.njit(cache=True)
def _conv2d_body(x, w, bias, geometry, threads):
    """:func:`conv2d` on canonical operands (int16 or int64 x and w, int64 bias).

    ``threads``: as for ``kernels.gemm._gemm_body`` (balances the implicit GEMM).
    """
    if _fast_ok(x, w, geometry):
        return _conv2d_int16(x, w, bias, geometry, threads)
    return _conv2d_direct(x, w, bias, geometry)


@numba.njit(cache=True)
def _fast_ok(x, w, geometry):
    """True when the int16/int32 path of :func:`conv2d` is exact (and shapes are non-empty)."""
    n_batch, _, h, wd = x.shape
    k_out, c_per_group, kh_size, kw_size = w.shape
    pads_ok = min(geometry[2], geometry[3], geometry[4], geometry[5]) >= 0
    oh_size = output_extent(h, kh_size, geometry[0], geometry[2], geometry[4], geometry[6])
    ow_size = output_extent(wd, kw_size, geometry[1], geometry[3], geometry[5], geometry[7])
    kdim = c_per_group * kh_size * kw_size
    if not (n_batch > 0 and k_out > 0 and kdim > 0 and oh_size > 0 and ow_size > 0 and pads_ok):
        return False
    # The dtype bounds often prove it already (int8/uint8 x int8: kdim <= 65793); else scan.
    x_info, w_info = np.iinfo(x.dtype), np.iinfo(w.dtype)
    ax = max(-np.int64(x_info.min), np.int64(x_info.max)) if x.itemsize < 4 else np.int64(2 ** 31)
    aw = max(-np.int64(w_info.min), np.int64(w_info.max)) if w.itemsize < 4 else np.int64(2 ** 31)
    if int32_exact(ax, aw, kdim):
        return True
    return int32_exact(max_abs(x), max_abs(w), kdim)


@numba.njit(cache=True)
def _conv2d_int16(x, w, bias, geometry, threads):
    """The exact int16/int32 path of :func:`conv2d` (bounds checked by the caller)."""
    n_batch, c_in, h, wd = x.shape
    k_out, cg, kh_size, kw_size = w.shape
    sh, sw, pt, pl = geometry[0], geometry[1], geometry[2], geometry[3]
    pb, pr, dh, dw = geometry[4], geometry[5], geometry[6], geometry[7]
    oh_size = output_extent(h, kh_size, sh, pt, pb, dh)
    ow_size = output_extent(wd, kw_size, sw, pl, pr, dw)
    bias64 = bias.astype(np.int64)
    out = np.empty((n_batch, k_out, oh_size * ow_size), np.int64)
    if cg == 1 and k_out == geometry[8]:  # depthwise: one channel in, one out per group
        xpad, w32, geo = _depthwise_setup(x, w, geometry)
        depthwise_run(xpad, w32, geo, bias64, out.reshape((n_batch, k_out, oh_size, ow_size)))
    elif _use_rowconv(x, w, geometry, ow_size):
        wq, xq, xtaps, geo = rowconv_setup(x, w, geometry, ow_size)
        rowconv_run(wq, xq, xtaps, geo, bias64, out.reshape((n_batch, k_out, oh_size, ow_size)))
    else:
        xbuf, geo, taps, kp, bp = _igemm_setup(x, w, geometry)
        igemm_run(xbuf, geo, taps, kp, bp, bias64, out, threads)
    return out.reshape((n_batch, k_out, oh_size, ow_size))


def conv2d_requant(x, w, bias, geometry, multiplier, params):
    """:func:`conv2d` followed by ``requant_float`` into int16, fused when possible.

    Parameters
    ----------
    x, w, bias, geometry
        As for :func:`conv2d`.
    multiplier : (K,) float64
        Per output channel, finite.
    params : (3,) int64
        ``[mode, lo, hi]``: rounding constant and clipping bounds, with
        ``-2**15 <= lo <= hi < 2**15``.

    Returns
    -------
    out : (N, K, OH, OW) int16
        ``clip(round_float(float64(acc) * multiplier[k], mode), lo, hi)`` where
        ``acc = conv2d(x, w, bias, geometry)``.
    minmax : (2,) int64
        ``[acc.min(), acc.max()]`` (``[0, 0]`` when empty), so a caller can
        apply an accumulator-width policy and recompute unfused if needed.

    Notes
    -----
    On the implicit-GEMM and VNNI paths (see :func:`conv2d`) the
    requantization is the epilogue of each block, so the int64 accumulators
    are never stored.
    Otherwise computed as ``conv2d`` (byte limbs included) then
    ``requant_float``. Same single float64 product and rounding as
    ``requant_float``: bit-identical.
    Operands are widened as for :func:`conv2d`. :func:`kernels.conv2d_requant_into`
    is the same with weights packed once and an int8/uint8 output.
    """
    check_conv_args(x, w, np.asarray(bias), geometry)
    check_requant_args(multiplier, params, w.shape[0])
    oh, ow = conv2d_output_shape(x.shape, w.shape, np.asarray(geometry))[2:]
    out = np.empty((x.shape[0], w.shape[0], oh, ow), np.int16)
    minmax = vnni_conv_requant(x, w, bias, geometry, multiplier, params, None, out,
                               conv_work(x.shape, w.shape, np.asarray(geometry)))
    if minmax is not None:
        return out, minmax
    return conv2d_requant_int16(x, w, bias, geometry, multiplier, params)


def conv2d_requant_int16(x, w, bias, geometry, multiplier, params):
    """:func:`conv2d_requant` off the VNNI paths (checked operands; int16 result)."""
    wide = _wider_than_bytes(x, w)
    x, w = as_operand(x), as_operand(w)
    bias, geometry = as_array(bias, np.int64), as_array(geometry, np.int64)
    multiplier, params = as_array(multiplier, np.float64), as_array(params, np.int64)
    terms = _limb_terms(x, w, geometry) if wide else None
    if terms is None:
        return call_with_threads(conv_work(x.shape, w.shape, geometry), _conv2d_requant_body,
                                 x, w, bias, geometry, multiplier, params)
    return _requantized(_limb_sum(terms, bias, geometry), multiplier, params, requant_float)


@numba.njit(cache=True)
def _conv2d_requant_body(x, w, bias, geometry, multiplier, params, threads):
    """:func:`conv2d_requant` on canonical operands (see :func:`_conv2d_body`).

    ``threads``: unused (the fused blocks need no balancing); the caller's thread count.
    """
    n_batch, _, h, wd = x.shape
    k_out = w.shape[0]
    kh_size, kw_size = w.shape[2], w.shape[3]
    oh_size = output_extent(h, kh_size, geometry[0], geometry[2], geometry[4], geometry[6])
    ow_size = output_extent(wd, kw_size, geometry[1], geometry[3], geometry[5], geometry[7])
    minmax = np.zeros(2, np.int64)
    if _fast_ok(x, w, geometry) and w.shape[1] == 1 and k_out == geometry[8]:  # depthwise
        xpad, w32, geo = _depthwise_setup(x, w, geometry)
        blocks = np.empty((n_batch * k_out, 2), np.int64)
        out = np.empty((n_batch, k_out, oh_size, ow_size), np.int16)
        depthwise_requant_run(xpad, w32, geo, bias.astype(np.int64), multiplier, params, out, blocks)
        minmax[0] = blocks[:, 0].min()
        minmax[1] = blocks[:, 1].max()
        return out, minmax
    if _fast_ok(x, w, geometry) and _use_rowconv(x, w, geometry, ow_size):
        wq, xq, xtaps, geo = rowconv_setup(x, w, geometry, ow_size)
        blocks = np.empty((n_batch, 2), np.int64)
        out = np.empty((n_batch, k_out, oh_size, ow_size), np.int16)
        rowconv_requant_run(wq, xq, xtaps, geo, bias.astype(np.int64), multiplier, params, out, blocks)
        minmax[0] = blocks[:, 0].min()
        minmax[1] = blocks[:, 1].max()
        return out, minmax
    if _fast_ok(x, w, geometry):
        xbuf, geo, taps, kp, bp = _igemm_setup(x, w, geometry)
        nblocks = (geo[0] + BLOCK - 1) // BLOCK
        blocks = np.empty((nblocks, 2), np.int64)
        out = np.empty((n_batch, k_out, oh_size * ow_size), np.int16)
        igemm_requant_run(xbuf, geo, taps, kp, bp, bias.astype(np.int64), multiplier,
                          params, out, blocks)
        minmax[0] = blocks[:, 0].min()
        minmax[1] = blocks[:, 1].max()
        return out.reshape((n_batch, k_out, oh_size, ow_size)), minmax
    acc = _conv2d_body(x, w, bias, geometry, 1)  # not the fast path: threads unused
    out = np.empty((n_batch, k_out, oh_size * ow_size), np.int16)
    if acc.size:
        minmax[0] = acc.min()
        minmax[1] = acc.max()
        requant_float(acc.reshape((n_batch, k_out, oh_size * ow_size)), multiplier, params[0],
                      params[1:], out)
    return out.reshape((n_batch, k_out, oh_size, ow_size)), minmax


@numba.njit(cache=True)
def _conv2d_direct(x, w, bias, geometry):
    """Direct loops with an int64 accumulator (the general path of :func:`conv2d`)."""
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


def conv2d_requant_ref(x, w, bias, geometry, multiplier, params):
    """NumPy twin of :func:`conv2d_requant`: ``conv2d_ref`` then ``requant_float_ref``."""
    return _requantized(conv2d_ref(x, w, bias, geometry), multiplier, params, requant_float_ref)


def _requantized(acc, multiplier, params, requant):
    """``(out, minmax)`` of :func:`conv2d_requant` from the int64 accumulators ``acc``."""
    out = np.empty(acc.shape, np.int16)
    if not acc.size:
        return out, np.zeros(2, np.int64)
    n_batch, k_out = acc.shape[:2]
    requant(acc.reshape(n_batch, k_out, -1), multiplier, int(params[0]), params[1:],
            out.reshape(n_batch, k_out, -1))
    return out, np.array([acc.min(), acc.max()], np.int64)


# The Python entry points and the jitted bodies they call (tests check the bodies' jit options).
conv2d.jitted = _conv2d_body
conv2d_requant.jitted = _conv2d_requant_body
