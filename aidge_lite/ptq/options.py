"""Up-front checks of `quantize_network`'s arguments, before any pass runs.

A bad option must fail in milliseconds with a `QuantizationError` naming it, not
after minutes of calibration with an error from deep inside a pass. The options
`PTQConfig`, `preset_options` and `CalibrationSet` already check (bit width,
clipping, compat, preset, booleans, calibration type) are not repeated here.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..errors import QuantizationError
from ..ir import Graph
from ..target import PROFILES, Target


def resolve_target(target) -> Target | None:
    """A `Target`, None, or a profile name of `aidge_lite.target.PROFILES` ("tflite", ...)."""
    if target is None or isinstance(target, Target):
        return target
    if isinstance(target, str):
        if target in PROFILES:
            return PROFILES[target]
        raise QuantizationError(f"target: unknown profile {target!r} (profiles: {', '.join(PROFILES)}; "
                                "or pass aidge_lite.Target(acc_bits=..., rounding=..., rescale=..., overflow=...))")
    raise QuantizationError(f"target must be an aidge_lite.Target, a profile name ({', '.join(PROFILES)}) "
                            f"or None, got {type(target).__name__} {target!r}")


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise QuantizationError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_options(graph, *, batch_size, target, no_quant, nb_bits, optimize_signs) -> tuple[int, Target | None]:
    """(batch_size, target) checked and normalized; raises `QuantizationError` naming the option."""
    if not isinstance(graph, Graph):
        raise QuantizationError(f"graph must be an aidge_lite Graph (e.g. from aidge_lite.load_onnx), "
                                f"got {type(graph).__name__}")
    batch_size = _positive_int(batch_size, "batch_size")
    if not isinstance(no_quant, (bool, np.bool_)):
        raise QuantizationError(f"no_quant must be True or False, got {no_quant!r}")
    target = resolve_target(target)
    if target is not None and target.rescale == "gemmlowp" and not no_quant:
        # what `quantize` would refuse per node after calibration, said once up front
        if target.acc_bits > 32:
            raise QuantizationError(f"target: the gemmlowp rescale takes int32 accumulators (TFLite's), "
                                    f"but acc_bits={target.acc_bits}; use acc_bits <= 32 or another rescale")
        if optimize_signs and isinstance(nb_bits, numbers.Integral) and nb_bits > 8:
            raise QuantizationError(f"target: the gemmlowp rescale cannot write unsigned {nb_bits}-bit "
                                    "activations (uint16); use optimize_signs=False, nb_bits <= 8 or "
                                    "another rescale")
    return batch_size, target
