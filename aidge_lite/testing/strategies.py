"""Public Hypothesis strategies for kernel-level inputs: integer tensors and
consistent convolution / pooling shapes.

Shapes are drawn so that they are valid by construction (every output
dimension >= 1, every pooling window overlaps the input), in the spirit of
``torch.testing._internal.hypothesis_utils.tensor_conv``.
"""

from typing import NamedTuple

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

#: Activation dtypes a kernel may receive.
ACTIVATION_DTYPES = (np.int8, np.uint8, np.int16, np.uint16, np.int32)
#: Weight dtypes a kernel may receive.
WEIGHT_DTYPES = (np.int8, np.int16, np.int32)


def int_tensors(dtype, shape, min_value=None, max_value=None):
    """Arrays of ``dtype`` and ``shape`` (a tuple or a strategy of tuples).

    Values cover the whole dtype range unless narrowed by ``min_value`` /
    ``max_value``.
    """
    info = np.iinfo(dtype)
    lo = info.min if min_value is None else max(int(min_value), int(info.min))
    hi = info.max if max_value is None else min(int(max_value), int(info.max))
    return arrays(dtype, shape, elements=st.integers(lo, hi))


class ConvShape(NamedTuple):
    """A consistent conv problem: shapes and the 9-int kernel geometry."""
    x_shape: tuple
    w_shape: tuple
    geometry: tuple  # stride_h, stride_w, pad_t, pad_l, pad_b, pad_r, dil_h, dil_w, group


class PoolShape(NamedTuple):
    """A consistent pooling problem: input shape and the 10-int geometry."""
    x_shape: tuple
    geometry: tuple  # kh, kw, stride_h, stride_w, pad_t, pad_l, pad_b, pad_r, dil_h, dil_w


def _min_input(kernel, dilation, pad_total):
    """Smallest input extent giving an output extent >= 1."""
    return max(1, dilation * (kernel - 1) + 1 - pad_total)


@st.composite
def _axis(draw, max_kernel, max_stride, max_pad, max_dilation, max_size,
          pad_below_extent=False):
    """Draw (kernel, stride, pad_begin, pad_end, dilation, size) for one axis.

    ``pad_below_extent`` keeps each pad smaller than the dilated kernel
    extent, as ONNX requires for pooling.
    """
    kernel = draw(st.integers(1, max_kernel))
    dilation = draw(st.integers(1, max_dilation))
    stride = draw(st.integers(1, max_stride))
    limit = min(max_pad, dilation * (kernel - 1)) if pad_below_extent else max_pad
    pad_begin = draw(st.integers(0, limit))
    pad_end = draw(st.integers(0, limit))  # asymmetric on purpose
    low = _min_input(kernel, dilation, pad_begin + pad_end)
    size = draw(st.integers(low, max(low, max_size)))
    return kernel, stride, pad_begin, pad_end, dilation, size


@st.composite
def conv2d_shapes(draw, max_batch=2, max_groups=3, max_channels_per_group=3,
                  max_kernel=3, max_stride=3, max_pad=2, max_dilation=2,
                  max_size=7, allow_empty=True):
    """Consistent grouped-conv shapes.

    Covers plain, grouped, depthwise (``group == C == K``) and depthwise with
    a channel multiplier (``K = m * group``); asymmetric padding; dilation.
    With ``allow_empty`` the batch, channels per group or filters per group
    may be zero.
    """
    low = 0 if allow_empty else 1
    batch = draw(st.integers(low, max_batch))
    group = draw(st.integers(1, max_groups))
    if draw(st.booleans()):  # depthwise, possibly with a multiplier
        c_per_group = 1
        k_per_group = draw(st.integers(1, 3))
    else:
        c_per_group = draw(st.integers(low, max_channels_per_group))
        k_per_group = draw(st.integers(low, 3))
    kh, sh, pt, pb, dh, h = draw(_axis(max_kernel, max_stride, max_pad, max_dilation, max_size))
    kw, sw, pl, pr, dw, w = draw(_axis(max_kernel, max_stride, max_pad, max_dilation, max_size))
    return ConvShape(
        x_shape=(batch, group * c_per_group, h, w),
        w_shape=(group * k_per_group, c_per_group, kh, kw),
        geometry=(sh, sw, pt, pl, pb, pr, dh, dw, group),
    )


def _windows_overlap_input(kernel, stride, pad_begin, pad_end, dilation, size):
    """True if every output window along one axis hits at least one input index."""
    out = (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1
    return all(
        any(0 <= o * stride - pad_begin + k * dilation < size for k in range(kernel))
        for o in range(out))


@st.composite
def pool2d_shapes(draw, max_batch=2, max_channels=3, max_kernel=3, max_stride=3,
                  max_pad=2, max_dilation=2, max_size=7, allow_empty=True):
    """Consistent pooling shapes; pads stay below the dilated kernel extent
    and every window overlaps the input (so max/avg are always defined)."""
    low = 0 if allow_empty else 1
    batch = draw(st.integers(low, max_batch))
    channels = draw(st.integers(low, max_channels))
    axis = _axis(max_kernel, max_stride, max_pad, max_dilation, max_size, pad_below_extent=True)
    ax_h, ax_w = draw(axis), draw(axis)
    assume(_windows_overlap_input(*ax_h) and _windows_overlap_input(*ax_w))
    (kh, sh, pt, pb, dh, h), (kw, sw, pl, pr, dw, w) = ax_h, ax_w
    return PoolShape(x_shape=(batch, channels, h, w),
                     geometry=(kh, kw, sh, sw, pt, pl, pb, pr, dh, dw))
