"""The block builder behind `aidge_lite.testing.graphs.float_graphs`: adds Conv, pool,
Gemm, ... nodes to a float graph with drawn attributes while tracking the per-sample
shape (split out of `graphs`, which re-exports `window_overlaps_input`).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..ir import Graph, Node, OpType


def window_overlaps_input(size, kernel, stride, pad_begin, pad_end, dilation, ceil_extra=0):
    """Output extent >= 1 and every window along one axis hits an input index."""
    span = size + pad_begin + pad_end + ceil_extra
    out = (span - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        return False
    return all(any(0 <= o * stride - pad_begin + k * dilation < size for k in range(kernel))
               for o in range(out))


class _Builder:
    """Adds nodes to a float graph while tracking the per-sample shape."""

    def __init__(self, draw, rng: np.random.Generator, name: str):
        self.draw, self.rng = draw, rng
        self.graph = Graph(name)
        self.count = 0
        self.blocks: list[str] = []

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def const(self, base: str, value: np.ndarray) -> str:
        return self.graph.add_constant(self.name(base), value.astype(np.float32)).name

    def node(self, base: str, op: OpType, inputs, **attrs) -> str:
        return self.graph.add(Node(self.name(base), op, list(inputs), attrs)).name

    # ------------------------------------------------------------ parameters
    def weights(self, shape) -> np.ndarray:
        draw = self.draw
        scale = draw(st.sampled_from((0.05, 0.3, 1.0, 3.0)))
        w = self.rng.normal(0.0, scale, shape)
        dead = None
        if shape[0] >= 3 and draw(st.integers(0, 9)) == 0:
            # a nearly dead output channel (trained nets have them), at most one, and never
            # leaving no normal channel: a nearly dead *layer* trips a known PTQ bug
            # (fixed-point shift > 62, see
            # tests/interp/test_random_graphs.py::test_fixed_point_tiny_multiplier_is_encodable)
            dead = draw(st.integers(0, shape[0] - 1))
            w[dead] *= 1e-5
        if draw(st.integers(0, 3)) == 0:  # an all-zero output channel
            zero = draw(st.integers(0, shape[0] - 1))
            if zero != dead:
                w[zero] = 0.0
        if draw(st.integers(0, 24)) == 0:  # all-zero weights
            w[...] = 0.0
        return w

    def bias(self, k: int) -> np.ndarray:
        kind = self.draw(st.sampled_from(("normal", "normal", "zero", "large")))
        if kind == "zero":
            return np.zeros(k)
        return self.rng.normal(0.0, 5.0 if kind == "large" else 0.5, k)

    # ----------------------------------------------------------------- conv
    def _group(self, c: int, k: int | None):
        """(group, K) for C input channels; K fixed by the caller or drawn."""
        draw = self.draw
        kind = draw(st.sampled_from(("plain", "plain", "depthwise", "grouped")))
        if kind == "depthwise" and (k is None or k % c == 0):
            return c, (c * draw(st.integers(1, 2)) if k is None else k)
        divisors = [g for g in range(2, c + 1) if c % g == 0 and (k is None or k % g == 0)]
        if kind == "grouped" and divisors:
            g = draw(st.sampled_from(divisors))
            return g, (g * draw(st.integers(1, 2)) if k is None else k)
        return 1, (draw(st.integers(1, 4)) if k is None else k)

    def _free_axis(self, size: int):
        draw = self.draw
        max_pad = 2 if size <= 12 else 0
        pb, pe = draw(st.integers(0, max_pad)), draw(st.integers(0, max_pad))
        d = draw(st.integers(1, 2))
        k = draw(st.integers(1, max(1, min(3, (size + pb + pe - 1) // d + 1))))
        s = draw(st.integers(1, 2))
        out = (size + pb + pe - d * (k - 1) - 1) // s + 1
        return k, s, d, pb, pe, out

    def _same_axis(self, size: int, stride: int):
        draw = self.draw
        k, d = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        total = d * (k - 1)
        pb = draw(st.integers(0, total))
        return k, stride, d, pb, total - pb, (size - 1) // stride + 1

    def conv(self, x: str, shape, k_out=None, stride=None):
        """Conv on x of shape (C, H, W); `stride` set means 'same' padding."""
        c, h, w = shape
        group, k_out = self._group(c, k_out)
        if stride is None:
            ah, aw = self._free_axis(h), self._free_axis(w)
        else:
            ah, aw = self._same_axis(h, stride), self._same_axis(w, stride)
        weight = self.weights((k_out, c // group, ah[0], aw[0]))
        inputs = [x, self.const("W", weight)]
        if self.draw(st.integers(0, 4)):
            inputs.append(self.const("B", self.bias(k_out)))
        attrs = dict(kernel_shape=[ah[0], aw[0]], strides=[ah[1], aw[1]],
                     dilations=[ah[2], aw[2]], pads=[ah[3], aw[3], ah[4], aw[4]])
        if group > 1:
            attrs["group"] = group
        name = self.node("conv", OpType.CONV, inputs, **attrs)
        return name, (k_out, ah[5], aw[5])

    def maybe_relu(self, x: str) -> str:
        return self.node("relu", OpType.RELU, [x]) if self.draw(st.booleans()) else x

    # ----------------------------------------------------------------- pools
    def pool(self, x: str, shape, op: OpType):
        from ..interp.geometry import window_geometry

        draw = self.draw
        c, h, w = shape
        axes = []
        for size in (h, w):
            d = draw(st.integers(1, 2))
            k = draw(st.integers(1, min(3, (size - 1) // d + 1)))  # fits without padding
            limit = min(2, k - 1)  # ONNX / onnxruntime: a pool's pads are smaller than its kernel
            axes.append((k, draw(st.integers(1, 2)), d, draw(st.integers(0, limit)),
                         draw(st.integers(0, limit))))
        attrs = dict(kernel_shape=[axes[0][0], axes[1][0]], strides=[axes[0][1], axes[1][1]],
                     pads=[axes[0][3], axes[1][3], axes[0][4], axes[1][4]])
        if axes[0][2] > 1 or axes[1][2] > 1:
            attrs["dilations"] = [axes[0][2], axes[1][2]]
        include_pad = op is OpType.AVGPOOL and draw(st.integers(0, 3)) == 0
        if include_pad:
            attrs["count_include_pad"] = 1
        elif draw(st.integers(0, 3)) == 0:
            attrs["ceil_mode"] = 1
        probe = Node("probe", op, ["x"], attrs)
        _, _, _, out_hw, extra = window_geometry(probe, (h, w), attrs["kernel_shape"])
        ok = min(out_hw) >= 1 and all(
            window_overlaps_input(size, k, s, pb, pe, d, ex)
            for size, (k, s, d, pb, pe), ex in zip((h, w), axes, extra))
        if not ok:  # fall back to an always valid window: no padding, floor mode
            attrs["pads"] = [0, 0, 0, 0]
            attrs.pop("ceil_mode", None)
            attrs.pop("dilations", None)
            probe = Node("probe", op, ["x"], attrs)
            _, _, _, out_hw, _ = window_geometry(probe, (h, w), attrs["kernel_shape"])
        return self.node("pool", op, [x], **attrs), (c, *out_hw)

    # ------------------------------------------------------------------ gemm
    def gemm(self, x: str, features: int, out: int | None = None):
        draw = self.draw
        out = draw(st.integers(1, 8)) if out is None else out
        weight = self.weights((out, features))
        trans_b = draw(st.booleans())
        inputs = [x, self.const("W", weight if trans_b else weight.T)]
        if draw(st.integers(0, 4)):
            inputs.append(self.const("B", self.bias(out)))
        attrs = {"transB": 1} if trans_b else {}
        return self.node("gemm", OpType.GEMM, inputs, **attrs), (out,)
