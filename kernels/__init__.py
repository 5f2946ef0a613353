"""Pure integer kernels of aidge_lite: arrays and ints in, arrays out.

(One float kernel: ``histogram``, the magnitude histogram of calibration.)

Every jitted kernel ``<op>`` has a vectorised NumPy twin ``<op>_ref`` with the
same signature that serves as its specification. Rounding rules live in
:mod:`kernels.rounding`.
"""

from .accumulator import fit_accumulator, fit_accumulator_ref
from .conv import (conv2d, conv2d_output_shape, conv2d_ref, conv2d_requant,
                   conv2d_requant_ref, output_extent)
from .elementwise import (add, add_ref, clip, clip_ref, concat2, concat2_ref,
                          relu, relu_ref)
from .gemm import gemm, gemm_ref
from .dense import gemm_pack, gemm_packed, gemm_packed_ref
from .conv_packed import ConvLayer, conv2d_pack, conv2d_requant_into, conv2d_requant_into_ref
from .gemmlowp import (check_gemmlowp_args, multiply_by_quantized_multiplier,
                       quantize_multiplier_greater_than_one,
                       quantize_multiplier_smaller_than_one_exp, requant_gemmlowp,
                       requant_gemmlowp_ref, rounding_divide_by_pot,
                       saturating_rounding_doubling_high_mul)
from .gemmlowp import quantize_multiplier as tflite_quantize_multiplier  # requant's differs
from .histogram import histogram, histogram_ref
from .lookup import lookup, lookup_ref
from .threads import get_threads, max_threads, set_threads, with_threads
from .pool import (avgpool2d, avgpool2d_ref, global_avgpool, global_avgpool_ref,
                   maxpool2d, maxpool2d_ref, pool2d_output_shape)
from .requant import (quantize_multiplier, requant_float, requant_float32, requant_float32_ref,
                      requant_float_ref, requant_int, requant_int_ref)
from .softmax import check_softmax_args, pack_softmax_params, softmax_int8, softmax_int8_ref
from .rounding import (FLOOR, HALF_AWAY, HALF_EVEN, HALF_UP, ROUNDING_NAMES,
                       round_div, round_div_pow2, round_div_pow2_ref, round_div_ref,
                       round_float, round_float_ref)

__all__ = [
    "FLOOR", "HALF_AWAY", "HALF_EVEN", "HALF_UP", "ROUNDING_NAMES",
    "round_div", "round_div_ref", "round_div_pow2", "round_div_pow2_ref",
    "round_float", "round_float_ref",
    "conv2d", "conv2d_ref", "conv2d_output_shape", "output_extent",
    "conv2d_requant", "conv2d_requant_ref",
    "ConvLayer", "conv2d_pack", "conv2d_requant_into", "conv2d_requant_into_ref",
    "set_threads", "get_threads", "max_threads", "with_threads",
    "gemm", "gemm_ref", "gemm_pack", "gemm_packed", "gemm_packed_ref", "histogram", "histogram_ref",
    "fit_accumulator", "fit_accumulator_ref",
    "requant_float", "requant_float_ref", "requant_float32", "requant_float32_ref",
    "requant_int", "requant_int_ref",
    "quantize_multiplier",
    "maxpool2d", "maxpool2d_ref", "avgpool2d", "avgpool2d_ref",
    "global_avgpool", "global_avgpool_ref", "pool2d_output_shape",
    "add", "add_ref", "concat2", "concat2_ref", "relu", "relu_ref",
    "clip", "clip_ref", "lookup", "lookup_ref", "softmax_int8", "softmax_int8_ref",
    "requant_gemmlowp", "requant_gemmlowp_ref", "check_gemmlowp_args",
    "multiply_by_quantized_multiplier", "saturating_rounding_doubling_high_mul",
    "rounding_divide_by_pot", "tflite_quantize_multiplier",
    "quantize_multiplier_smaller_than_one_exp", "quantize_multiplier_greater_than_one",
]
