"""Import of fully-integer int8 TFLite models, with TFLite's reference-kernel arithmetic.

`load_tflite(path)` returns an integer graph (`meta["integer"]`) that both
engines run: `run(g, x, engine="reference")` (NumPy twins, float64 holding
integers) and `run(g, x, engine="integer")` (Numba kernels). Both reproduce
LiteRT's BUILTIN_REF kernels bit for bit.

Conventions (docs/tflite_arithmetic.md has the arithmetic):
- graph inputs/outputs keep the model's names, NHWC shapes and dtypes; the
  first axis is the batch and is free (LiteRT's models fix it to 1);
- every TFLite tensor is a node of the same name (a repeated name gets
  `#<tensor index>` appended), holding the same NHWC values as LiteRT;
- helper nodes are named `<tensor>:<role>` (`:acc` accumulators, ADD's
  `:a` / `:b` rescaled operands, `:sum`, `:prod`, `:rows`, `:pool`...).
"""
from __future__ import annotations

from ..errors import AidgeLiteError, ModelLoadError, QuantizationError, UnsupportedOperatorError
from ..ir import Graph, Node, OpType, verify
from ..target import Target
from .convert import TRANSLATORS, Converter
from .reader import read_tflite

# TFLite's int8 arithmetic as a target: int32 accumulators (an overflow is
# undefined behaviour in TFLite's C++, so it is an error here), gemmlowp rescale.
TFLITE_TARGET = Target(acc_bits=32, rounding="half_away", rescale="gemmlowp", overflow="error")

SUPPORTED_OPS = tuple(sorted(TRANSLATORS))
_INPUT_DTYPES = ("int8", "float32")


FC_RESCALES = ("double", "gemmlowp")


def load_tflite(source, name: str | None = None, *, fc_rescale: str = "double") -> Graph:
    """Read a fully-integer int8 `.tflite` model (path or bytes) into an integer graph.

    `fc_rescale`: how FULLY_CONNECTED requantizes. "double" (default) is LiteRT's
    reference kernel since TF 2.20: round(acc * s_in * s_w / s_out) in double, one
    rounding. "gemmlowp" is TFLite Micro's, CMSIS-NN's and older TFLite's:
    MultiplyByQuantizedMultiplier (Q31 multiplier, double rounding), the same
    rescale as every other op.

    Raises `ModelLoadError` for an unreadable, truncated or inconsistent file and
    `UnsupportedOperatorError` (naming the tensor and op) for anything outside
    the int8 spec or the supported operators (`SUPPORTED_OPS`).
    """
    if fc_rescale not in FC_RESCALES:
        raise QuantizationError(f"fc_rescale must be one of {FC_RESCALES}, got {fc_rescale!r}")
    model = read_tflite(source)
    graph = Graph(name or (str(source) if not isinstance(source, (bytes, bytearray)) else "tflite"))
    conv = Converter(model, graph, fc_rescale)
    for index in model.inputs:
        t = model.tensors[index]
        if t.dtype not in _INPUT_DTYPES:
            detail = " (16x8 models are not supported, only int8)" if t.dtype == "int16" else ""
            raise UnsupportedOperatorError(conv.names[index], "input", f"model input '{t.name}' is "
                                           f"{t.dtype}{detail}; supported: {', '.join(_INPUT_DTYPES)}")
        graph.add(Node(conv.names[index], OpType.INPUT,
                       attrs={"shape": tuple(int(d) for d in t.shape), "dtype": t.dtype}))
    graph.inputs = [conv.names[i] for i in model.inputs]
    for op in model.operators:
        if not op.outputs:
            raise ModelLoadError(f"operator #{op.index} ({op.opcode}) has no output")
        translate = TRANSLATORS.get(op.opcode)
        if translate is None:
            raise UnsupportedOperatorError(conv.names[op.outputs[0]], op.opcode,
                                           f"not in the supported TFLite operators {list(SUPPORTED_OPS)}")
        if len(op.outputs) != 1 or any(i < 0 for i in op.inputs[:1]):
            raise UnsupportedOperatorError(conv.names[op.outputs[0]], op.opcode,
                                           f"{len(op.outputs)} outputs / missing input")
        for index in op.inputs:
            if index >= 0 and conv.names[index] not in graph and model.tensors[index].data is None:
                raise ModelLoadError(f"operator #{op.index} ({op.opcode}): input tensor "
                                     f"'{model.tensors[index].name}' has no producer and no buffer")
        try:
            translate(conv, op)
        except AidgeLiteError:
            raise
        except (ValueError, ArithmeticError, IndexError, KeyError, TypeError) as exc:
            # An untrusted file: parameters no valid converter output holds (e.g. a scale
            # ratio out of the multiplier's range) are a load error naming the operator.
            raise ModelLoadError(f"operator #{op.index} ({op.opcode}) writing tensor "
                                 f"'{conv.names[op.outputs[0]]}': {exc}") from exc
    graph.outputs = [conv.names[i] for i in model.outputs]
    for out in graph.outputs:
        if out not in graph:
            raise ModelLoadError(f"graph output '{out}' is never computed")
    for index, name in conv.names.items():  # TFLite's own shapes (batch of one) for `info`
        if name in graph:
            graph.node(name).meta["shape"] = tuple(int(d) for d in model.tensors[index].shape)
    graph.meta.update(quantized=True, integer=True, target=TFLITE_TARGET.to_dict(),
                      source="tflite", layout="NHWC", fc_rescale=fc_rescale,
                      output_dtypes={n: model.tensors[i].dtype for n, i in zip(graph.outputs, model.outputs)},
                      output_quantization={n: (float(model.tensors[i].scale[0]), int(model.tensors[i].zero_point[0]))
                                           for n, i in zip(graph.outputs, model.outputs)
                                           if model.tensors[i].quantized})
    verify(graph)
    return graph


__all__ = ["load_tflite", "read_tflite", "SUPPORTED_OPS", "TFLITE_TARGET"]
