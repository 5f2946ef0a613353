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

Modules: this one is the entry point; `export_onnx_emit` builds the ONNX
graph (scales, Q/DQ pairs, the model) and `export_onnx_ops` holds one handler
per operator.
"""
from __future__ import annotations

import os

import numpy as np
import onnx

from .errors import QuantizationError
from .export_onnx_emit import OPSET, PRODUCER  # noqa: F401  (public names of this module)
from .export_onnx_ops import _Exporter
from .ir import Graph


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
