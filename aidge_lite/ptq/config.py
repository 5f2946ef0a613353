"""Configuration and report types shared by the PTQ passes."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any

from ..errors import QuantizationError
from ..target import Target
from .calibration_data import CalibrationSet

CLIPPINGS = ("max", "mse", "aa", "kl")
# compat="aidge"'s target when none is given: the reference's Round (aidge_core 0.5.0) rounds
# half to even; its rescale is a float multiply (in float32: `quantize` marks the quantizers).
AIDGE_TARGET = Target(rounding="half_even")
# Samples bias correction measures its means on (the first ones of the calibration set): it
# costs about three network runs per sample. EfficientNet-Lite0, 8 bits, 256 calibration crops:
# top-1 agreement 89.8 % capped at 128 vs 90.2 % uncapped, SQNR 20.3 vs 22.0 dB (89.5 %,
# 17.0 dB without bias correction); see `ptq/bias_correction.py`.
BIAS_CORRECTION_SAMPLES = 128
#: samples the MSE / mean-abs / KL clipping histograms are binned on (the ranges see them all)
CLIPPING_SAMPLES = 256


@dataclass(frozen=True)
class PTQConfig:
    """Every option of `quantize_network`; passes read it, never a global."""

    calibration: CalibrationSet | None = None
    nb_bits: int = 8
    no_quant: bool = False
    clipping: str = "max"
    cle: bool = False
    optimize_signs: bool = False
    single_shift: bool = False
    per_channel: bool = False
    bias_correction: bool = False
    bias_correction_samples: int | None = BIAS_CORRECTION_SAMPLES  # None: every sample
    clipping_samples: int | None = CLIPPING_SAMPLES  # None: every sample
    # MSE / mean-abs histograms binned during `calibrate` (one walk, not two): off by default,
    # it lowered EfficientNet-Lite0's SQNR after bias correction (`ptq/clipping.py`)
    one_walk_histograms: bool = False
    target: Target = field(default_factory=Target)
    compat: str | None = None  # "aidge" reproduces the reference library's formulas
    # per-node bit widths {node name or op type: bits} (over `nb_bits`), nodes or op types
    # kept in float, and whether an op with no integer form falls back to float by itself
    node_bits: dict = field(default_factory=dict)
    exclude: tuple = ()
    fallback: bool = False

    def __post_init__(self):
        if isinstance(self.nb_bits, bool) or not isinstance(self.nb_bits, int) or not 2 <= self.nb_bits <= 16:
            raise QuantizationError(f"nb_bits must be an int in 2..16, got {self.nb_bits!r}")
        if self.clipping not in CLIPPINGS:
            raise QuantizationError(f"clipping must be one of {CLIPPINGS}, got {self.clipping!r}")
        for key, bits in self.node_bits.items():
            if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
                raise QuantizationError(f"nb_bits[{key!r}] must be an int in 2..16, got {bits!r}")
        for option in ("bias_correction_samples", "clipping_samples"):
            cap = getattr(self, option)
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, numbers.Integral) or cap < 1):
                raise QuantizationError(f"{option} must be a positive integer or None, got {cap!r}")
        if self.compat not in (None, "aidge"):
            raise QuantizationError(f"compat must be None or 'aidge', got {self.compat!r}")

    @property
    def act_signed_max(self) -> int:
        """Sa for a signed tensor: 2^(n-1) - 1."""
        return (1 << (self.nb_bits - 1)) - 1

    @property
    def act_unsigned_max(self) -> int:
        """Sa for an unsigned tensor: 2^n - 1."""
        return (1 << self.nb_bits) - 1

    @property
    def weight_max(self) -> int:
        """Sw: weights are always signed, in [-(2^(n-1) - 1), 2^(n-1) - 1]."""
        return (1 << (self.nb_bits - 1)) - 1


@dataclass
class PassReport:
    """What a pass did: `modified` is False when it found nothing to do."""

    name: str
    modified: bool = False
    notes: dict[str, Any] = field(default_factory=dict)
