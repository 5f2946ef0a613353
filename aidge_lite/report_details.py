"""Report details in the conventions users know (see `aidge_lite.report`).

- `onnx_keys(qgraph, reference)`: per rescaling node, the ONNX node it follows
  (``onnx_node``: the node's name in the ONNX file, with the bias Adds /
  BatchNorms `prepare` folded into it, e.g. ``Convolution28 + Plus30``) and
  the ONNX tensor its value stands for (``onnx_tensor``).
- `real_scales(qgraph)`: per rescaling node, the scale in ONNX / TFLite's
  convention, real = (q - zero_point) * scale: ``real_scale`` = 1 / F (F: the
  quantizer's output = F * the float tensor, `report.quantizer_factors`) and
  ``zero_point`` 0 (symmetric quantization).
- `weight_table(qgraph, reference)`: per Conv/Gemm, the weight SQNR (as
  onnxruntime's ``qdq_loss_debug`` computes it: float weights W of the float
  network vs the dequantized integer weights W_q / weight_scale):
  10 log10(sum W^2 / sum (W - W_q / s)^2), its worst output channel, the
  weights' real scale (1 / weight_scale, per tensor or min..max over channels).
- `AccumulatorObserver` / `accumulator_table(qgraph, observed)`: per
  Conv/Gemm/Add, the integer accumulator's min / max on the calibration set
  (before the target's width applies), the signed bits that range needs, and
  the bits the worst case needs for any input its quantizers can produce
  (``bound_bits``: b + sum max(W lo, W hi) over each output channel; Add: the
  sum of its operands' ranges), against the target's ``acc_bits``.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import InputError
from .ir import AFFINE, Graph, OpType

__all__ = ["onnx_keys", "real_scales", "weight_table", "accumulator_table", "AccumulatorObserver",
           "signed_bits", "operand_range"]

RESCALERS = (OpType.QUANTIZER, OpType.SCALING)
ACCUMULATING = (OpType.CONV, OpType.GEMM, OpType.ADD, OpType.SUB)
_PASS_THROUGH = (OpType.MAXPOOL, OpType.AVGPOOL, OpType.GLOBAL_AVGPOOL, OpType.FLATTEN, OpType.RESHAPE,
                 OpType.TRANSPOSE, OpType.SQUEEZE, OpType.UNSQUEEZE, OpType.PAD, OpType.RELU)


# ----------------------------------------------------------------- ONNX keys
def onnx_keys(qgraph: Graph, reference: Graph, sources: dict[str, str | None]) -> dict[str, dict]:
    """{quantizer: {"onnx_node", "onnx_tensor"}}; `sources` from `report.float_counterparts`."""
    keys = {}
    for name, source in sources.items():
        if source is None or source not in reference:
            keys[name] = {"onnx_node": None, "onnx_tensor": None}
            continue
        node = reference.node(source)
        if node.op is OpType.INPUT:
            keys[name] = {"onnx_node": f"(graph input {source})", "onnx_tensor": source}
            continue
        names = [node.meta.get("onnx_name") or source] + list(node.meta.get("fused", []))
        keys[name] = {"onnx_node": " + ".join(names), "onnx_tensor": node.meta.get("onnx_output", source)}
    return keys


# --------------------------------------------------------------- real scales
def real_scales(factors: dict[str, object]) -> dict[str, dict]:
    """{node: {"real_scale": 1 / F, "zero_point": 0}} from `report.quantizer_factors`."""
    found = {}
    for name, factor in factors.items():
        f = np.asarray(factor, np.float64).ravel()
        if f.size != 1 or not np.isfinite(f[0]) or f[0] == 0:
            found[name] = {"real_scale": None, "zero_point": 0}
        else:
            found[name] = {"real_scale": float(1.0 / f[0]), "zero_point": 0}
    return found


# ------------------------------------------------------------------- weights
def _sqnr(signal: float, noise: float) -> float | None:
    if noise == 0.0 or signal == 0.0:
        return None
    return 10.0 * math.log10(signal / noise)


def weight_table(qgraph: Graph, reference: Graph) -> list[dict]:
    """One entry per Conv/Gemm of `qgraph` that `reference` (the float network) also has."""
    rows = []
    for node in qgraph.topo_order():
        float_name = node.meta.get("float_name", node.name)  # finalize renames an output's producer
        if node.op not in AFFINE or float_name not in reference or "weight_scale" not in node.attrs:
            continue
        quantized = np.asarray(qgraph.constant(node.inputs[1]), np.float64)
        original = np.asarray(reference.constant(reference.node(float_name).inputs[1]), np.float64)
        if quantized.shape != original.shape:
            continue
        scale = np.asarray(node.attrs["weight_scale"], np.float64).ravel()
        per_channel = scale.size > 1
        factor = scale.reshape((-1,) + (1,) * (quantized.ndim - 1)) if per_channel else scale[0]
        error = original - quantized / factor
        flat_w = original.reshape(len(original), -1)
        flat_e = error.reshape(len(error), -1)
        channel_signal = np.sum(flat_w ** 2, axis=1)
        channel_noise = np.sum(flat_e ** 2, axis=1)
        channel_sqnr = [_sqnr(float(s), float(n)) for s, n in zip(channel_signal, channel_noise)]
        measured = [(v, c) for c, v in enumerate(channel_sqnr) if v is not None]
        worst = min(measured) if measured else (None, None)
        real = 1.0 / scale
        sqnr = _sqnr(float(channel_signal.sum()), float(channel_noise.sum()))
        rows.append({
            "node": node.name,
            "op": node.op.value,
            "onnx_node": _onnx_name(reference, float_name),
            "shape": list(quantized.shape),
            "per_channel": per_channel,
            "real_scale": float(real[0]) if not per_channel else None,
            "real_scale_min": float(real.min()),
            "real_scale_max": float(real.max()),
            "zero_point": 0,
            "int_min": int(quantized.min()) if quantized.size else 0,
            "int_max": int(quantized.max()) if quantized.size else 0,
            "sqnr_db": sqnr,
            "sqnr_note": None if sqnr is not None else ("exact" if channel_noise.sum() == 0 else "all zeros"),
            "worst_channel": worst[1],
            "worst_channel_sqnr_db": worst[0],
        })
    return rows


def _onnx_name(reference: Graph, name: str) -> str:
    return _joined(reference.node(name)) or name


# -------------------------------------------------------------- accumulators
def signed_bits(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer in [lo, hi]."""
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (lo, hi)) or lo > hi:
        raise InputError(f"signed_bits: lo and hi must be integers with lo <= hi, got {lo!r}, {hi!r}")

    def bits(v: int) -> int:
        return (v.bit_length() if v >= 0 else (-v - 1).bit_length()) + 1

    return max(bits(int(lo)), bits(int(hi)))


class AccumulatorObserver:
    """Min / max of each accumulator, recorded by wrapping an interpreter's accumulator policy."""

    def __init__(self):
        self.ranges: dict[str, list[int]] = {}

    def wrap(self, policy) -> None:
        apply = policy.apply

        def observed(node, acc):
            if acc.size:
                lo, hi = int(np.min(acc)), int(np.max(acc))
                entry = self.ranges.setdefault(node.name, [lo, hi])
                entry[0], entry[1] = min(entry[0], lo), max(entry[1], hi)
            return apply(node, acc)

        policy.apply = observed


def operand_range(qgraph: Graph, name: str, _memo=None) -> tuple[int, int] | None:
    """[lo, hi] an integer activation can take: its quantizer's clip, through layout ops and pools."""
    memo = {} if _memo is None else _memo
    if name in memo:
        return memo[name]
    node = qgraph.node(name)
    found = None
    if node.op is OpType.QUANTIZER and "lo" in node.attrs and "zero_point" not in node.attrs:
        found = (int(node.attrs["lo"]), int(node.attrs["hi"]))
    elif node.op in _PASS_THROUGH and node.inputs:
        found = operand_range(qgraph, node.inputs[0], memo)
        if found is not None and node.op is OpType.RELU:
            found = (max(found[0], 0), max(found[1], 0))
        if found is not None and node.op is OpType.PAD:
            found = (min(found[0], 0), max(found[1], 0))
    elif node.op is OpType.CONCAT:
        parts = [operand_range(qgraph, i, memo) for i in node.inputs]
        if all(p is not None for p in parts):
            found = (min(p[0] for p in parts), max(p[1] for p in parts))
    memo[name] = found
    return found


def _bound(qgraph: Graph, node, memo) -> tuple[int, int] | None:
    """Worst-case accumulator range for any input the operands' quantizers can produce."""
    if node.op in AFFINE:
        x = operand_range(qgraph, node.inputs[0], memo)
        if x is None or not all(qgraph.is_constant(i) for i in node.inputs[1:3]):
            return None
        w = np.asarray(qgraph.constant(node.inputs[1]), np.int64)
        w = w.reshape(len(w), -1).astype(object)  # exact: Python ints
        b = np.asarray(qgraph.constant(node.inputs[2]), np.int64).astype(object)
        highs = np.maximum(w * x[0], w * x[1]).sum(axis=1) + b
        lows = np.minimum(w * x[0], w * x[1]).sum(axis=1) + b
        return int(min(lows)), int(max(highs))
    if node.op in (OpType.ADD, OpType.SUB):
        parts = [operand_range(qgraph, i, memo) for i in node.inputs]
        if len(parts) != 2 or any(p is None for p in parts):
            return None
        if node.op is OpType.ADD:
            return parts[0][0] + parts[1][0], parts[0][1] + parts[1][1]
        return parts[0][0] - parts[1][1], parts[0][1] - parts[1][0]
    return None


def _joined(node) -> str | None:
    if not node.meta.get("onnx_name"):
        return None
    return " + ".join([node.meta["onnx_name"]] + list(node.meta.get("fused", [])))


def accumulator_table(qgraph: Graph, observed: dict[str, list[int]]) -> list[dict]:
    """One entry per accumulating node of an integer graph (see the module docstring)."""
    if not qgraph.meta.get("integer"):
        return []
    acc_bits = int((qgraph.meta.get("target") or {}).get("acc_bits", 32))
    memo: dict = {}
    rows = []
    for node in qgraph.topo_order():
        if node.op not in ACCUMULATING:
            continue
        seen = observed.get(node.name)
        bound = _bound(qgraph, node, memo)
        rows.append({
            "node": node.name,
            "op": node.op.value,
            "onnx_node": _joined(node),
            "min": None if seen is None else seen[0],
            "max": None if seen is None else seen[1],
            "bits": None if seen is None else signed_bits(*seen),
            "bound_min": None if bound is None else bound[0],
            "bound_max": None if bound is None else bound[1],
            "bound_bits": None if bound is None else signed_bits(*bound),
            "acc_bits": acc_bits,
        })
    return rows


# ------------------------------------------------------------------ markdown
def _num(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _real_scale_text(row: dict) -> str:
    if row.get("real_scale") is not None:
        return _num(row["real_scale"])
    return f"{_num(row.get('real_scale_min'))}..{_num(row.get('real_scale_max'))} per channel"


def details_markdown(report: dict) -> list[str]:
    """The "Weights" and "Accumulators" sections of report.md (empty when the report has neither)."""
    lines = []
    weights = report.get("weights") or []
    if weights:
        lines += ["", "## Weights", "",
                  "SQNR of each layer's quantized weights against its float weights (after BatchNorm "
                  "folding and CLE): 10 log10(sum W^2 / sum (W - q / F_w)^2), as onnxruntime's "
                  "`qdq_loss_debug` reports it; the worst output channel's too. real scale: "
                  "W = q * scale, zero point 0.", "",
                  "| ONNX node | node | shape | real scale | q min..max | SQNR (dB) | worst channel (dB) |",
                  "|---|---|---|---|---|---|---|"]
        for w in weights:
            sqnr = f"{w['sqnr_db']:.1f}" if w["sqnr_db"] is not None else (w.get("sqnr_note") or "-")
            worst = "-" if w.get("worst_channel_sqnr_db") is None else \
                f"{w['worst_channel_sqnr_db']:.1f} (channel {w['worst_channel']})"
            lines.append(f"| {_num(w.get('onnx_node'))} | `{w['node']}` | {'x'.join(map(str, w['shape']))} "
                         f"| {_real_scale_text(w)} | {w['int_min']}..{w['int_max']} | {sqnr} | {worst} |")
    accs = report.get("accumulators") or []
    if accs:
        bits = accs[0]["acc_bits"]
        lines += ["", "## Accumulators", "",
                  f"Integer accumulator of each Conv/Gemm/Add on the calibration set and the signed bits "
                  f"its range needs; worst case: the range any input its quantizers can produce gives "
                  f"(bias + sum over each output channel of max(w lo, w hi)). Target: int{bits}.", "",
                  "| ONNX node | node | op | min..max (calibration) | bits | worst case | bits (worst case) |",
                  "|---|---|---|---|---|---|---|"]
        for a in accs:
            seen = "-" if a["min"] is None else f"{a['min']:,}..{a['max']:,}"
            bound = "-" if a["bound_min"] is None else f"{a['bound_min']:,}..{a['bound_max']:,}"
            flag = lambda b: "-" if b is None else (f"**{b}** (> {bits})" if b > bits else str(b))  # noqa: E731
            lines.append(f"| {_num(a.get('onnx_node'))} | `{a['node']}` | {a['op']} | {seen} | {flag(a['bits'])} "
                         f"| {bound} | {flag(a['bound_bits'])} |")
    return lines
