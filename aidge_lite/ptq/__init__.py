"""Post-training quantization: one pass per module, run in order by `PIPELINE`.

`quantize_network(graph, calibration, ...)` copies the graph, runs every pass
with `verify` after each, and returns the quantized copy.
"""
from __future__ import annotations

import numpy as np

from ..errors import AidgeLiteError, InputError, QuantizationError
from ..ir import Graph, verify
from ..target import Target
from .bias_correction import bias_correction, record_float_means
from .calibrate import calibrate
from .clipping import optimize_clipping
from .compute_signs import compute_signs
from .cross_layer_equalization import cross_layer_equalization
from .calibration_data import DEFAULT_BATCH, CalibrationSet
from .config import AIDGE_TARGET, BIAS_CORRECTION_SAMPLES, CLIPPING_SAMPLES, PassReport, PTQConfig
from .finalize import finalize
from .float_islands import FloatFallbackWarning, split_options
from .insert_scaling import insert_scaling
from .lookup_tables import realize
from .normalize_activations import normalize_activations
from .normalize_parameters import normalize_parameters
from .options import check_options
from .prepare import prepare
from .quantize import quantize
from .single_shift import single_shift
from .tflite_spec import quantize_tflite_spec

PIPELINE = (
    prepare,
    cross_layer_equalization,
    record_float_means,
    insert_scaling,
    normalize_parameters,
    calibrate,
    compute_signs,
    optimize_clipping,
    normalize_activations,
    quantize,
    single_shift,
    realize,
    bias_correction,
    finalize,
)


def run_pipeline(graph: Graph, cfg: PTQConfig, passes=PIPELINE) -> list[PassReport]:
    """Run `passes` in order on `graph` (in place), verifying after each one."""
    reports: list[PassReport] = []
    for ptq_pass in passes:
        try:
            reports.append(ptq_pass(graph, cfg))
            verify(graph)
        except AidgeLiteError as exc:
            done = [r.name for r in reports]
            exc.add_note(f"in PTQ pass '{ptq_pass.__name__}' (after {done})")
            raise
    return reports


# Option presets of `quantize_network(..., preset=...)`; an option passed explicitly wins.
# "best": the most accurate set on the zoo below 8 bits (bench/results/accuracy_preset.md).
PRESETS = {
    "default": {"clipping": "max", "cle": False, "optimize_signs": False, "single_shift": False,
                "per_channel": False, "bias_correction": False},
    "best": {"clipping": "mse", "cle": False, "optimize_signs": True, "single_shift": False,
             "per_channel": True, "bias_correction": True},
}


def preset_options(preset: str | None = None, **explicit) -> dict:
    """The six PTQ options of `preset` ("default" or "best"), overridden by the non-None `explicit` ones."""
    name = "default" if preset is None else preset
    if not isinstance(name, str) or name not in PRESETS:
        raise QuantizationError(f"preset must be one of {tuple(PRESETS)} or None, got {preset!r}")
    unknown = sorted(set(explicit) - set(PRESETS["default"]))
    if unknown:
        raise QuantizationError(f"preset_options: unknown option(s) {unknown}")
    options = dict(PRESETS[name])
    for key, value in explicit.items():
        if value is None:
            continue
        if key != "clipping" and not isinstance(value, (bool, np.bool_)):
            raise QuantizationError(f"{key} must be True or False, got {value!r}")
        options[key] = value if key == "clipping" else bool(value)
    return options


def quantize_network(
    graph: Graph,
    calibration,
    *,
    nb_bits: int | dict = 8,
    preset: str | None = None,
    no_quant: bool = False,
    clipping: str | None = None,
    cle: bool | None = None,
    optimize_signs: bool | None = None,
    single_shift: bool | None = None,
    per_channel: bool | None = None,
    bias_correction: bool | None = None,
    bias_correction_samples: int | None = BIAS_CORRECTION_SAMPLES,
    clipping_samples: int | None = CLIPPING_SAMPLES,
    target: Target | None = None,
    compat: str | None = None,
    spec: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    exclude=None,
    fallback: bool = False,
) -> Graph:
    """Return a quantized copy of `graph`; `graph` itself is left untouched.

    `calibration` is an array (N, ...), a list of arrays, an iterable of batches
    or a callable returning an iterator of batches (for large sets).
    `preset="best"`: MSE clipping, unsigned ranges after ReLU, per-channel weights
    and bias correction (`PRESETS["best"]`); None or "default": max clipping, every
    option off. An option passed explicitly overrides the preset's; one left None
    takes the preset's value.
    `bias_correction=True` measures each Conv/Gemm's mean shift on the first
    `bias_correction_samples` calibration samples (None: all of them), in about three
    network runs per sample (see `ptq/bias_correction.py`).
    Clipping other than "max" bins its histograms on the first `clipping_samples`
    samples (default 256, None: all; compat "aidge" always all), in a second network run
    per binned sample; the ranges come from every sample.
    `spec="tflite"` quantizes to TFLite's int8 spec instead (asymmetric activations with
    zero points, per-channel symmetric weights, gemmlowp rescale: see `ptq/tflite_spec.py`);
    it takes only `cle` among the options.
    `compat="aidge"` reproduces Aidge 0.3.1's PTQ (bench/results/aidge_compat.md): its
    clipping formulas, its signed and never-clipped input, CLE on by default, and with
    no `target` its arithmetic: round half to even, rescale by a float32 multiplier
    with a float32 product.
    Mixed precision (`ptq/float_islands.py`): `nb_bits` may be a dict {node name or op
    type: bits} (key "default": the others, 8 if absent); `exclude=[node names or op
    types]` keeps those nodes in float (float64 in both engines, between a DEQUANTIZE
    and a quantizer; listed in `meta["float_nodes"]`); `fallback=True` keeps every node
    the PTQ cannot quantize in float with a `FloatFallbackWarning` (else such a node
    raises a `QuantizationError` naming it).
    `target` is a `Target` or a profile name of `aidge_lite.target.PROFILES` ("tflite", ...).
    Every option is checked before any pass runs (`QuantizationError` naming it).
    """
    nb_bits, node_bits, exclude, fallback = split_options(nb_bits, exclude, fallback)
    if spec is not None and (node_bits or exclude or fallback):
        raise QuantizationError(f"spec={spec!r} quantizes every node at 8 bits: no per-node nb_bits, "
                                "exclude or fallback")
    if spec is not None and preset is not None:
        raise QuantizationError(f"preset={preset!r} and spec={spec!r} exclude each other: a spec fixes the options")
    if compat == "aidge" and cle is None:
        cle = True  # Aidge 0.3.1 always equalizes (and skips graphs that branch)
    opts = preset_options(preset, clipping=clipping, cle=cle, optimize_signs=optimize_signs,
                          single_shift=single_shift, per_channel=per_channel,
                          bias_correction=bias_correction)
    clipping, cle, optimize_signs = opts["clipping"], opts["cle"], opts["optimize_signs"]
    single_shift, per_channel, bias_correction = opts["single_shift"], opts["per_channel"], opts["bias_correction"]
    batch_size, target = check_options(graph, batch_size=batch_size, target=target, no_quant=no_quant,
                                       nb_bits=nb_bits, optimize_signs=optimize_signs)
    passes = PIPELINE
    if spec is not None:
        passes = _spec_pipeline(spec, nb_bits=nb_bits, no_quant=no_quant, clipping=clipping,
                                cle=cle, optimize_signs=optimize_signs, single_shift=single_shift,
                                bias_correction=bias_correction, target=target, compat=compat)
        per_channel = True
    cfg = PTQConfig(
        calibration=CalibrationSet(calibration, batch_size), nb_bits=nb_bits, no_quant=no_quant,
        clipping=clipping, cle=cle, optimize_signs=optimize_signs, single_shift=single_shift,
        per_channel=per_channel, bias_correction=bias_correction,
        bias_correction_samples=bias_correction_samples, clipping_samples=clipping_samples,
        target=target or (AIDGE_TARGET if compat == "aidge" else Target()),
        compat=compat, node_bits=node_bits, exclude=exclude, fallback=fallback,
    )
    _check_quantizable(graph)
    qgraph = graph.copy()
    reports = run_pipeline(qgraph, cfg, passes)
    qgraph.meta["ptq_passes"] = [{"pass": r.name, "modified": r.modified} for r in reports]
    qgraph.meta["options"] = {
        "nb_bits": nb_bits, "no_quant": no_quant, "clipping": clipping, "cle": cle,
        "optimize_signs": optimize_signs, "single_shift": single_shift, "per_channel": per_channel,
        "bias_correction": bias_correction, "bias_correction_samples": bias_correction_samples,
        "clipping_samples": clipping_samples,
        "compat": compat, "spec": spec, "preset": preset,
        "exclude": list(exclude), "fallback": fallback, "node_bits": dict(node_bits),
    }
    return qgraph


def _check_quantizable(graph: Graph) -> None:
    """Refuse up front (issue 20) what no pass can quantize: a NaN/Inf constant (its range is
    not finite), and a graph output computed from constants only (no range to calibrate)."""
    for node in graph.nodes():
        value = node.attrs.get("value") if node.op.value == "Constant" else None
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise QuantizationError(f"constant '{node.name}' holds NaN or Inf values: cannot quantize it")
    for name in graph.outputs:
        stack, seen = [name], {name}
        while stack and graph.node(stack[-1]).name not in graph.inputs:
            for src in graph.node(stack.pop()).inputs:
                if src not in seen:
                    seen.add(src)
                    stack.append(src)
        if not stack:
            raise QuantizationError(f"graph output '{name}' depends on no graph input (constants only): "
                                    "nothing to quantize")


def _spec_pipeline(spec, *, target, **options):
    """The passes of quantize_network(spec=...); options the spec fixes are refused by name."""
    if spec != "tflite":
        raise QuantizationError(f"spec must be None or 'tflite', got {spec!r}")
    fixed = {"nb_bits": 8, "no_quant": False, "clipping": "max", "optimize_signs": False,
             "single_shift": False, "bias_correction": False, "compat": None}
    for name, allowed in fixed.items():
        if options[name] != allowed:
            raise QuantizationError(f"spec='tflite' fixes {name}={allowed!r} (got {options[name]!r})")
    if target is not None and target.rescale != "gemmlowp":
        raise QuantizationError(f"spec='tflite' uses the gemmlowp rescale, not target {target}")
    return (prepare,) + ((cross_layer_equalization,) if options["cle"] else ()) + (calibrate, quantize_tflite_spec)


def dequantize(qgraph: Graph, outputs: dict) -> dict:
    """Float values of a quantized graph's outputs: q / F for each output, or
    (q - zero_point) * scale for a graph with zero points (int8 TFLite, spec='tflite')."""
    zero_pointed = qgraph.meta.get("output_quantization")
    if zero_pointed is not None:
        unknown = sorted(set(outputs) - set(zero_pointed))
        if unknown:
            raise InputError(f"{unknown} not among the quantized outputs {sorted(zero_pointed)}")
        return {name: (np.asarray(value, np.float64) - zero_pointed[name][1]) * zero_pointed[name][0]
                for name, value in outputs.items()}
    scales = qgraph.meta.get("output_scale")
    if scales is None:
        raise InputError(f"graph '{qgraph.name}' is not quantized (no output scale)")
    result = {}
    for name, value in outputs.items():
        if name not in scales:
            raise InputError(f"'{name}' is not an output of the quantized graph")
        factor = np.asarray(scales[name], dtype=np.float64)
        value = np.asarray(value, dtype=np.float64)
        result[name] = value / (factor if factor.ndim == 0 else factor.reshape((1, -1) + (1,) * (value.ndim - 2)))
    return result


__all__ = ["FloatFallbackWarning", "PIPELINE", "PRESETS", "preset_options", "quantize_network", "dequantize", "run_pipeline", "PTQConfig", "PassReport"]
