"""A convolution layer's constant weights prepared once, and a requantized conv into a
caller's output array (the integer engine's fused ``Conv -> Quantizer``)."""

from typing import NamedTuple

import numba
import numpy as np

from .canonical import as_array, as_operand
from .checks import check_conv_args, check_requant_args
from .conv import _conv2d_requant_body, conv2d_output_shape, conv2d_requant_int16, conv2d_requant_ref, conv_work
from .conv_vnni import conv_pack, depthwise_conv_requant, vnni_conv_requant, vnni_requant_path
from .conv_setup import ROWCONV_MAX_C, igemm_setup
from .depthwise import depthwise_conv_requant_packed, dw_layout, pack_dw_weights
from .igemm import BLOCK, igemm_requant_run, nhwc_int16
from .threads import call_with_threads

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


class PreparedConv:
    """:func:`conv2d_requant_into` of one layer for one input shape and dtype, its checks and
    path choice made once (:func:`conv2d_requant_prepare`): a call only checks that ``x`` and
    ``out`` are what was validated (shape, dtype, layout), then runs the chosen jitted kernel."""

    __slots__ = ("x_shape", "x_dtype", "out_shape", "out_dtype", "kernel", "args", "work", "int16")

    def __call__(self, x, out):
        """Write the requantized conv of ``x`` into ``out``; return the accumulators' [min, max]."""
        if x.shape != self.x_shape or x.dtype != self.x_dtype or out.shape != self.out_shape \
                or out.dtype != self.out_dtype or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"prepared conv: x {x.dtype}{x.shape} / out {out.dtype}{out.shape} are not "
                             f"the {self.x_dtype}{self.x_shape} / {self.out_dtype}{self.out_shape} it was "
                             "prepared for")
        if self.int16:  # the implicit-GEMM / rowconv paths take int16 operands and return int16
            y, minmax = call_with_threads(self.work, self.kernel, x.astype(np.int16), *self.args)
            out.reshape(y.shape)[...] = y  # (out is C-contiguous: a view)
            return minmax
        if not (x.flags.c_contiguous and x.flags.writeable):
            x = np.array(x, order="C")
        return call_with_threads(self.work, self.kernel, x, *self.args, out)


def conv2d_requant_prepare(x_shape, x_dtype, layer, bias, multiplier, params, out_dtype):
    """Check :func:`conv2d_requant_into`'s operands for inputs of ``x_shape`` / ``x_dtype`` once
    and choose its kernel path; None when the choice would depend on the values of ``x`` (16-bit
    operands whose dtypes do not prove the int32 bound), where :func:`conv2d_requant_into` serves.

    Returns
    -------
    PreparedConv or None
        Called as ``prepared(x, out)``; the same values and ``minmax`` as
        ``conv2d_requant_into(x, layer, bias, multiplier, params, out)``. Holds canonical
        copies of ``bias``, ``multiplier`` and ``params`` (later changes to them are not seen).
    """
    x_dtype, out_dtype = np.dtype(x_dtype), np.dtype(out_dtype)
    x = np.broadcast_to(np.zeros((), x_dtype), tuple(int(s) for s in x_shape))  # shape-only stand-in
    w, geometry = layer.w, as_array(layer.geometry, np.int64).copy()
    bias = np.asarray(bias)
    check_conv_args(x, w, bias, geometry)
    check_requant_args(multiplier, params, w.shape[0])
    oh, ow = conv2d_output_shape(x.shape, w.shape, geometry)[2:]
    info = np.iinfo(out_dtype) if out_dtype in _OUT_DTYPES else None
    if info is None or not info.min <= int(params[1]) <= int(params[2]) <= info.max:
        raise ValueError(f"conv2d_requant_prepare: out dtype {out_dtype} cannot hold "
                         f"[{int(params[1])}, {int(params[2])}]")
    bias64 = as_array(bias, np.int64).copy()
    multiplier, params = as_array(multiplier, np.float64).copy(), as_array(params, np.int64).copy()
    run = PreparedConv()
    run.x_shape, run.x_dtype = x.shape, x_dtype
    run.out_shape, run.out_dtype = (x.shape[0], w.shape[0], oh, ow), out_dtype
    run.int16 = False
    path = vnni_requant_path(x, w, geometry, layer.panels)
    if path is not None:
        kernel, lead = path
        run.kernel, run.args = kernel, (*lead, bias64, *((geometry,) if kernel is depthwise_conv_requant
                                                        else ()), multiplier, params)
        if kernel is depthwise_conv_requant:  # the weight pairs and tap layout, once (~11 us a call)
            lay, taps = dw_layout(x.shape[2], x.shape[3], w.shape[1], w.shape[2], w.shape[3], geometry)
            run.kernel = depthwise_conv_requant_packed
            run.args = (pack_dw_weights(as_array(w, w.dtype)), lay, taps, bias64, geometry, multiplier, params)
        run.work = x.shape[0] * (w.shape[0] * oh * ow * w.shape[1] * w.shape[2] * w.shape[3]
                                 + x.shape[1] * x.shape[2] * x.shape[3])
        return run
    if x_dtype.itemsize > 1 or w.dtype.itemsize > 1:
        return None  # byte limbs may be needed: decided on the values, per call
    w16 = as_operand(w).copy()
    run.int16, run.work = True, conv_work(x.shape, w.shape, geometry)
    run.kernel, run.args = _conv2d_requant_body, (w16, bias64, geometry, multiplier, params)
    if _takes_igemm(x, w, geometry, ow):  # the weight packing and layout, once (~half the call)
        numba.get_num_threads()  # starts the thread pool: a parallel region before it crashes
        _, geo, taps, kp, bp = igemm_setup(np.zeros(x.shape, np.int16), w16, geometry)
        pads = geometry[2:6][[0, 2, 1, 3]].copy()  # nhwc_int16 takes top, bottom, left, right
        run.kernel, run.args = _igemm_requant_packed, (pads, geo, taps, kp, bp, bias64, multiplier, params)
    return run


def _takes_igemm(x, w, geometry, ow):
    """Whether `_conv2d_requant_body` takes its implicit-GEMM branch for 8-bit operands of these
    shapes: the int32 bound proven by the dtypes, neither depthwise nor the rowconv kernel."""
    ax = max(-int(np.iinfo(x.dtype).min), int(np.iinfo(x.dtype).max))
    aw = max(-int(np.iinfo(w.dtype).min), int(np.iinfo(w.dtype).max))
    kdim = w.shape[1] * w.shape[2] * w.shape[3]
    depthwise = w.shape[1] == 1 and w.shape[0] == geometry[8]
    rowconv = (x.shape[1] <= ROWCONV_MAX_C and geometry[8] == 1 and geometry[1] == 1
               and geometry[7] == 1 and ow >= 8 and w.shape[3] >= 2)
    return ax * aw * kdim <= 2 ** 31 - 1 and not depthwise and not rowconv


@numba.njit(cache=True)
def _igemm_requant_packed(x, pads, geo, taps, kp, bp, bias, multiplier, params, threads):
    """The implicit-GEMM branch of `_conv2d_requant_body` with the weights packed beforehand
    (`igemm_setup` at prepare time): int16 ``x`` in, ``(int16 (N, K, OH, OW), [min, max])`` out."""
    xbuf = nhwc_int16(x, pads[0], pads[1], pads[2], pads[3])
    n_batch, k_out = x.shape[0], geo[6] * geo[8]
    out = np.empty((n_batch, k_out, geo[1]), np.int16)
    blocks = np.empty(((geo[0] + BLOCK - 1) // BLOCK, 2), np.int64)
    igemm_requant_run(xbuf, geo, taps, kp, bp, bias, multiplier, params, out, blocks)
    minmax = np.empty(2, np.int64)
    minmax[0] = blocks[:, 0].min()
    minmax[1] = blocks[:, 1].max()
    return out, minmax
