"""ONNX QDQ export of a zero-point graph: the output of `quantize_network(spec="tflite")`.

`export_onnx.export_qdq` hands these graphs here. Every int8 tensor of the graph
is the pair QuantizeLinear(scale, zero point) -> DequantizeLinear, with the
scale and zero point its QUANTIZER declares (pools, reshapes and pads pass them
through, as in TFLite); weights are int8 initializers dequantized per output
channel (axis 0), biases int32 dequantized at fl32(s_in * s_w[c]); the float op
runs between them (Conv, Gemm, Add, pools, Concat), and a ReLU fused into a
quantizer's clamp becomes a float Relu before its QuantizeLinear. onnxruntime
fuses the groups into QLinearConv / QGemm / QLinearAdd ... and requantizes with
its own float arithmetic, so the QDQ model agrees with our gemmlowp engines up
to rounding (measured in tests/test_export_onnx_zp.py), not bit for bit.

Names: the DequantizeLinear output carrying node `x` is `x`; its QuantizeLinear
output `x/q`; a float op output before requantization `x/f`.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import QuantizationError, UnsupportedOperatorError
from .ir import Graph, OpType

_FLOAT_OPS = {OpType.MAXPOOL: "MaxPool", OpType.AVGPOOL: "AveragePool",
              OpType.GLOBAL_AVGPOOL: "GlobalAveragePool", OpType.FLATTEN: "Flatten",
              OpType.RESHAPE: "Reshape", OpType.TRANSPOSE: "Transpose", OpType.PAD: "Pad",
              OpType.SQUEEZE: "Squeeze", OpType.UNSQUEEZE: "Unsqueeze"}


class _ZeroPointExporter:
    def __init__(self, graph: Graph, batch_dim, opset):
        self.g, self.batch_dim, self.opset = graph, batch_dim, opset
        self.nodes, self.inits = [], {}
        self.qp: dict[str, tuple[float, int]] = {}  # node -> (scale, zero point) of its int8 value

    def init(self, name, array):
        self.inits[name] = numpy_helper.from_array(np.asarray(array), name)
        return name

    def node(self, op_type, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attrs))
        return output

    def qdq(self, src, out, qp):
        scale = self.init(f"{out}/scale", np.float32(qp[0]))
        zp = self.init(f"{out}/zero_point", np.int8(qp[1]))
        q = self.node("QuantizeLinear", [src, scale, zp], f"{out}/q")
        self.node("DequantizeLinear", [q, scale, zp], out)
        self.qp[out] = qp
        return out

    def dequantized_constant(self, name, value, scales, dtype):
        """An int initializer and its per-channel (axis 0) DequantizeLinear."""
        q = self.init(f"{name}/int", np.asarray(value, dtype))
        s = self.init(f"{name}/scale", np.asarray(scales, np.float32))
        zp = self.init(f"{name}/zero_point", np.zeros(np.shape(scales), dtype))
        return self.node("DequantizeLinear", [q, s, zp], name, axis=0)

    # ------------------------------------------------------------------ ops
    def quantizer(self, node):
        a = node.attrs
        qp = (float(a["scale"]), int(a.get("zero_point", 0)))
        (src,) = node.inputs
        producer = self.g.node(src)
        if a.get("mode") == "tflite_quantize":  # the float input
            return self.qdq(src, node.name, qp)
        if a.get("pre_shift"):  # ADD's rescaled operand: ONNX adds the dequantized inputs
            return None
        if producer.op in (OpType.CONV, OpType.GEMM, OpType.ADD):
            value = f"{node.name}/f"
            self.accumulate(producer, value)
        else:  # a requantization (Concat input): the dequantized value, quantized again
            value = src
        if a["lo"] > -128 and a["lo"] == qp[1]:  # a ReLU fused into the clamp
            value = self.node("Relu", [value], f"{node.name}/relu")
        return self.qdq(value, node.name, qp)

    def accumulate(self, acc, out):
        """The float value of an accumulator node (Conv/Gemm/Add) as `out`."""
        if acc.op is OpType.ADD:
            a, b = (self.g.node(i).inputs[0] for i in acc.inputs)  # past the :a / :b rescales
            return self.node("Add", [a, b], out)
        x, w, b = acc.inputs
        s_in = self.qp[x][0]
        s_w = np.asarray(acc.attrs["weight_scale"], np.float32)
        wd = self.dequantized_constant(w, self.g.constant(w), s_w, np.int8)
        bd = self.dequantized_constant(b, self.g.constant(b), np.float32(s_in) * s_w, np.int32)
        if acc.op is OpType.GEMM:
            return self.node("Gemm", [x, wd, bd], out, transB=1)
        keep = ("strides", "pads", "dilations", "group", "auto_pad", "kernel_shape")
        return self.node("Conv", [x, wd, bd], out, **{k: v for k, v in acc.attrs.items() if k in keep})

    def float_op(self, node):
        (x,) = node.inputs
        attrs = {k: v for k, v in node.attrs.items()
                 if k in onnx.defs.get_schema(_FLOAT_OPS[node.op], self.opset).attributes}
        inputs = [x]
        if node.op is OpType.RESHAPE:
            inputs.append(self.init(f"{node.name}/shape", np.asarray(node.attrs["shape"], np.int64)))
            attrs.pop("shape", None)
        if node.op is OpType.PAD:
            inputs.append(self.init(f"{node.name}/pads", np.asarray(node.attrs["pads"], np.int64)))
            inputs.append(self.init(f"{node.name}/value", np.float32(0.0)))  # real 0 = the zero point
            attrs = {}
        value = self.node(_FLOAT_OPS[node.op], inputs, f"{node.name}/f", **attrs)
        return self.qdq(value, node.name, self.qp[x])

    def clip(self, node):
        (x,) = node.inputs
        return self.qdq(self.node("Relu", [x], f"{node.name}/f"), node.name, self.qp[x])

    def concat(self, node):
        value = self.node("Concat", list(node.inputs), f"{node.name}/f", axis=node.attrs["axis"])
        return self.qdq(value, node.name, self.qp[node.inputs[0]])

    def run(self) -> onnx.ModelProto:
        for node in self.g.topo_order():
            if node.op in (OpType.CONSTANT, OpType.INPUT):
                continue
            if node.op is OpType.QUANTIZER:
                self.quantizer(node)
            elif node.op in (OpType.CONV, OpType.GEMM, OpType.ADD):
                continue  # emitted by the quantizer that reads the accumulator
            elif node.op is OpType.CLIP:
                self.clip(node)
            elif node.op is OpType.CONCAT:
                self.concat(node)
            elif node.op in _FLOAT_OPS:
                self.float_op(node)
            else:
                raise UnsupportedOperatorError(node.name, node.op.value, "no zero-point QDQ export")
        inputs = []
        for name in self.g.inputs:
            shape = list(self.g.node(name).attrs["shape"])
            if self.batch_dim is not None and shape:
                shape[0] = self.batch_dim
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in self.g.outputs]
        graph = helper.make_graph(self.nodes, self.g.name or "qdq", inputs, outputs, list(self.inits.values()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="aidge_lite.export_qdq_zp")
        model.ir_version = min(model.ir_version, 10)
        from .export_onnx import _Exporter

        _Exporter._infer_output_shapes(model)
        return model


def export_zero_point_qdq(qgraph: Graph, batch_dim, opset) -> onnx.ModelProto:
    if qgraph.meta.get("spec") != "tflite":
        raise QuantizationError(f"graph '{qgraph.name}' is not a spec='tflite' graph")
    return _ZeroPointExporter(qgraph, batch_dim, opset).run()
