"""A convolution layer's constant weights prepared once, and a requantized conv into a
caller's output array (the integer engine's fused ``Conv -> Quantizer``)."""

from typing import NamedTuple

import numpy as np

from .checks import check_conv_args, check_requant_args
from .conv import conv2d_requant_int16, conv2d_requant_ref
from .conv_vnni import conv_pack, vnni_conv_requant

_OUT_DTYPES = frozenset(np.dtype(t) for t in ("int8", "uint8", "int16"))


class ConvLayer(NamedTuple):
    """What :func:`conv2d_pack` prepares: the weights, the geometry, the weights'
    pointwise panels (None when the layer does not take the pointwise path), and the
    geometry as Python ints."""

    w: np.ndarray
    geometry: np.ndarray
    panels: object
    ints: tuple  # geometry as Python ints


def conv2d_pack(w, geometry):
    """Prepare a constant weight once for repeated :func:`conv2d_requant_into` calls.

    Parameters
    ----------
    w : (K, C // group, KH, KW) integer array
    geometry : (9,) int64, as for :func:`kernels.conv2d`

    Returns
    -------
    ConvLayer
        Holds ``w`` itself (not a copy: do not change it in place afterwards).
    """
    geometry = np.array(geometry, np.int64)
    return ConvLayer(w, geometry, conv_pack(w, geometry), tuple(int(g) for g in geometry))


def conv2d_requant_into(x, layer, bias, multiplier, params, out):
    """:func:`kernels.conv2d_requant` of ``layer = conv2d_pack(w, geometry)`` into ``out``.

    Parameters
    ----------
    x, bias, multiplier, params
        As for :func:`kernels.conv2d_requant`.
    layer : ConvLayer
    out : (N, K, OH, OW) int8, uint8 or int16, C-contiguous
        Written in place; its dtype must hold ``[lo, hi]``.

    Returns
    -------
    minmax : (2,) int64
        ``[acc.min(), acc.max()]`` as for :func:`kernels.conv2d_requant`; ``out``
        holds the same values as its ``out``.

    Notes
    -----
    The pointwise and depthwise VNNI paths write ``out`` directly, so an int8
    activation needs no int16 temporary; the other paths compute int16 and copy.
    """
    w, geometry = layer.w, layer.geometry
    check_conv_args(x, w, np.asarray(bias), geometry)
    check_requant_args(multiplier, params, w.shape[0])
    sh, sw, pt, pl, pb, pr, dh, dw = layer.ints[:8]  # plain ints: no jitted call per conv
    shape = (x.shape[0], w.shape[0], (x.shape[2] + pt + pb - dh * (w.shape[2] - 1) - 1) // sh + 1,
             (x.shape[3] + pl + pr - dw * (w.shape[3] - 1) - 1) // sw + 1)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype not in _OUT_DTYPES \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"conv2d_requant_into: out must be a writable C-contiguous {shape} "
                         f"int8/uint8/int16 array, got {getattr(out, 'dtype', type(out))} "
                         f"{getattr(out, 'shape', '')}")
    info = np.iinfo(out.dtype)
    if not info.min <= int(params[1]) <= int(params[2]) <= info.max:
        raise ValueError(f"conv2d_requant_into: bounds {int(params[1])}..{int(params[2])} "
                         f"do not fit out's dtype {out.dtype}")
    work = shape[0] * (shape[1] * shape[2] * shape[3] * w.shape[1] * w.shape[2] * w.shape[3]
                       + x.shape[1] * x.shape[2] * x.shape[3])  # multiply-adds + copies: the thread count
    minmax = vnni_conv_requant(x, w, bias, geometry, multiplier, params, layer.panels, out, work)
    if minmax is not None:
        return minmax
    y, minmax = conv2d_requant_int16(x, w, bias, geometry, multiplier, params)
    out[...] = y
    return minmax


def conv2d_requant_into_ref(x, layer, bias, multiplier, params, out):
    """NumPy twin of :func:`conv2d_requant_into`: ``conv2d_requant_ref``, stored into ``out``."""
    y, minmax = conv2d_requant_ref(x, layer.w, bias, layer.geometry, multiplier, params)
    out[...] = y
    return minmax
