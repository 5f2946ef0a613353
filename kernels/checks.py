"""O(1) entry checks of the public kernels written in Python (conv, gemm).

Numba does no bounds checking: a shape that does not fit makes a kernel read
past its buffers and return whatever memory holds. Each public entry point
calls one of these once per call (shapes, dtypes and geometry only, never the
data), and they raise ``ValueError`` naming the problem. The jitted entry
points (pools, requant, lookup, elementwise) check the same way at their top.
"""

import numpy as np


def _integer(name, a):
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, got "
                         f"{getattr(a, 'dtype', type(a).__name__)}")


def check_conv_args(x, w, bias, geometry):
    """Validate :func:`kernels.conv2d`'s operands; raise ``ValueError`` naming the problem.

    ``x`` (N, C, H, W) and ``w`` (K, C // group, KH, KW) integer arrays, ``bias`` (K,),
    ``geometry`` 9 integers: strides and dilations >= 1, pads >= 0, ``group`` >= 1
    dividing K, and an output of at least one pixel.

    Returns
    -------
    (OH, OW) : tuple of int
    """
    for name, a in (("x", x), ("w", w), ("bias", bias)):
        _integer(name, a)
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d: x {x.shape} and w {w.shape} must both be 4-D")
    g = np.asarray(geometry)
    if g.shape != (9,) or g.dtype.kind not in "iu":
        raise ValueError("conv2d: geometry must be 9 integers "
                         "[stride_h, stride_w, pad_t, pad_l, pad_b, pad_r, dil_h, dil_w, group]")
    sh, sw, pt, pl, pb, pr, dh, dw, group = (int(v) for v in g)
    if min(sh, sw, dh, dw, group) < 1 or min(pt, pl, pb, pr) < 0:
        raise ValueError(f"conv2d: strides, dilations and group must be >= 1 and pads >= 0, got {g.tolist()}")
    k, cg, kh, kw = w.shape
    if x.shape[1] != cg * group or k % group or min(kh, kw) < 1:
        raise ValueError(f"conv2d: x {x.shape} and w {w.shape} do not fit group={group}")
    if bias.shape != (k,):
        raise ValueError(f"conv2d: bias {bias.shape} must be ({k},)")
    oh = (x.shape[2] + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d: kernel {(kh, kw)} does not fit the padded input {x.shape[2:]}")
    return oh, ow


def check_gemm_args(a, b, bias):
    """Validate :func:`kernels.gemm`'s operands: ``a`` (M, K), ``b`` (K, N) integer
    arrays and ``bias`` (N,); raise ``ValueError`` naming the problem."""
    for name, v in (("a", a), ("b", b), ("bias", bias)):
        _integer(name, v)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm: a {a.shape} and b {b.shape} are not (M, K) and (K, N)")
    if bias.shape != (b.shape[1],):
        raise ValueError(f"gemm: bias {bias.shape} must be ({b.shape[1]},)")


def check_requant_args(multiplier, params, channels):
    """:func:`kernels.conv2d_requant`'s extra operands: ``multiplier`` (K,) finite floats,
    ``params`` ``[mode, lo, hi]`` with ``-2**15 <= lo <= hi < 2**15``."""
    m, p = np.asarray(multiplier), np.asarray(params)
    if m.shape != (channels,) or m.dtype.kind != "f" or not np.isfinite(m).all():
        raise ValueError(f"conv2d_requant: multiplier must be ({channels},) finite floats")
    if p.shape != (3,) or p.dtype.kind not in "iu" or not -2 ** 15 <= int(p[1]) <= int(p[2]) < 2 ** 15:
        raise ValueError("conv2d_requant: params must be [mode, lo, hi] with lo <= hi in int16")
