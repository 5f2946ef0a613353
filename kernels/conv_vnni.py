"""Entry of the AVX-512 VNNI convolution paths (internal): which path a conv takes.

:func:`kernels.conv2d` and :func:`kernels.conv2d_requant` ask here first.
Pointwise convs (:mod:`kernels.pointwise`; requantized 8-bit activations by
int8 weights through ``vpdpbusd``, :mod:`kernels.pointwise_u8`) and convs with
few channels per group (:mod:`kernels.depthwise`) are taken when the host has AVX-512 VNNI, the
geometry fits and the int32 accumulation is proven exact
(:func:`kernels.igemm.int32_exact`). 8-bit activations are read as they are
(no int16 copy of the input: the kernels widen while they build their pair
layouts), so a chain of int8 layers converts nothing between them.
"""

import numpy as np

from .canonical import as_array
from .depthwise import depthwise_conv, depthwise_conv_requant, use_depthwise
from .igemm import int32_exact, max_abs
from .pointwise import MR, pack_pointwise_weights, pointwise_conv, pointwise_conv_requant, use_pointwise
from .pointwise_u8 import pack_quad_weights, quad_conv_requant, usable as quad_usable
from .threads import call_with_threads

_NARROW = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16))


def _operands(x, w, geometry):
    """``(x, w, geometry)`` as the VNNI paths take them, or None when neither path applies
    or exactness is not proven. ``x`` and ``w`` keep an 8/16-bit dtype."""
    if x.dtype not in _NARROW or w.dtype not in _NARROW or 0 in x.shape or 0 in w.shape:
        return None
    geometry = as_array(geometry, np.int64)
    if not (use_pointwise(x.shape, w.shape, geometry) or use_depthwise(x.shape, w.shape, geometry)):
        return None
    x, w = as_array(x, x.dtype), as_array(w, w.dtype)
    kdim = w.shape[1] * w.shape[2] * w.shape[3]
    ax = 32768 if x.dtype == np.int16 else 255 if x.dtype == np.uint8 else 128
    aw = 32768 if w.dtype == np.int16 else 255 if w.dtype == np.uint8 else 128
    if ax * aw * kdim > 2 ** 31 - 1:  # the dtypes do not prove it: the values may
        ax, aw = int(max_abs(x)), int(max_abs(w))
        if not int32_exact(ax, aw, kdim):
            return None
    return x, w, geometry


def conv_pack(w, geometry):
    """``w``'s pointwise panels (None when the conv does not take the pointwise path):
    ``("quad", int8 quads, row sums)`` for int8 weights (``vpdpbusd`` with 8-bit
    activations), else ``("pair", int16 pairs)``."""
    geometry = np.asarray(geometry)
    if np.dtype(w.dtype) not in _NARROW or not use_pointwise((1, w.shape[1], 1, 1), w.shape, geometry):
        return None
    w = as_array(w, w.dtype)
    if w.dtype == np.int8:
        return ("quad", *pack_quad_weights(w))
    return ("pair", pack_pointwise_weights(w))


def _panels(w, packed, kind):
    """The ``kind`` panels of ``w`` from ``packed`` (:func:`conv_pack`) or packed now."""
    if packed is not None and packed[0] == kind:
        panels = packed[1:]
    else:
        panels = pack_quad_weights(w) if kind == "quad" else (pack_pointwise_weights(w),)
    k_pad = -(-w.shape[0] // MR) * MR
    group = 4 if kind == "quad" else 2
    if panels[0].shape != (k_pad * -(-w.shape[1] // group) * group,):
        raise ValueError(f"conv2d: packed panels {panels[0].shape} do not fit w {w.shape}")
    return panels


def vnni_conv(x, w, bias, geometry, packed, work):
    """``conv2d`` on a VNNI path, or None when neither applies (the caller's own paths)."""
    ops = _operands(x, w, geometry)
    if ops is None:
        return None
    x, w, geometry = ops
    bias = as_array(bias, np.int64)
    if use_pointwise(x.shape, w.shape, geometry):
        return call_with_threads(work, pointwise_conv, x, _panels(w, packed, "pair")[0], bias, w.shape[0])
    return call_with_threads(work, depthwise_conv, x, w, bias, geometry)


def vnni_requant_path(x, w, geometry, packed):
    """``(kernel, lead)`` of :func:`vnni_conv_requant`'s path for ``x``'s shape and dtype, when
    the dtypes alone prove it exact (None otherwise: then the values decide, per call):
    the kernel is called as ``kernel(x, *lead, bias, [geometry,] multiplier, params, out,
    threads)``, ``geometry`` for the depthwise kernel only. Shapes: checked by the caller."""
    if x.dtype not in _NARROW or w.dtype not in _NARROW or 0 in x.shape or 0 in w.shape:
        return None
    pointwise = use_pointwise(x.shape, w.shape, geometry)
    if not (pointwise or use_depthwise(x.shape, w.shape, geometry)):
        return None
    w = as_array(w, w.dtype)
    ax = 32768 if x.dtype == np.int16 else 255 if x.dtype == np.uint8 else 128
    aw = 32768 if w.dtype == np.int16 else 255 if w.dtype == np.uint8 else 128
    if ax * aw * w.shape[1] * w.shape[2] * w.shape[3] > 2 ** 31 - 1:
        return None
    if not pointwise:
        return depthwise_conv_requant, (w,)
    if quad_usable(x, w):
        wq, sums = _panels(w, packed, "quad")
        return quad_conv_requant, (wq, sums, 128 if x.dtype == np.int8 else 0)
    return pointwise_conv_requant, (_panels(w, packed, "pair")[0],)


def vnni_conv_requant(x, w, bias, geometry, multiplier, params, packed, out, work):
    """``conv2d_requant`` on a VNNI path into ``out`` (N, K, OH, OW; int8, uint8 or int16),
    returning the accumulators' ``[min, max]``; None when neither path applies (see
    :func:`vnni_conv`)."""
    ops = _operands(x, w, geometry)
    if ops is None:
        return None
    x, w, geometry = ops
    bias = as_array(bias, np.int64)
    multiplier, params = as_array(multiplier, np.float64), as_array(params, np.int64)
    if use_pointwise(x.shape, w.shape, geometry):
        if quad_usable(x, w):  # bytes: vpdpbusd, the activations shifted to unsigned
            wq, sums = _panels(w, packed, "quad")
            return call_with_threads(work, quad_conv_requant, x, wq, sums, 128 if x.dtype == np.int8 else 0,
                                     bias, multiplier, params, out)
        return call_with_threads(work, pointwise_conv_requant, x, _panels(w, packed, "pair")[0], bias,
                                 multiplier, params, out)
    return call_with_threads(work, depthwise_conv_requant, x, w, bias, geometry, multiplier, params, out)
