"""The operator vocabulary of the IR and the semantic sets passes query.

Passes never list op types inline: they ask `op in AFFINE`, `op in JOINING`, ...
so adding an operator means touching this table, not every pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class OpType(str, Enum):
    INPUT = "Input"
    CONSTANT = "Constant"
    CONV = "Conv"
    GEMM = "Gemm"
    MATMUL = "MatMul"
    ADD = "Add"
    SUB = "Sub"
    MUL = "Mul"
    DIV = "Div"
    CONCAT = "Concat"
    RELU = "Relu"
    LEAKY_RELU = "LeakyRelu"
    CLIP = "Clip"
    SIGMOID = "Sigmoid"
    TANH = "Tanh"
    MAXPOOL = "MaxPool"
    AVGPOOL = "AveragePool"
    GLOBAL_AVGPOOL = "GlobalAveragePool"
    BATCHNORM = "BatchNormalization"
    FLATTEN = "Flatten"
    RESHAPE = "Reshape"
    TRANSPOSE = "Transpose"
    SQUEEZE = "Squeeze"
    UNSQUEEZE = "Unsqueeze"
    PAD = "Pad"
    SOFTMAX = "Softmax"
    REDUCE_SUM = "ReduceSum"
    IDENTITY = "Identity"
    DROPOUT = "Dropout"
    # Operators of exported ImageNet / audio models (float reference first). ONNX
    # Split imports as one Slice per output and n-ary Sum as a chain of Adds;
    # 1-D Conv/pools import as 2-D ones over a unit height (see onnx_rewrite).
    REDUCE_MEAN = "ReduceMean"
    RESIZE = "Resize"
    SLICE = "Slice"
    CONV_TRANSPOSE = "ConvTranspose"
    DEPTH_TO_SPACE = "DepthToSpace"
    LRN = "LRN"
    HARD_SIGMOID = "HardSigmoid"
    HARD_SWISH = "HardSwish"
    PRELU = "PRelu"
    ERF = "Erf"
    GELU = "Gelu"
    POW = "Pow"
    # PTQ operators: a float rescale, and a rescale + round + clip to n bits.
    SCALING = "Scaling"
    QUANTIZER = "Quantizer"
    # Integer-graph operators of imported int8 models (TFLite): a 256-entry table
    # applied to an int8 tensor, and the int8 -> float boundary.
    LOOKUP = "Lookup"
    DEQUANTIZE = "Dequantize"


@dataclass(frozen=True)
class OpSpec:
    """Arity (min, max inputs) and attributes every node of the op must carry."""

    min_inputs: int
    max_inputs: int
    required_attrs: tuple[str, ...] = field(default_factory=tuple)


_UNARY = OpSpec(1, 1)
_BINARY = OpSpec(2, 2)

OPS: dict[OpType, OpSpec] = {
    OpType.INPUT: OpSpec(0, 0, ("shape", "dtype")),
    OpType.CONSTANT: OpSpec(0, 0, ("value",)),
    OpType.CONV: OpSpec(2, 3),
    OpType.GEMM: OpSpec(2, 3),
    OpType.MATMUL: _BINARY,
    OpType.ADD: _BINARY,
    OpType.SUB: _BINARY,
    OpType.MUL: _BINARY,
    OpType.DIV: _BINARY,
    OpType.CONCAT: OpSpec(1, 1 << 16, ("axis",)),
    OpType.RELU: _UNARY,
    OpType.LEAKY_RELU: _UNARY,
    OpType.CLIP: _UNARY,
    OpType.SIGMOID: _UNARY,
    OpType.TANH: _UNARY,
    OpType.MAXPOOL: OpSpec(1, 1, ("kernel_shape",)),
    OpType.AVGPOOL: OpSpec(1, 1, ("kernel_shape",)),
    OpType.GLOBAL_AVGPOOL: _UNARY,
    OpType.BATCHNORM: OpSpec(5, 5),
    OpType.FLATTEN: _UNARY,
    OpType.RESHAPE: OpSpec(1, 1, ("shape",)),
    OpType.TRANSPOSE: _UNARY,
    OpType.SQUEEZE: _UNARY,
    OpType.UNSQUEEZE: OpSpec(1, 1, ("axes",)),
    OpType.PAD: OpSpec(1, 1, ("pads",)),
    OpType.SOFTMAX: _UNARY,
    OpType.REDUCE_SUM: OpSpec(1, 1, ("axes",)),
    OpType.IDENTITY: _UNARY,
    OpType.DROPOUT: _UNARY,
    # axes=None reduces every axis; keepdims defaults to 1 as in ONNX.
    OpType.REDUCE_MEAN: OpSpec(1, 1, ("axes",)),
    # mode "nearest" only; `scales` (one per axis) or `sizes` (None for a free dim).
    OpType.RESIZE: OpSpec(1, 1, ("mode",)),
    OpType.SLICE: OpSpec(1, 1, ("starts", "ends", "axes")),
    OpType.CONV_TRANSPOSE: OpSpec(2, 3),
    OpType.DEPTH_TO_SPACE: OpSpec(1, 1, ("blocksize",)),
    OpType.LRN: OpSpec(1, 1, ("size",)),
    OpType.HARD_SIGMOID: _UNARY,
    OpType.HARD_SWISH: _UNARY,
    OpType.PRELU: _BINARY,  # slope is the second operand (a constant once imported)
    OpType.ERF: _UNARY,
    OpType.GELU: _UNARY,
    OpType.POW: _BINARY,
    OpType.SCALING: OpSpec(1, 1, ("scale",)),
    OpType.QUANTIZER: OpSpec(1, 1, ("scale", "rounding", "lo", "hi")),
    OpType.LOOKUP: OpSpec(1, 1, ("table", "offset")),
    OpType.DEQUANTIZE: OpSpec(1, 1, ("scale", "zero_point")),
}

# Ops whose output is a linear map of the input plus a bias: they own weights and
# get a scaling node after them.
AFFINE = frozenset({OpType.CONV, OpType.GEMM})
# Ops that merge branches: all inputs must arrive at one scale (max arbitration).
JOINING = frozenset({OpType.ADD, OpType.SUB, OpType.CONCAT})
# f(a*x) == a*f(x) for a > 0: a scale passes straight through them.
POSITIVE_HOMOGENEOUS = frozenset(
    {
        OpType.RELU, OpType.LEAKY_RELU, OpType.MAXPOOL, OpType.AVGPOOL,
        OpType.GLOBAL_AVGPOOL, OpType.IDENTITY, OpType.DROPOUT, OpType.FLATTEN,
        OpType.RESHAPE, OpType.TRANSPOSE, OpType.SQUEEZE, OpType.UNSQUEEZE, OpType.PAD,
        OpType.SLICE, OpType.DEPTH_TO_SPACE, OpType.RESIZE,
    }
)
# Seamless ops carry a scale through unchanged (quantized graphs keep them as-is).
SEAMLESS = POSITIVE_HOMOGENEOUS
# Ops that only move data around (no arithmetic at all).
LAYOUT = frozenset(
    {OpType.FLATTEN, OpType.RESHAPE, OpType.TRANSPOSE, OpType.SQUEEZE,
     OpType.UNSQUEEZE, OpType.IDENTITY, OpType.DROPOUT, OpType.SLICE, OpType.DEPTH_TO_SPACE}
)
# Nonlinear ops with no integer form: the PTQ refuses graphs that use them.
# (Sigmoid, Tanh, HardSigmoid, HardSwish, Erf, Gelu: lookup tables; Div by a constant and
# ReduceMean over H, W: affine / pool rewrites in ptq/elementwise_affine.py; their other
# forms are refused by `prepare`, naming the node, or kept in float with `exclude`/`fallback`.)
NOT_QUANTIZABLE = frozenset({OpType.SOFTMAX,
                             OpType.REDUCE_SUM, OpType.LOOKUP, OpType.DEQUANTIZE,
                             # imported, float reference only so far
                             OpType.RESIZE, OpType.SLICE,
                             OpType.CONV_TRANSPOSE, OpType.DEPTH_TO_SPACE, OpType.LRN,
                             OpType.PRELU, OpType.POW})
# Ops whose output is never negative: the sign optimisation marks them unsigned.
NON_NEGATIVE = frozenset({OpType.RELU})
# Ops that only reorder or pick values: they keep the sign of their input.
SIGN_PRESERVING = frozenset(
    {OpType.MAXPOOL, OpType.AVGPOOL, OpType.GLOBAL_AVGPOOL, OpType.PAD, OpType.RESIZE} | LAYOUT
)
