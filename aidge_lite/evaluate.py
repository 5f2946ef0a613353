"""Batched inference and accuracy over a data set.

Inputs may be any numeric array: integer images (the data sets give uint8)
are fed as float32, the dtype the zoo models declare; float arrays are fed as
they are. Quantized graphs return dequantized outputs (q / F, see
`aidge_lite.dequantize`), so float and quantized predictions compare directly.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError
from .interp import run
from .ir import Graph
from .ptq import dequantize

__all__ = ["predict", "accuracy", "compare_engines", "as_float_input", "batches", "input_range_problems",
           "warn_input_range"]

DEFAULT_BATCH = 500


def as_float_input(x) -> np.ndarray:
    """Integer/bool data as float32 (exact for uint8 images); float data unchanged."""
    x = np.asarray(x)
    if x.dtype.kind in "biu":
        return x.astype(np.float32)
    if x.dtype.kind != "f":
        raise InputError(f"input data of dtype {x.dtype} is not numeric")
    return x


def batches(n: int, batch_size: int):
    """(start, stop) pairs covering range(n) in chunks of `batch_size`."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _bar(total: int, progress: bool, desc: str):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False)


FAR = 2.0      # data reaching beyond FAR x the calibrated max |x| is "far outside"
NARROW = 16.0  # data whose max |x| is below 1 / NARROW of the calibrated one uses few levels


def input_range_problems(graph: Graph, x, *, calibration=None) -> list[str]:
    """Why `x` probably is not on the scale `graph` expects (empty when it looks right).

    The reference range is `calibration` (samples) when given, else the range a
    quantized graph's input saw during calibration (``meta["min"/"max"]`` of
    its input node); a float graph without `calibration` has none. Flags data
    whose max |x| exceeds `FAR` x the calibrated one (the input quantizer clips
    it: e.g. uint8 0..255 on a model calibrated on [0, 1]) or stays below
    1 / `NARROW` of it (e.g. [0, 1] data on a model calibrated on 0..255: few
    quantization levels left).
    """
    if not isinstance(graph, Graph):
        raise InputError(f"input_range_problems: graph must be a Graph, got {type(graph).__name__}")
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise InputError(f"input_range_problems: x must be numeric, got dtype {x.dtype}")
    if x.size == 0 or len(graph.inputs) != 1:
        return []
    if calibration is not None:
        calibration = np.asarray(calibration)
        if calibration.dtype.kind not in "biuf":
            raise InputError(f"input_range_problems: calibration must be numeric, got dtype {calibration.dtype}")
        if calibration.size == 0:
            return []
        ref_lo, ref_hi = float(calibration.min()), float(calibration.max())
        source = "the calibration data"
    else:
        meta = graph.node(graph.inputs[0]).meta
        if not graph.meta.get("quantized") or "min" not in meta or "max" not in meta:
            return []
        ref_lo, ref_hi = float(meta["min"]), float(meta["max"])
        source = f"the calibration of graph '{graph.name}'"
    lo, hi = float(x.min()), float(x.max())
    data_abs, ref_abs = max(abs(lo), abs(hi)), max(abs(ref_lo), abs(ref_hi))
    what = f"{x.dtype} data in [{lo:.6g}, {hi:.6g}]"
    ref = f"the range of {source}, [{ref_lo:.6g}, {ref_hi:.6g}]"
    if ref_abs > 0 and data_abs > FAR * ref_abs:
        outside = np.count_nonzero((x < ref_lo) | (x > ref_hi)) / x.size
        scale = ("; integer samples are fed as float values unchanged: scale them like the calibration "
                 "data (e.g. x / 255)") if x.dtype.kind in "biu" else ""
        return [f"{what} reach {data_abs / ref_abs:.3g} x {ref}: {100 * outside:.1f} % of the "
                f"values lie outside it and clip at the input quantizer{scale}"]
    if data_abs > 0 and data_abs * NARROW < ref_abs:
        return [f"{what} span only 1/{ref_abs / data_abs:.3g} of {ref}: the input uses a "
                "few of its quantization levels (scale the data like the calibration data)"]
    return []


def warn_input_range(graph: Graph, x, *, calibration=None, stacklevel: int = 3) -> list[str]:
    """`input_range_problems` as `InputRangeWarning`s; returns the messages."""
    import warnings

    from .errors import InputRangeWarning

    problems = input_range_problems(graph, x, calibration=calibration)
    for text in problems:
        warnings.warn(text, InputRangeWarning, stacklevel=stacklevel)
    return problems


def _check_target(target) -> None:
    from .target import Target

    if target is not None and not isinstance(target, Target):
        raise InputError(f"target must be an aidge_lite.Target or None, got {type(target).__name__} {target!r}")


def _check_data(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise InputError(f"no samples to evaluate (data of shape {x.shape})")
    return x


def predict(graph: Graph, x, *, engine: str = "reference", batch_size: int = DEFAULT_BATCH,
            progress: bool = False, target=None) -> np.ndarray:
    """The graph's first output on every sample of `x`, batch by batch, concatenated.

    Dequantized (float64) for a quantized graph; the engine's float dtype otherwise.
    `target`: run-time override of a quantized graph's accumulator width / overflow
    rule (`aidge_lite.run`). Warns (`InputRangeWarning`) when `x` lies far outside the
    range a quantized graph was calibrated on (`input_range_problems`).
    """
    x = _check_data(x)
    _check_target(target)
    warn_input_range(graph, x)
    name = graph.outputs[0]
    quantized = bool(graph.meta.get("quantized"))
    outs = []
    bar = _bar(len(x), progress, f"{graph.name} [{engine}]")
    try:
        for start, stop in batches(len(x), batch_size):
            value = run(graph, as_float_input(x[start:stop]), engine=engine, target=target)[name]
            if quantized:
                value = dequantize(graph, {name: value})[name]
            outs.append(value)
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(outs, axis=0)


def top1(scores: np.ndarray, y) -> float:
    """Fraction of samples whose argmax over axis 1 equals the label."""
    y = np.asarray(y)
    scores = np.asarray(scores).reshape(len(scores), -1)
    if len(scores) != len(y):
        raise InputError(f"{len(scores)} predictions for {len(y)} labels")
    return float(np.mean(np.argmax(scores, axis=1) == y))


def accuracy(graph: Graph, x, y, **kw) -> float:
    """Top-1 accuracy of `graph` on (x, y); keywords go to `predict`."""
    x = _check_data(x)
    if len(x) != len(np.asarray(y)):
        raise InputError(f"{len(x)} samples for {len(np.asarray(y))} labels")
    return top1(predict(graph, x, **kw), y)


def compare_engines(qgraph: Graph, x, batch_size: int = DEFAULT_BATCH, *, progress: bool = False,
                    target=None) -> dict:
    """Run the reference (fake-quant) and the integer engine on the same batches.

    Every graph output is compared as integers. Returns::

        {"samples": N, "elements": compared elements, "mismatches": differing elements,
         "mismatching_samples": samples with at least one difference,
         "max_abs_diff": largest |reference - integer| (quantized units),
         "reference": dequantized first output of the reference engine (N, ...),
         "integer": dequantized first output of the integer engine (N, ...)}

    so that e.g. `top1(result["integer"], y)` is the integer engine's accuracy.
    """
    if not qgraph.meta.get("integer"):
        raise InputError(f"graph '{qgraph.name}' is not an integer graph: compare_engines needs the "
                         "output of quantize_network(..., no_quant=False)")
    x = _check_data(x)
    _check_target(target)
    warn_input_range(qgraph, x)
    first = qgraph.outputs[0]
    elements = mismatches = 0
    bad_samples = np.zeros(len(x), dtype=bool)
    max_diff = 0
    ref_out, int_out = [], []
    bar = _bar(len(x), progress, f"{qgraph.name} [reference+integer]")
    try:
        for start, stop in batches(len(x), batch_size):
            xb = as_float_input(x[start:stop])
            ref = run(qgraph, xb, engine="reference", target=target)
            got = run(qgraph, xb, engine="integer", target=target)
            for name in qgraph.outputs:
                a = np.asarray(ref[name], dtype=np.float64)
                b = np.asarray(got[name]).astype(np.float64)
                if a.shape != b.shape:
                    raise InputError(f"output '{name}': reference shape {a.shape} != integer shape {b.shape}")
                diff = a != b
                elements += a.size
                mismatches += int(np.count_nonzero(diff))
                if diff.any():
                    bad_samples[start:stop] |= diff.reshape(len(a), -1).any(axis=1)
                    max_diff = max(max_diff, float(np.max(np.abs(a - b))))
            ref_out.append(dequantize(qgraph, {first: ref[first]})[first])
            int_out.append(dequantize(qgraph, {first: got[first]})[first])
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
    return {
        "samples": int(len(x)),
        "elements": int(elements),
        "mismatches": int(mismatches),
        "mismatching_samples": int(bad_samples.sum()),
        "max_abs_diff": max_diff,
        "reference": np.concatenate(ref_out, axis=0),
        "integer": np.concatenate(int_out, axis=0),
    }
