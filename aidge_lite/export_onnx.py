"""ONNX QDQ export of an integer graph: `export_qdq(qgraph, path=None)`.

The quantized graph (output of `quantize_network`, `meta["integer"]` True)
becomes a standard ONNX QDQ model (default domain, opset 21) that onnxruntime
runs on the same float input; its output, after the final DequantizeLinear,
is the float value our graph represents, q / F.

Every activation tensor t carries the factor F_t of the quantized-graph
contract (q = F_t * float), propagated like `ptq.quantize.output_scales`:
1 at the input, times `weight_scale` through Conv/Gemm, times the effective
multiplier (`ptq.rescale.effective_multiplier`) through a QUANTIZER, unchanged
through joins and seamless ops. In ONNX the tensor is the pair
QuantizeLinear(scale ~ 1/F_t, zero point 0) -> DequantizeLinear, in the int
type the QUANTIZER declares (int8/uint8; int16/uint16 beyond 8 bits):

- input: QuantizeLinear/DequantizeLinear at the input quantizer's scale;
- Conv/Gemm: int8 (int16) weight initializer -> DequantizeLinear(1/weight_scale,
  per channel on axis 0 when weight_scale is a vector), int32 bias ->
  DequantizeLinear(s_x * s_w), then the float op on the dequantized tensors
  (Gemm transB=1). Its float result is the accumulator at scale s_x * s_w; it
  is not quantized (QuantizeLinear has no int32), the QUANTIZER after it is;
- QUANTIZER: float Clip(lo*s, hi*s) when [lo, hi] is narrower than the QDQ type
  (n < 8, or 8 < n < 16 bits), then QuantizeLinear/DequantizeLinear(s_out);
- Relu, MaxPool, Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Pad (zero),
  Identity, Concat: the float op on dequantized tensors, then
  QuantizeLinear/DequantizeLinear at the same scale (exact: these ops only move
  or select values), so that onnxruntime sees whole DQ -> op -> Q groups and can
  fuse them into integer kernels (QLinearConv, QGemm, QLinearConcat, ...);
- Add/Sub: the float op, an accumulator like Conv's, requantized by the next QUANTIZER;
- integer AveragePool/GlobalAveragePool (`attrs["rounding"]`): the pool rounds
  at a QuantizeLinear, like our integer pools: DequantizeLinear(scale 1) of the
  input integers -> float pool -> QuantizeLinear(scale 1) -> DequantizeLinear at
  the input's scale. Averaging the integers themselves (not q * s) keeps every
  tie of sum / count an exact tie in float32, rounded half to even by ONNX.

Float32 scales. ONNX scales are float32. Rather than rounding each 1/F_t on
its own, the export derives them along the graph the way onnxruntime combines
them: s_acc = fl32(s_x * s_w) (the bias scale, and the scale onnxruntime's
fused kernels assume for the int32 accumulator) and s_out = fl32(s_acc / m) for
a QUANTIZER of effective multiplier m. The fused kernels requantize with
fl32(fl32(s_x * s_w) / s_out), which is then the float32 nearest to m, and
exactly m when m is a power of two (shift rescales): exact ties stay exact
ties. Each s_t equals 1/F_t to a few float32 ulps.

ONNX QuantizeLinear rounds half to even, so only the `half_even` rounding of a
target (profile "onnx") can agree with ONNX on exact ties. Integer quantizers
are exported through the real multiplier they apply, like float ones: m / 2^s
("int": fixed_point, shift, double_shift) or TFLite's M * 2^(s - 31)
("gemmlowp": profile "tflite"). ONNX requantizes with one float rounding, so
gemmlowp's double rounding (and its ties toward +inf in the high multiply) is
not reproduced: such an export agrees with our engines up to those near-ties,
as a fixed_point one does. Quantizers with zero points or a pre-shift (imported
TFLite graphs) are refused. The measured
agreement is in `bench/results/qdq_agreement.md`.

Names: the DequantizeLinear output carrying the value of node `x` is `x` (so
the graph output keeps its name), its QuantizeLinear output `x/q`, a float op
output before requantization `x/f`.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import QuantizationError, UnsupportedOperatorError
from .ir import LAYOUT, Graph, OpType
from .ir.node import META_SHAPE
from .ptq.rescale import effective_multiplier

OPSET = 21
PRODUCER = "aidge_lite.export_onnx"

# QDQ element type name -> numpy dtype (all in QuantizeLinear-21's T2).
_QTYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16}
_WEIGHT_TYPES = {np.dtype(np.int8): np.int8, np.dtype(np.int16): np.int16}

# Relative spread below which a per-channel factor is one per-tensor factor
# (float32, the type of every ONNX scale, cannot tell such values apart).
_COLLAPSE_RTOL = 2.0 ** -22

# Ops that carry integers through unchanged: float op + requantization at the same scale.
_SEAMLESS_ONNX = {
    OpType.RELU: "Relu", OpType.MAXPOOL: "MaxPool", OpType.FLATTEN: "Flatten",
    OpType.RESHAPE: "Reshape", OpType.TRANSPOSE: "Transpose", OpType.SQUEEZE: "Squeeze",
    OpType.UNSQUEEZE: "Unsqueeze", OpType.PAD: "Pad", OpType.IDENTITY: "Identity",
    OpType.DROPOUT: "Identity",
}
# Ops that keep axis 1 in place: a per-channel scale survives them.
_KEEP_CHANNEL_AXIS = {OpType.RELU, OpType.MAXPOOL, OpType.PAD, OpType.IDENTITY, OpType.DROPOUT,
                      OpType.AVGPOOL, OpType.GLOBAL_AVGPOOL}

_FLOAT_INPUT = "float"  # qtype of a graph input: float data, read by the input QUANTIZER only


def export_qdq(qgraph: Graph, path=None, *, batch_dim: str | None = None,
               opset: int = OPSET) -> onnx.ModelProto:
    """Export the integer graph `qgraph` as an ONNX QDQ model checked by `onnx.checker`.

    Parameters
    ----------
    qgraph : Graph
        Output of `quantize_network(..., no_quant=False)`.
    path : str or PathLike, optional
        Where to write the model; nothing is written when None.
    batch_dim : str, optional
        Replace dim 0 of every graph input and output by this symbolic name
        (e.g. "N"), so a model declared with batch 1 (mnist-8) runs on batches.
        By default the declared input shapes are kept.
    opset : int
        Default-domain opset, 19..21 (int16/uint16 QDQ needs 21).

    Returns
    -------
    onnx.ModelProto
        Metadata props `aidge_lite.output_scale` (F per output), `aidge_lite.nb_bits`,
        `aidge_lite.target` record what the model was exported from.

    Raises
    ------
    QuantizationError
        Not an integer graph (a float graph, or `no_quant=True`), or something
        plain QDQ cannot express: an accumulator as a graph output, a
        per-channel activation scale feeding a channel-mixing operator, a QDQ
        type the opset lacks.
    """
    if not qgraph.meta.get("integer"):
        kind = ("a no_quant graph (scales only, no integers)" if qgraph.meta.get("quantized")
                else "a float graph")
        raise QuantizationError(
            f"graph '{qgraph.name}' is {kind}: export_qdq needs an integer graph, the output of "
            "quantize_network(..., no_quant=False)"
        )
    if not 19 <= opset <= OPSET:
        raise QuantizationError(f"export_qdq writes opset 19..{OPSET}, got {opset}")
    if qgraph.meta.get("spec") == "tflite":  # zero points: Q/DQ pairs with zero points
        from .export_qdq_zp import export_zero_point_qdq

        model = export_zero_point_qdq(qgraph, batch_dim, opset)
    else:
        model = _Exporter(qgraph, batch_dim, opset).run()
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # a bug of this module: say so plainly
        raise QuantizationError(f"exported QDQ model of '{qgraph.name}' fails onnx.checker: {exc}") from exc
    if path is not None:
        from .atomic import atomic_path

        with atomic_path(path) as tmp:
            onnx.save_model(model, os.fspath(tmp))
    return model


def tensor_scales(qgraph: Graph) -> dict[str, tuple[object, np.ndarray]]:
    """(F, s) for every non-constant tensor as the export uses them.

    F is the float64 factor of the contract (q = F * float; a float, or a
    vector when it really varies per channel), s the float32 QDQ scale (~1/F;
    for an accumulator, fl32(s_x * s_w)).
    """
    ex = _Exporter(qgraph, None, OPSET)
    ex.run(build=False)
    return {name: (ex.factor[name], ex.scale[name]) for name in ex.factor}


# --------------------------------------------------------------------------- helpers
def _collapse(factor):
    """A float64 factor as a float when uniform across channels, else a vector."""
    flat = np.ravel(np.asarray(factor, dtype=np.float64))
    ref = float(np.mean(flat))
    if flat.size == 1 or np.all(np.abs(flat - ref) <= _COLLAPSE_RTOL * abs(ref)):
        return ref
    return flat


def _is_vector(value) -> bool:
    return np.ndim(value) > 0


def _f32(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64).astype(np.float32)


def _py(value):
    """An attribute value as plain Python (make_attribute rejects numpy types)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_py(v) for v in value]
    return value


class _Exporter:
    def __init__(self, graph: Graph, batch_dim, opset):
        self.g, self.batch_dim, self.opset = graph, batch_dim, opset
        self.build = True
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.factor: dict[str, object] = {}     # tensor -> F (float or float64 vector)
        self.scale: dict[str, np.ndarray] = {}  # tensor -> float32 QDQ scale (0-d or 1-d)
        self.qtype: dict[str, str | None] = {}  # tensor -> QDQ type; None: accumulator
        self.qname: dict[str, str] = {}         # tensor -> its QuantizeLinear output
        self._shared: dict[tuple, str] = {}
        self._counter = 0

    # ------------------------------------------------------------ emission
    def _unique(self, base: str) -> str:
        self._counter += 1
        return f"{base}#{self._counter}"

    def _init(self, name: str, array) -> str:
        if name in self.inits:
            raise QuantizationError(f"initializer name '{name}' used twice")
        self.inits[name] = numpy_helper.from_array(np.asarray(array), name)
        return name

    def _constant(self, name: str, array) -> str:
        """A constant of the graph as an initializer of the same name (once, if shared)."""
        if name not in self.inits:
            self._init(name, array)
        return name

    def _shared_init(self, kind: str, array: np.ndarray) -> str:
        """An activation scale / zero point initializer, shared by identical values."""
        array = np.asarray(array)
        key = (kind, array.dtype.str, array.shape, array.tobytes())
        if key not in self._shared:
            self._shared[key] = self._init(f"{kind}/{len(self._shared)}", array)
        return self._shared[key]

    def _node(self, op_type: str, inputs, output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output,
                                           **{k: _py(v) for k, v in attrs.items()}))
        return output

    def _dq_args(self, scale: np.ndarray, qtype: str):
        scale = np.asarray(scale, np.float32)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise QuantizationError(f"QDQ scale {scale} is not finite and positive")
        s_name = self._shared_init("scale", scale)
        zp = self._shared_init(f"zero_point_{qtype}", np.zeros(scale.shape, _QTYPES[qtype]))
        return s_name, zp, ({"axis": 1} if scale.ndim else {})

    def _qdq(self, src: str, out: str, scale: np.ndarray, qtype: str) -> str:
        """src (float) -> QuantizeLinear -> `out/q` -> DequantizeLinear -> `out`."""
        s_name, zp, axis = self._dq_args(scale, qtype)
        qname = self._node("QuantizeLinear", [src, s_name, zp], f"{out}/q", **axis)
        self._node("DequantizeLinear", [qname, s_name, zp], out, **axis)
        self.qname[out] = qname
        return out

    def _onnx_attrs(self, op_type: str, attrs: dict) -> dict:
        schema = onnx.defs.get_schema(op_type, self.opset)
        return {k: v for k, v in attrs.items() if k in schema.attributes and v is not None}

    # ----------------------------------------------------------------- walk
    def run(self, build: bool = True):
        self.build = build
        for node in self.g.topo_order():
            if node.op is OpType.CONSTANT:
                continue
            handler = _HANDLERS.get(node.op)
            if handler is None:
                raise UnsupportedOperatorError(node.name, node.op.value, "no QDQ export")
            handler(self, node)
        for name in self.g.outputs:
            if self.qtype.get(name) in (None, _FLOAT_INPUT):
                raise QuantizationError(
                    f"graph output '{name}' is not a quantized tensor ({self.g.node(name).op.value} "
                    "with no QUANTIZER after it): a QDQ model must end with a DequantizeLinear "
                    "and QuantizeLinear has no int32"
                )
        return self._model() if build else None

    def _model(self) -> onnx.ModelProto:
        inputs = []
        for name in self.g.inputs:
            node = self.g.node(name)
            shape = list(node.attrs["shape"])
            if self.batch_dim is not None and shape:
                shape[0] = self.batch_dim
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(node.attrs.get("dtype", "float32")))
            inputs.append(helper.make_tensor_value_info(name, elem, shape))
        outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, self._output_shape(name))
                   for name in self.g.outputs]
        graph = helper.make_graph(self.nodes, self.g.name or "qdq", inputs, outputs,
                                  list(self.inits.values()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name=PRODUCER)
        model.ir_version = min(model.ir_version, 10)
        if any(not o.type.tensor_type.HasField("shape") for o in model.graph.output):
            self._infer_output_shapes(model)
        for key, value in (("output_scale", {k: _py(self.factor[k]) for k in self.g.outputs}),
                           ("nb_bits", self.g.meta.get("nb_bits")),
                           ("target", self.g.meta.get("target"))):
            entry = model.metadata_props.add()
            entry.key, entry.value = f"aidge_lite.{key}", repr(value)
        return model

    def _output_shape(self, name):
        """Recorded shape of an output, with its batch dim free (or named); None if unknown."""
        node = self.g.node(name)
        while node.meta.get(META_SHAPE) is None and node.op is OpType.QUANTIZER:
            node = self.g.node(node.inputs[0])  # quantizers keep the shape, not always recorded
        shape = node.meta.get(META_SHAPE)
        if shape is None:
            return None
        dims = list(shape)
        if dims:
            batches = {tuple(self.g.node(i).attrs["shape"][:1]) for i in self.g.inputs}
            declared = batches.pop()[0] if len(batches) == 1 and () not in batches else None
            dims[0] = self.batch_dim if self.batch_dim is not None else declared
        return dims

    @staticmethod
    def _infer_output_shapes(model):
        """Output shapes the graph did not record, from ONNX shape inference."""
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
        except Exception as exc:
            raise QuantizationError(f"cannot infer the shape of the graph outputs: {exc}") from exc
        known = {v.name: v for v in (*inferred.value_info, *inferred.output)}
        for out in model.graph.output:
            if not out.type.tensor_type.HasField("shape"):
                found = known.get(out.name)
                if found is None or not found.type.tensor_type.HasField("shape"):
                    raise QuantizationError(f"graph output '{out.name}' has no known shape")
                out.type.tensor_type.shape.CopyFrom(found.type.tensor_type.shape)

    def _require_quantized(self, node, tensor):
        if self.qtype.get(tensor) in (None, _FLOAT_INPUT):
            kind = "an accumulator" if self.qtype.get(tensor) is None else "a float graph input"
            raise QuantizationError(
                f"node '{node.name}' ({node.op.value}): its input '{tensor}' is {kind}, not a "
                "quantized tensor (a QUANTIZER must come first)"
            )


# -------------------------------------------------------------------------- handlers
_HANDLERS = {}


def _handles(*ops):
    def deco(fn):
        for op in ops:
            _HANDLERS[op] = fn
        return fn
    return deco


@_handles(OpType.INPUT)
def _input(ex: _Exporter, node):
    dtype = np.dtype(node.attrs.get("dtype", "float32"))
    if dtype.kind != "f":
        raise QuantizationError(f"input '{node.name}' is {dtype}: the QDQ export takes float inputs")
    ex.factor[node.name] = 1.0
    ex.scale[node.name] = np.float32(1.0)
    ex.qtype[node.name] = _FLOAT_INPUT


@_handles(OpType.QUANTIZER)
def _quantizer(ex: _Exporter, node):
    src, attrs = node.inputs[0], node.attrs
    mode = attrs.get("mode", "float")
    if mode not in ("float", "int", "gemmlowp"):
        raise QuantizationError(f"QUANTIZER '{node.name}': mode {mode!r} has no QDQ form "
                                "(export takes graphs from quantize_network)")
    offsets = {k: attrs[k] for k in ("input_zero_point", "zero_point", "pre_shift") if attrs.get(k, 0)}
    if offsets:
        raise QuantizationError(f"QUANTIZER '{node.name}': zero points / pre-shift {offsets} have no "
                                "form in this export (symmetric quantizers only)")
    multiplier = np.asarray(effective_multiplier(attrs), np.float64)
    f_in, s_in = ex.factor[src], ex.scale[src]
    sizes = {np.size(v) for v in (f_in, s_in, multiplier) if np.size(v) > 1}
    if len(sizes) > 1:
        raise QuantizationError(f"QUANTIZER '{node.name}': per-channel input scale and "
                                f"multiplier disagree on the channel count {sorted(sizes)}")
    factor = _collapse(np.asarray(f_in, np.float64) * multiplier)
    candidates = _f32(np.asarray(s_in, np.float64) / multiplier)  # s_out = fl32(s_in / m)
    if candidates.ndim == 0 or np.all(candidates == candidates.flat[0]):
        scale = candidates.reshape(-1)[0] if candidates.ndim else candidates
    elif not _is_vector(factor):  # per-channel weights, uniform output factor
        scale = _f32(1.0 / factor)
    else:
        scale = candidates
    qtype = str(attrs.get("dtype"))
    if qtype not in _QTYPES:
        raise QuantizationError(f"QUANTIZER '{node.name}': dtype {qtype!r} has no QDQ type "
                                f"(supported: {sorted(_QTYPES)})")
    if qtype in ("int16", "uint16") and ex.opset < 21:
        raise QuantizationError(f"QUANTIZER '{node.name}': {qtype} QuantizeLinear needs opset 21")
    ex.factor[node.name], ex.scale[node.name], ex.qtype[node.name] = factor, np.asarray(scale), qtype
    if not ex.build:
        return
    info = np.iinfo(_QTYPES[qtype])
    lo, hi = int(attrs["lo"]), int(attrs["hi"])
    if not info.min <= lo <= hi <= info.max:
        raise QuantizationError(f"QUANTIZER '{node.name}': clip range [{lo}, {hi}] outside {qtype}")
    x = src
    if (lo, hi) != (info.min, info.max):  # n-bit range narrower than the QDQ type
        if _is_vector(scale):
            raise QuantizationError(f"QUANTIZER '{node.name}': a clip range narrower than {qtype} "
                                    "with per-channel scales has no float Clip form")
        bounds = [ex._init(f"{node.name}/clip_{k}", _f32(v * np.float64(scale)))
                  for k, v in (("lo", lo), ("hi", hi))]
        x = ex._node("Clip", [x, *bounds], f"{node.name}/clip")
    ex._qdq(x, node.name, ex.scale[node.name], qtype)


@_handles(OpType.CONV, OpType.GEMM)
def _affine(ex: _Exporter, node):
    x = node.inputs[0]
    ex._require_quantized(node, x)
    if _is_vector(ex.scale[x]):
        raise QuantizationError(
            f"node '{node.name}' ({node.op.value}): its input '{x}' has a per-channel activation "
            "scale; the integer Conv/Gemm sums channels at different scales, which "
            "DequantizeLinear -> float op cannot express"
        )
    if len(node.inputs) < 3 or not all(ex.g.is_constant(i) for i in node.inputs[1:]):
        raise QuantizationError(f"node '{node.name}': weights and bias must be constants")
    if node.op is OpType.GEMM and (node.attrs.get("transB", 0) != 1 or node.attrs.get("transA", 0)
                                   or node.attrs.get("alpha", 1.0) != 1.0
                                   or node.attrs.get("beta", 1.0) != 1.0):
        raise QuantizationError(f"node '{node.name}': Gemm is not canonical (transB=1, alpha=beta=1)")
    weight_scale = np.asarray(node.attrs.get("weight_scale", 1.0), np.float64)
    if weight_scale.size == 1:
        weight_scale = weight_scale.reshape(())
    s_w = _f32(1.0 / weight_scale)
    s_acc = np.asarray(ex.scale[x], np.float32) * s_w  # fl32(s_x * s_w), onnxruntime's bias scale
    ex.factor[node.name] = _collapse(ex.factor[x] * weight_scale)
    ex.scale[node.name] = s_acc
    ex.qtype[node.name] = None  # accumulator
    if not ex.build:
        return

    w_name, b_name = node.inputs[1], node.inputs[2]
    weight, bias = ex.g.constant(w_name), ex.g.constant(b_name)
    wtype = _WEIGHT_TYPES.get(np.dtype(weight.dtype))
    if wtype is None:
        raise QuantizationError(f"node '{node.name}': weights '{w_name}' are {weight.dtype}, "
                                "not int8/int16")
    axis = {"axis": 0} if s_w.ndim else {}
    # Weights and biases get their own scale / zero point initializers: onnxruntime's
    # s8 -> u8 weight rewrite (session.x64quantprecision) fails on shared ones.
    w_dq = ex._node("DequantizeLinear", [
        ex._constant(w_name, weight), ex._init(f"{node.name}/w_scale", s_w),
        ex._init(f"{node.name}/w_zero_point", np.zeros(s_w.shape, wtype))], f"{node.name}/w", **axis)
    if np.dtype(bias.dtype) == np.int32:
        b_float = ex._node("DequantizeLinear", [
            ex._constant(b_name, bias), ex._init(f"{node.name}/b_scale", s_acc),
            ex._init(f"{node.name}/b_zero_point", np.zeros(s_acc.shape, np.int32))],
            f"{node.name}/b", **axis)
    else:  # int64 bias: no DequantizeLinear for it; a float bias (onnxruntime will not fuse)
        b_float = ex._init(f"{node.name}/b", _f32(bias.astype(np.float64) * s_acc))
    if node.op is OpType.CONV:
        ex._node("Conv", [x, w_dq, b_float], node.name, **ex._onnx_attrs("Conv", node.attrs))
    else:
        ex._node("Gemm", [x, w_dq, b_float], node.name, transB=1)


def _aligned_operands(ex: _Exporter, node) -> list[str]:
    """Float operands of a join, all at the first operand's scale.

    Our integer join adds / concatenates the integers as they are. An operand
    whose scale differs (branch rescales rounded differently) is dequantized
    again, from its integers, at the join's scale, so ONNX combines the same integers.
    """
    if any(ex.g.is_constant(i) for i in node.inputs):
        raise QuantizationError(f"node '{node.name}': {node.op.value} with a constant operand")
    first = node.inputs[0]
    ref = ex.scale[first]
    ex.factor[node.name], ex.scale[node.name] = ex.factor[first], ref
    operands = []
    for name in node.inputs:
        same = np.shape(ex.scale[name]) == np.shape(ref) and np.array_equal(ex.scale[name], ref)
        if same:
            operands.append(name)
            continue
        ex._require_quantized(node, name)
        if ex.build:
            s_name, zp, axis = ex._dq_args(ref, ex.qtype[name])
            operands.append(ex._node("DequantizeLinear", [ex.qname[name], s_name, zp],
                                     ex._unique(f"{name}/at_{node.name}"), **axis))
    return operands


@_handles(OpType.ADD, OpType.SUB)
def _add(ex: _Exporter, node):
    operands = _aligned_operands(ex, node)
    ex.qtype[node.name] = None  # accumulator: the next QUANTIZER requantizes it
    if ex.build:
        ex._node(node.op.value, operands, node.name)


@_handles(OpType.CONCAT)
def _concat(ex: _Exporter, node):
    for name in node.inputs:
        ex._require_quantized(node, name)
    operands = _aligned_operands(ex, node)
    if _is_vector(ex.scale[node.name]):
        raise QuantizationError(f"Concat '{node.name}': operands with per-channel activation scales")
    qtype = _common_type(node, {ex.qtype[i] for i in node.inputs})
    ex.qtype[node.name] = qtype
    if ex.build:
        ex._node("Concat", operands, f"{node.name}/f", axis=int(node.attrs["axis"]))
        ex._qdq(f"{node.name}/f", node.name, ex.scale[node.name], qtype)


def _common_type(node, types) -> str:
    if len(types) == 1:
        return next(iter(types))
    signed = any(not t.startswith("u") for t in types)
    bits = max(int(t.lstrip("uint")) for t in types)
    if signed and any(t.startswith("u") for t in types):
        bits *= 2  # uint8 and int8 operands: int16 holds both
    if bits > 16:
        raise QuantizationError(f"node '{node.name}': operands {sorted(types)} have no common QDQ type")
    return f"{'' if signed else 'u'}int{bits}"


@_handles(*_SEAMLESS_ONNX)
def _seamless(ex: _Exporter, node):
    x = node.inputs[0]
    if _is_vector(ex.scale[x]) and node.op not in _KEEP_CHANNEL_AXIS:
        raise QuantizationError(
            f"node '{node.name}' ({node.op.value}) moves the channel axis of '{x}', whose "
            "activation scale is per channel: not expressible as QDQ"
        )
    ex.factor[node.name], ex.scale[node.name], ex.qtype[node.name] = \
        ex.factor[x], ex.scale[x], ex.qtype[x]
    if ex.qtype[x] == _FLOAT_INPUT and node.op not in LAYOUT:
        ex._require_quantized(node, x)  # data movement may precede the input quantizer
    if not ex.build:
        return
    op_type = _SEAMLESS_ONNX[node.op]
    attrs = dict(node.attrs)
    inputs = [x]
    if node.op is OpType.RESHAPE:
        inputs.append(ex._init(f"{node.name}/shape", np.asarray(attrs.pop("shape"), np.int64)))
    elif node.op is OpType.PAD:
        if attrs.get("mode", "constant") != "constant" or float(attrs.get("value", 0.0)) != 0.0:
            raise QuantizationError(f"Pad '{node.name}': only zero constant padding is exported")
        inputs.append(ex._init(f"{node.name}/pads", np.asarray(attrs.pop("pads"), np.int64)))
        if "axes" in attrs:
            inputs += ["", ex._init(f"{node.name}/axes", np.asarray(attrs.pop("axes"), np.int64))]
        attrs = {"mode": "constant"}
    elif node.op in (OpType.SQUEEZE, OpType.UNSQUEEZE) and "axes" in attrs:
        inputs.append(ex._init(f"{node.name}/axes", np.asarray(attrs.pop("axes"), np.int64)))
    attrs = ex._onnx_attrs(op_type, attrs)
    if ex.qtype[x] in (None, _FLOAT_INPUT):  # on an accumulator or the float input: stays float
        ex._node(op_type, inputs, node.name, **attrs)
        return
    ex._node(op_type, inputs, f"{node.name}/f", **attrs)
    ex._qdq(f"{node.name}/f", node.name, ex.scale[x], ex.qtype[x])


@_handles(OpType.AVGPOOL, OpType.GLOBAL_AVGPOOL)
def _int_pool(ex: _Exporter, node):
    x = node.inputs[0]
    if "rounding" not in node.attrs:
        raise QuantizationError(f"node '{node.name}': float {node.op.value} in an integer graph")
    ex._require_quantized(node, x)
    ex.factor[node.name], ex.scale[node.name], ex.qtype[node.name] = \
        ex.factor[x], ex.scale[x], ex.qtype[x]
    if not ex.build:
        return
    # The pool averages the integers themselves: DequantizeLinear at scale 1 gives
    # exact integer-valued floats, their float sum is exact and sum / count is a
    # tie exactly when the integer quotient is one, so QuantizeLinear at scale 1
    # rounds where our integer pool rounds. The result is then dequantized at the
    # input's scale. (Pooling x * s instead rounds every q * s, and ties fall
    # either way.)
    unit = np.float32(1.0)
    s_one, zp, _ = ex._dq_args(unit, ex.qtype[x])
    ints = ex._node("DequantizeLinear", [ex.qname[x], s_one, zp], f"{node.name}/int_in")
    attrs = ex._onnx_attrs(node.op.value, node.attrs)
    pooled = ex._node(node.op.value, [ints], f"{node.name}/f", **attrs)
    qname = ex._node("QuantizeLinear", [pooled, s_one, zp], f"{node.name}/q")
    s_name, zp_out, axis = ex._dq_args(ex.scale[x], ex.qtype[x])
    ex._node("DequantizeLinear", [qname, s_name, zp_out], node.name, **axis)
    ex.qname[node.name] = qname
