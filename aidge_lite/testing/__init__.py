"""Public Hypothesis strategies for testing aidge_lite and code built on it.

Kernel level (:mod:`aidge_lite.testing.strategies`): integer tensors and
consistent conv / pooling shapes. Graph level (:mod:`aidge_lite.testing.graphs`):
random float graphs, random targets and random quantized graphs with their
calibration and test batches.
Your own kernels (:mod:`~aidge_lite.testing.kernel_check`, :mod:`~.golden_replay`):
one-call checkers on boundary-heavy cases (:mod:`~.kernel_cases`,
:mod:`~.kernel_op_cases`) and a per-layer replay of golden dumps.
"""
from .graphs import (DEFAULT_RESCALES, EngineRun, assert_bit_exact, FloatGraphCase, QuantizedGraphCase,
                     first_mismatch, float_graphs, nb_bits_values, ptq_options,
                     quantizable_graphs, run_engines, targets, window_overlaps_input)
from .kernel_check import (KernelCheckError, KernelMismatch, KernelOutputError, Params,
                           check_add, check_avgpool2d, check_conv2d, check_depthwise_conv2d,
                           check_fully_connected, check_maxpool2d, check_requant)
from .golden_replay import GoldenReplay, LayerResult, replay_golden
from .kernel_cases import Rescale, RequantCase, requant_cases, requantize_ref, rescales
from .kernel_op_cases import (OpCase, add_cases, conv2d_cases, fully_connected_cases,
                              pool2d_cases)
from .strategies import (ACTIVATION_DTYPES, WEIGHT_DTYPES, ConvShape, PoolShape, conv2d_shapes,
                         int_tensors, pool2d_shapes)

__all__ = [
    # kernel level
    "ACTIVATION_DTYPES", "WEIGHT_DTYPES", "ConvShape", "PoolShape", "conv2d_shapes",
    "int_tensors", "pool2d_shapes",
    # graph level
    "DEFAULT_RESCALES", "FloatGraphCase", "QuantizedGraphCase", "float_graphs", "targets",
    "quantizable_graphs", "nb_bits_values", "ptq_options", "window_overlaps_input",
    "EngineRun", "run_engines", "first_mismatch", "assert_bit_exact",
    # checking a user's own kernels (kernel_check, golden_replay)
    "KernelCheckError", "KernelMismatch", "KernelOutputError", "Params", "check_requant",
    "check_conv2d", "check_depthwise_conv2d", "check_fully_connected", "check_avgpool2d",
    "check_maxpool2d", "check_add", "GoldenReplay", "LayerResult", "replay_golden",
    # their boundary-heavy strategies (kernel_cases, kernel_op_cases)
    "Rescale", "RequantCase", "OpCase", "rescales", "requant_cases", "requantize_ref",
    "conv2d_cases", "fully_connected_cases", "pool2d_cases", "add_cases",
]
