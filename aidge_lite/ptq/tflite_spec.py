"""tflite_spec: quantize a prepared, calibrated float graph the way TFLite's int8 spec says.

`quantize_network(..., spec="tflite")` runs `prepare`, optionally CLE, and
`calibrate`, then this pass, which builds a new integer graph from the node
patterns of an imported int8 TFLite model (aidge_lite.tflite), so both engines
run it with TFLite's arithmetic:

- activations: asymmetric int8, scale = (max - min) / 255 over the calibrated
  range widened to hold 0, zero point = round(-128 - min / scale) (TFLite's
  nudged zero point: 0.0 is exactly representable);
- weights: symmetric int8 in [-127, 127], one scale per output channel;
  biases: int32 at scale s_in * s_w[c];
- Conv/Gemm: accumulate (x - zp_in) * w + bias in int32, then TFLite's
  gemmlowp rescale (Q31 multiplier, signed shift, double rounding) + zp_out;
  a ReLU that alone follows is fused into the output clamp [max(zp, -128), 127];
- Add: TFLite's ADD (both inputs shifted left by 20, rescaled to twice the
  larger input scale, summed, rescaled to the output);
- max/average pools, flatten/reshape: on raw codes, quantization passed
  through (TFLite's pools require equal input and output parameters);
- Concat: one scale for all; an input on another scale is requantized first;
- the graph input stays float32 and is quantized as TFLite's QUANTIZE does.

Only 8 bits: the spec is int8.
"""
from __future__ import annotations

import numpy as np

from ..errors import QuantizationError
from ..ir import Graph, Node, OpType, verify
from ..target import Target
from ..tflite import params as P
from .config import PassReport, PTQConfig

GEMMLOWP_TARGET = Target(acc_bits=32, rounding="half_away", rescale="gemmlowp", overflow="error")
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
_PASS_THROUGH = frozenset({OpType.MAXPOOL, OpType.AVGPOOL, OpType.GLOBAL_AVGPOOL, OpType.FLATTEN,
                           OpType.RESHAPE, OpType.TRANSPOSE, OpType.SQUEEZE, OpType.UNSQUEEZE,
                           OpType.PAD})


def activation_params(low: float, high: float) -> tuple[float, int]:
    """(float32 scale, zero point) of an asymmetric int8 tensor holding [low, high] and 0."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high - low <= 0:
        return float(np.float32(1.0)), 0  # a constant-zero tensor: any scale is exact
    scale = np.float32((high - low) / 255.0)
    zero_point = int(np.clip(P.round_half_away(-128 - low / float(scale)), -128, 127))
    return float(scale), zero_point


BIAS_LIMIT = float(1 << 28)  # |bias| in codes: leaves int32 room for the products


def weight_params(w: np.ndarray, b: np.ndarray, input_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8: (int8 weights, float32 scales); axis 0 = channel.

    A channel whose weights are ~0 but whose bias is not (a dead channel) would get a
    bias of more than 2^31 codes at scale s_in * s_w: its weight scale is raised until
    the bias fits in 2^28 (TFLite's converter also widens the scale to fit the bias)."""
    peak = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) / 127.0
    peak = np.maximum(peak, np.abs(b) / (float(np.float32(input_scale)) * BIAS_LIMIT * 0.99))  # float32 margin
    scales = np.where(peak > 0, peak, 1.0).astype(np.float32)
    shaped = scales.reshape((-1,) + (1,) * (w.ndim - 1)).astype(np.float64)
    q = np.clip(np.sign(w) * np.floor(np.abs(w / shaped) + 0.5), -127, 127)
    return q.astype(np.int8), scales


class _Builder:
    def __init__(self, source: Graph):
        self.src = source
        self.q = Graph(source.name)
        self.alias: dict[str, str] = {}     # float tensor -> integer node holding it
        self.qp: dict[str, tuple[float, int]] = {}  # float tensor -> (scale, zero point)
        self.fused: set[str] = set()         # ReLUs folded into their producer's clamp

    def node(self, name, op, inputs, **attrs):
        self.q.add(Node(name, op, list(inputs), attrs))
        return name

    def range_params(self, name):
        meta = self.src.node(name).meta
        if "min" not in meta:
            raise QuantizationError(f"node '{name}': no calibrated range (run calibrate first)")
        return activation_params(meta["min"], meta["max"])

    def requantizer(self, name, source, src_qp, out_qp, multiplier, shift, lo, hi, *,
                    pre_shift=0, dtype="int8", axis=-1):
        return self.node(name, OpType.QUANTIZER, [source], mode="gemmlowp", multiplier=multiplier,
                         shift=shift, input_zero_point=src_qp[1] if src_qp else 0,
                         pre_shift=pre_shift, zero_point=out_qp[1] if out_qp else 0, lo=int(lo),
                         hi=int(hi), dtype=dtype, axis=axis,
                         scale=out_qp[0] if out_qp else 1.0, rounding="half_away")

    def fused_relu(self, node):
        """The ReLU that alone consumes `node` (not a graph output), if any."""
        consumers = self.src.consumers(node.name)
        if node.name in self.src.outputs or len(consumers) != 1:
            return None
        relu = consumers[0] if isinstance(consumers[0], Node) else self.src.node(consumers[0])
        return relu if relu.op is OpType.RELU else None

    # ---------------------------------------------------------------- ops
    def input(self, node):
        self.node(node.name, OpType.INPUT, [], **node.attrs)
        qp = self.range_params(node.name)
        self.qp[node.name] = qp
        self.alias[node.name] = self.node(f"{node.name}:q", OpType.QUANTIZER, [node.name],
                                          mode="tflite_quantize", scale=qp[0], zero_point=qp[1],
                                          lo=-128, hi=127, dtype="int8", rounding="half_away")

    def affine(self, node):
        x, w_name, b_name = node.inputs
        s_in, zp_in = self.qp[x]
        w = self.src.constant(w_name).astype(np.float64)
        b = self.src.constant(b_name).astype(np.float64)
        w_q, s_w = weight_params(w, b, s_in)
        bias_scale = float(np.float32(s_in)) * s_w.astype(np.float64)
        b_q = np.clip(np.sign(b) * np.floor(np.abs(b / bias_scale) + 0.5), I32_MIN, I32_MAX)
        relu = self.fused_relu(node)
        out_name = relu.name if relu is not None else node.name
        qp = self.range_params(out_name)
        wn = self.node(f"{node.name}:w", OpType.CONSTANT, [], value=w_q)
        bn = self.node(f"{node.name}:b", OpType.CONSTANT, [], value=b_q.astype(np.int32))
        attrs = {k: v for k, v in node.attrs.items()}
        acc = self.node(f"{node.name}:acc", node.op, [self.alias[x], wn, bn], input_zero_point=zp_in,
                        weight_scale=[float(v) for v in s_w], **attrs)
        m, s = P.conv_multipliers(s_in, s_w, qp[0], w.shape[0])
        lo = max(-128, qp[1]) if relu is not None else -128
        self.alias[node.name] = self.requantizer(out_name, acc, None, qp, m, s, lo, 127, axis=1)
        self.qp[node.name] = qp
        if relu is not None:
            self.fused.add(relu.name)
            self.alias[relu.name], self.qp[relu.name] = self.alias[node.name], qp

    def add(self, node):
        a, b = node.inputs
        if any(self.src.is_constant(i) for i in (a, b)):
            raise QuantizationError(f"node '{node.name}' (Add): an Add of a constant is not "
                                    "supported by spec='tflite'")
        relu = self.fused_relu(node)
        out_name = relu.name if relu is not None else node.name
        qa, qb, qo = self.qp[a], self.qp[b], self.range_params(out_name)
        (m1, s1), (m2, s2), (mo, so), r_out = P.add_sub_multipliers(qa[0], qb[0], qo[0], "ADD")
        if r_out >= 1:
            raise QuantizationError(f"node '{node.name}' (Add): output scale too small for ADD")
        wide = dict(pre_shift=P.ADD_LEFT_SHIFT, dtype="int32")
        sa = self.requantizer(f"{out_name}:a", self.alias[a], qa, None, m1, s1, I32_MIN, I32_MAX, **wide)
        sb = self.requantizer(f"{out_name}:b", self.alias[b], qb, None, m2, s2, I32_MIN, I32_MAX, **wide)
        total = self.node(f"{out_name}:sum", OpType.ADD, [sa, sb], broadcast=True)
        lo = max(-128, qo[1]) if relu is not None else -128
        self.alias[node.name] = self.requantizer(out_name, total, None, qo, mo, so, lo, 127)
        self.qp[node.name] = qo
        if relu is not None:
            self.fused.add(relu.name)
            self.alias[relu.name], self.qp[relu.name] = self.alias[node.name], qo

    def relu(self, node):
        (x,) = node.inputs
        qp = self.qp[x]
        self.alias[node.name] = self.node(node.name, OpType.CLIP, [self.alias[x]], min=max(-128, qp[1]), max=127)
        self.qp[node.name] = qp

    def pass_through(self, node):
        (x,) = node.inputs[:1]
        attrs = dict(node.attrs)
        if node.op in (OpType.AVGPOOL, OpType.GLOBAL_AVGPOOL):
            attrs["rounding"] = "half_away"  # TFLite: mean of the raw codes, half away from zero
        if node.op is OpType.PAD:
            attrs["value"] = self.qp[x][1]
        self.alias[node.name] = self.node(node.name, node.op, [self.alias[x]], **attrs)
        self.qp[node.name] = self.qp[x]

    def concat(self, node):
        lows = [self.src.node(i).meta["min"] for i in node.inputs]
        highs = [self.src.node(i).meta["max"] for i in node.inputs]
        qo = activation_params(min(lows), max(highs))
        inputs = []
        for k, name in enumerate(node.inputs):
            source = self.alias[name]
            if self.qp[name] != qo:  # TFLite's int8 CONCATENATION does not rescale
                m, s = P.requantize_multiplier(self.qp[name][0], qo[0])
                source = self.requantizer(f"{node.name}:in{k}", source, self.qp[name], qo, m, s, -128, 127)
            inputs.append(source)
        self.alias[node.name] = self.node(node.name, OpType.CONCAT, inputs, **node.attrs)
        self.qp[node.name] = qo


def quantize_tflite_spec(graph: Graph, cfg: PTQConfig) -> PassReport:
    """Replace the calibrated float `graph` (in place) by its TFLite-spec int8 graph."""
    if cfg.nb_bits != 8:
        raise QuantizationError(f"spec='tflite' is int8: nb_bits must be 8, got {cfg.nb_bits}")
    b = _Builder(graph)
    for node in graph.topo_order():
        if node.op is OpType.CONSTANT or node.name in b.fused:
            continue
        if node.op is OpType.INPUT:
            b.input(node)
        elif node.op in (OpType.CONV, OpType.GEMM):
            b.affine(node)
        elif node.op is OpType.ADD:
            b.add(node)
        elif node.op is OpType.RELU:
            b.relu(node)
        elif node.op is OpType.CONCAT:
            b.concat(node)
        elif node.op in _PASS_THROUGH:
            b.pass_through(node)
        else:
            raise QuantizationError(f"node '{node.name}' ({node.op.value}): not supported by spec='tflite'")
    q = b.q
    q.inputs = list(graph.inputs)
    q.outputs = [b.alias[name] for name in graph.outputs]
    q.meta = dict(graph.meta)
    q.meta.update(quantized=True, integer=True, target=GEMMLOWP_TARGET.to_dict(), spec="tflite",
                  output_quantization={b.alias[n]: b.qp[n] for n in graph.outputs})
    verify(q)
    graph.assign(q)
    return PassReport("tflite_spec", True, {"nodes": len(q)})
