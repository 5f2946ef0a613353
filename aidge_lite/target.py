"""`Target`: the integer machine a quantized graph is meant for.

The profile fixes what an embedded target does differently from float math:
the accumulator width, how a rescale is computed and rounded, and what happens
when an accumulator leaves its range. Quantization bakes the rescale mode and
rounding into each quantizer; both engines honour the accumulator rules.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import QuantizationError

ROUNDINGS = ("half_away", "half_up", "half_even", "floor")
RESCALES = ("float", "fixed_point", "shift", "double_shift", "gemmlowp")
OVERFLOWS = ("error", "saturate", "wrap")


@dataclass(frozen=True)
class Target:
    """An integer target profile.

    acc_bits : int
        Signed accumulator width of conv/gemm/add results (8..64).
    rounding : str
        Rounding of every rescale: "half_away" (half away from zero, the usual
        embedded convention), "half_up" (toward +inf), "half_even" (ONNX,
        numpy.rint) or "floor" (a bare arithmetic right shift). With
        rescale="gemmlowp" the quantizers round TFLite's way whatever this says;
        it then applies to the integer average pools only.
    rescale : str
        How a quantizer multiplies: "float" (float64 multiplier), "fixed_point"
        (Q31 multiplier + right shift, TFLite's multiplier but one exact rounding
        of the product, by `rounding`), "shift" (a power of two), "double_shift"
        (N2D2's (1 + 2^-a) * 2^-b) or "gemmlowp" (TFLite's arithmetic itself: Q31
        multiplier + signed shift with its double rounding,
        SaturatingRoundingDoublingHighMul then RoundingDivideByPOT, on int32
        accumulators: the PTQ refuses acc_bits > 32 and uint16 activations).
    overflow : str
        Accumulator out of range: "error" (raise, naming node and count),
        "saturate" or "wrap" (two's complement); the last two warn and record.
    """

    acc_bits: int = 32
    rounding: str = "half_away"
    rescale: str = "float"
    overflow: str = "error"

    def __post_init__(self):
        if not isinstance(self.acc_bits, int) or not 8 <= self.acc_bits <= 64:
            raise QuantizationError(f"acc_bits must be an int in 8..64, got {self.acc_bits!r}")
        for field, allowed in (("rounding", ROUNDINGS), ("rescale", RESCALES),
                               ("overflow", OVERFLOWS)):
            if getattr(self, field) not in allowed:
                raise QuantizationError(f"{field} must be one of {allowed}, got {getattr(self, field)!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Target":
        return cls(**data)


PROFILES = {
    "default": Target(),
    "onnx": Target(rounding="half_even"),
    # TFLite's requantization bit for bit (gemmlowp double rounding, int32 accumulators);
    # the pools round half away from zero, as TFLite's do.
    "tflite": Target(rescale="gemmlowp", rounding="half_away"),
    "mcu-shift": Target(rescale="shift", rounding="half_up", overflow="saturate"),
    "wrap32": Target(overflow="wrap"),
}
