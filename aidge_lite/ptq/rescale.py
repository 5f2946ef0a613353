"""How a quantizer's real multiplier is encoded for the integer target.

"float": the float64 multiplier itself (the reference library's mode).
"fixed_point": an integer multiplier M in [2^30, 2^31) and a right shift, with
m ~= M * 2^-shift (TFLite / gemmlowp Q31 form, single rounding).
"""
from __future__ import annotations

import numpy as np

from kernels.requant import quantize_multiplier

from ..errors import QuantizationError


def encode_rescale(scale, mode: str) -> dict:
    scales = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    if mode == "float":
        return {"mode": "float"}
    if mode == "fixed_point":
        pairs = [quantize_multiplier(float(s)) for s in scales]
        return {
            "mode": "int",
            "multiplier": np.array([m for m, _ in pairs], dtype=np.int64),
            "shift": np.array([s for _, s in pairs], dtype=np.int64),
        }
    raise QuantizationError(f"rescale mode '{mode}' needs the single-shift pass")
