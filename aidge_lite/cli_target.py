"""Target profiles from the command line: ``--target`` and ``--acc-bits/--rounding/--rescale/--overflow``.

``--target`` takes a named profile (``default``, ``onnx``, ``tflite``, ...),
``key=value`` pairs (``acc_bits=16,overflow=saturate``) or both
(``tflite,acc_bits=24``); keys are the fields of `aidge_lite.Target`
(``acc_bits``, ``rounding``, ``rescale``, ``overflow``; ``acc-bits`` works too).
The single-field options override what ``--target`` says.

`quantize` builds the whole profile. `eval` runs a quantized graph whose
rounding and rescale are baked into its quantizers: it only overrides the
accumulator width and overflow rule at run time (``run(..., target=...)``),
and refuses a rounding or rescale that differs from the graph's.
"""
from __future__ import annotations

import argparse
from dataclasses import fields, replace

from .cli_data import UsageError
from .target import Target

KEYS = tuple(f.name for f in fields(Target))
RUN_TIME_KEYS = ("acc_bits", "overflow")  # what `run(..., target=...)` can change on a quantized graph
_FLAGS = {"acc_bits": "--acc-bits", "rounding": "--rounding", "rescale": "--rescale", "overflow": "--overflow"}


def add_target_options(parser, *, default_help: str) -> None:
    """--target plus the four single-field options, on `parser`."""
    from aidge_lite.target import OVERFLOWS, PROFILES, RESCALES, ROUNDINGS

    parser.add_argument("--target", default=None, metavar="PROFILE|KEY=VALUE,...",
                        help=f"integer target: a profile ({', '.join(PROFILES)}), key=value pairs "
                             f"({', '.join(KEYS)}) or both, e.g. tflite,acc_bits=24 ({default_help})")
    parser.add_argument("--acc-bits", type=_acc_bits, default=None, metavar="N",
                        help="accumulator width in bits (8..64)")
    parser.add_argument("--rounding", choices=ROUNDINGS, default=None, help="rounding of every rescale")
    parser.add_argument("--rescale", choices=RESCALES, default=None, help="how quantizers multiply")
    parser.add_argument("--overflow", choices=OVERFLOWS, default=None,
                        help="accumulator out of range: error, saturate or wrap")


def _acc_bits(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer number of bits, got '{text}'") from None
    if not 8 <= value <= 64:
        raise argparse.ArgumentTypeError(f"expected 8..64 bits, got {value}")
    return value


def parse_target(text: str) -> tuple[str | None, dict]:
    """('tflite', {'acc_bits': 24}) from 'tflite,acc_bits=24'; values stay strings except acc_bits."""
    from aidge_lite.target import PROFILES

    profile, overrides = None, {}
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise UsageError(f"--target '{text}': empty item (expected PROFILE, KEY=VALUE pairs or both)")
    for part in parts:
        if "=" not in part:
            if part not in PROFILES:
                raise UsageError(f"--target: unknown profile '{part}' (profiles: {', '.join(PROFILES)}; "
                                 f"or KEY=VALUE with KEY in {', '.join(KEYS)})")
            if profile is not None:
                raise UsageError(f"--target '{text}': two profiles ('{profile}', '{part}')")
            profile = part
            continue
        key, value = (s.strip() for s in part.split("=", 1))
        key = key.replace("-", "_")
        if key not in KEYS:
            raise UsageError(f"--target: unknown key '{key}' (keys: {', '.join(KEYS)})")
        if key in overrides:
            raise UsageError(f"--target: key '{key}' given twice")
        if key == "acc_bits":
            try:
                value = int(value)
            except ValueError:
                raise UsageError(f"--target: acc_bits must be an integer, got '{value}'") from None
        overrides[key] = value
    return profile, overrides


def _requested(args) -> tuple[str | None, dict, dict]:
    """(profile, --target overrides, single-option overrides) from parsed arguments."""
    profile, overrides = parse_target(args.target) if args.target is not None else (None, {})
    flags = {key: getattr(args, key) for key in _FLAGS if getattr(args, key, None) is not None}
    return profile, overrides, flags


def _check_values(values: dict, where: str) -> None:
    from aidge_lite.target import OVERFLOWS, RESCALES, ROUNDINGS

    for key, allowed in (("rounding", ROUNDINGS), ("rescale", RESCALES), ("overflow", OVERFLOWS)):
        if key in values and values[key] not in allowed:
            raise UsageError(f"{where}: {key} '{values[key]}' is not one of {', '.join(allowed)}")
    if "acc_bits" in values and not 8 <= values["acc_bits"] <= 64:
        raise UsageError(f"{where}: acc_bits must be in 8..64, got {values['acc_bits']}")


# Above this width a 32-bit accumulator holds the worst case of fewer than 512 products
# (2 (n - 1) bits each): 16-bit operands overflow int32 on almost any layer.
WIDE_BITS = 12


def wide_accumulator(args, profile: str | None, chosen: dict) -> bool:
    """True when `quantize --bits N` (N > WIDE_BITS) should get a 64-bit accumulator: the user
    set no acc_bits and the profile can have one (gemmlowp is int32 arithmetic by definition)."""
    from aidge_lite.target import PROFILES

    bits = getattr(args, "bits", None)
    if not isinstance(bits, int) or bits <= WIDE_BITS or getattr(args, "no_quant", False):
        return False
    if "acc_bits" in chosen or getattr(args, "spec", None):
        return False
    rescale = chosen.get("rescale", PROFILES[profile or "default"].rescale)
    return rescale != "gemmlowp"


def quantize_target(args):
    """(Target or None, label) for `quantize`; None when no target option was given.

    `--bits` above 12 with no acc_bits given: acc_bits=64 (a note says so), since a
    32-bit accumulator overflows on the products of such operands."""
    from aidge_lite.target import PROFILES

    profile, overrides, flags = _requested(args)
    chosen = {**overrides, **flags}
    if wide_accumulator(args, profile, chosen):
        chosen["acc_bits"] = 64
        print(f"note: --bits {args.bits}: using a 64-bit accumulator (acc_bits=64): the products of "
              f"{args.bits}-bit operands overflow 32 bits; set --acc-bits N (or --target ...,acc_bits=N) "
              "to choose", flush=True)
    if profile is None and not chosen:
        return None, "default"
    _check_values(overrides, "--target")
    target = replace(PROFILES[profile or "default"], **chosen)
    label = ",".join([profile or "default"] + [f"{k}={v}" for k, v in chosen.items()])
    return target, label


def run_target(args, graph):
    """Target override for running a quantized `graph` in `eval`, or None."""
    from aidge_lite.target import PROFILES

    profile, overrides, flags = _requested(args)
    if profile is None and not overrides and not flags:
        return None
    if not graph.meta.get("quantized") or not graph.meta.get("target"):
        given = "--target" if (profile or overrides) else _FLAGS[next(iter(flags))]
        raise UsageError(f"{given}: a target applies to a quantized graph; '{graph.name}' is a float graph")
    _check_values(overrides, "--target")
    stored = Target.from_dict(graph.meta["target"])
    wanted = {**(PROFILES[profile].to_dict() if profile else {}), **overrides, **flags}
    for key in ("rounding", "rescale"):
        if key in wanted and wanted[key] != getattr(stored, key):
            option = _FLAGS[key] if key in flags else "--target"
            raise UsageError(f"{option}: {key} '{wanted[key]}' differs from the graph's '{getattr(stored, key)}': "
                             "rounding and rescale are baked into the quantizers at quantize time "
                             f"(re-quantize with {_FLAGS[key]} {wanted[key]}); eval can change only "
                             "acc_bits and overflow")
    return replace(stored, **{k: v for k, v in wanted.items() if k in RUN_TIME_KEYS})
