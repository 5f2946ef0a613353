"""Public Hypothesis strategies for testing aidge_lite and code built on it.

Kernel level (:mod:`aidge_lite.testing.strategies`): integer tensors and
consistent conv / pooling shapes. Graph level (:mod:`aidge_lite.testing.graphs`):
random float graphs, random targets and random quantized graphs with their
calibration and test batches.
"""
from .graphs import (DEFAULT_RESCALES, EngineRun, assert_bit_exact, FloatGraphCase, QuantizedGraphCase,
                     first_mismatch, float_graphs, nb_bits_values, ptq_options,
                     quantizable_graphs, run_engines, targets, window_overlaps_input)
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
]
