"""Agreement of onnxruntime on our QDQ export with our integer engine.

For each zoo model (mnist8, lenet, resnet_tiny, inception_tiny), each target
profile of `aidge_lite.target.PROFILES` (8 bits) and each onnxruntime
configuration, export the quantized graph with `export_qdq`, run ORT on the
4,000 MNIST test images and compare ORT's output, brought back to integers
(round(y * F_out)), with `aidge_lite.run(q, x, engine="integer")`.

The exported input gets a symbolic batch dim "N" (`export_qdq(batch_dim="N")`)
so ORT runs batches of 500 (mnist8 declares batch 1; our engine takes any batch).

Run from the repository root:  python -m bench.qdq_agreement [--models a,b] [--limit N]
Writes bench/results/qdq_agreement.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

import aidge_lite
from aidge_lite.errors import AidgeLiteError
from aidge_lite.export_onnx import export_qdq
from aidge_lite.interp.quant_common import AccumulatorOverflowWarning
from aidge_lite.ir import OpType
from aidge_lite.target import PROFILES
from aidge_lite.models import datasets, zoo

MODELS = ("mnist8", "lenet", "resnet_tiny", "inception_tiny")
BATCH = 500
RESULTS = Path(__file__).resolve().parent / "results" / "qdq_agreement.md"
GOL = ort.GraphOptimizationLevel
# name -> (graph optimisation level, session config entries)
CONFIGS = {
    "disabled": (GOL.ORT_DISABLE_ALL, {}),
    "enabled": (GOL.ORT_ENABLE_ALL, {}),
    "enabled+x64quantprecision": (GOL.ORT_ENABLE_ALL, {"session.x64quantprecision": "1"}),
}


@dataclass
class Row:
    model: str
    profile: str
    config: str
    elements: int = 0
    mismatches: int = 0
    max_diff: int = 0
    argmax_agree: float = float("nan")
    ort_acc: float = float("nan")
    our_acc: float = float("nan")
    note: str = ""
    fused: str = ""
    seconds: float = 0.0


@dataclass
class Case:
    model: str
    profile: str
    rows: list = field(default_factory=list)
    diagnosis: list = field(default_factory=list)
    error: str = ""
    variant: str = ""
    overflow: str = ""


# ----------------------------------------------------------------------------- helpers
def session(model: onnx.ModelProto, config: str) -> ort.InferenceSession:
    level, entries = CONFIGS[config]
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    for key, value in entries.items():
        so.add_session_config_entry(key, value)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def fused_ops(model: onnx.ModelProto, config: str) -> str:
    """Integer kernels onnxruntime put in the optimised graph (QLinearConv, QGemm, ...)."""
    import tempfile

    level, entries = CONFIGS[config]
    if level == GOL.ORT_DISABLE_ALL:
        return "-"
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = GOL.ORT_ENABLE_EXTENDED  # same QDQ fusions, no NCHWc layout
        so.log_severity_level = 3
        for key, value in entries.items():
            so.add_session_config_entry(key, value)
        so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    quant = sorted({o for o in ops if o.startswith("QLinear") or o in ("QGemm", "MatMulInteger", "ConvInteger")})
    return ", ".join(quant) or "none"


def run_ort(sess, input_name, x) -> np.ndarray:
    return np.concatenate([sess.run(None, {input_name: x[s:s + BATCH]})[0] for s in range(0, len(x), BATCH)])


def run_ours(q, x):
    out = q.outputs[0]
    return np.concatenate([np.asarray(aidge_lite.run(q, x[s:s + BATCH], engine="integer")[out])
                           for s in range(0, len(x), BATCH)]).astype(np.int64)


def quantize(name, profile, calib, **options):
    kw = dict(nb_bits=8, target=PROFILES[profile])
    kw.update(options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return aidge_lite.quantize_network(zoo.load(name), calib, **kw)


# ------------------------------------------------------------------------- diagnosis
def diagnose(q, model, x, ours, theirs, limit=8):
    """For mismatching samples (ORT without optimisations): the first tensor where ORT's
    integers leave ours, and how close our exact pre-rounding value is to a tie there."""
    bad = np.unique(np.nonzero((ours != theirs).reshape(len(x), -1))[0])[:limit]
    if not len(bad):
        return []
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    order = [n for n in q.topo_order() if n.op is not OpType.CONSTANT and n.op is not OpType.INPUT]
    tensors = [n.name for n in order if any(o.output[0] == n.name + "/q" for o in probe.graph.node)]
    producer = {o.output[0]: o for o in probe.graph.node}
    elem = {i.name: i.data_type for i in probe.graph.initializer}
    for t in tensors:  # the integer output of each QuantizeLinear: its zero point's type
        probe.graph.output.append(helper.make_tensor_value_info(
            t + "/q", elem[producer[t + "/q"].input[2]], None))
    sess = session(probe, "disabled")
    xb = x[bad]
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {q.inputs[0]: xb})))
    mine = aidge_lite.run(q, xb, engine="integer", intermediates=True)
    lines = []
    for k, sample in enumerate(bad):
        for t in tensors:
            a = np.asarray(mine[t]).astype(np.int64)[k]
            b = got[t + "/q"].astype(np.int64)[k]
            if np.array_equal(a, b):
                continue
            idx = tuple(np.argwhere(a != b)[0])
            node = q.node(t)
            exact = _exact_value(q, node, mine, k, idx)
            lines.append(
                f"sample {int(sample)}: first divergence at `{t}` ({node.op.value}"
                f"{', ' + node.attrs.get('role', '') if node.op is OpType.QUANTIZER else ''}) element "
                f"{list(map(int, idx))}: ours {int(a[idx])}, ORT {int(b[idx])}, "
                f"{int(np.count_nonzero(a != b))} element(s) differ; exact value before rounding {exact}"
            )
            break
    return lines


def _exact_value(q, node, mine, k, idx):
    """Our exact pre-rounding value of one element (float64 / exact rational), as text."""
    src = np.asarray(mine[node.inputs[0]])[k]
    if node.op is OpType.QUANTIZER:
        acc = float(src[idx])
        attrs = node.attrs
        c = idx[0] if len(idx) else 0
        if attrs.get("mode", "float") == "int":
            m = int(np.ravel(attrs["multiplier"])[c if np.size(attrs["multiplier"]) > 1 else 0])
            s = int(np.ravel(attrs["shift"])[c if np.size(attrs["shift"]) > 1 else 0])
            value = acc * m / 2.0 ** s
            return f"{int(acc)} * {m} / 2^{s} = {value!r} (distance to the tie {abs(abs(value) % 1 - 0.5):.3g})"
        if attrs.get("mode") == "gemmlowp":  # TFLite convention: M * 2^(shift - 31), shift + = left
            m = int(np.ravel(attrs["multiplier"])[c if np.size(attrs["multiplier"]) > 1 else 0])
            s = int(np.ravel(attrs["shift"])[c if np.size(attrs["shift"]) > 1 else 0])
            value = acc * m * 2.0 ** (s - 31)
            return (f"{int(acc)} * {m} * 2^({s} - 31) = {value!r}, gemmlowp double rounding "
                    f"(distance to the tie {abs(abs(value) % 1 - 0.5):.3g})")
        scale = float(np.ravel(attrs["scale"])[c if np.size(attrs["scale"]) > 1 else 0])
        value = acc * scale
        return f"{acc:.0f} * {scale!r} = {value!r} (distance to the tie {abs(abs(value) % 1 - 0.5):.3g})"
    if node.op in (OpType.AVGPOOL, OpType.GLOBAL_AVGPOOL):
        return "(integer pool: sum / count; see the pool's window)"
    return "(not a rounding op)"


# ------------------------------------------------------------------------------ main
def measure(name, profile, data, limit, with_diagnosis=True, variant="", **options) -> Case:
    case = Case(name, profile, variant=variant)
    x = data.test_x[:limit].astype(np.float32)
    y = data.test_y[:limit]
    try:
        q = quantize(name, profile, data.calib_x.astype(np.float32), **options)
        model = export_qdq(q, batch_dim="N")
    except (AidgeLiteError, FileNotFoundError, ValueError) as exc:
        case.error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        return case
    out = q.outputs[0]
    factor = np.asarray(q.meta["output_scale"][out], np.float64)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = run_ours(q, x)
    overflows = [w for w in caught if issubclass(w.category, AccumulatorOverflowWarning)]
    if overflows:  # saturate / wrap targets: ORT's int32 kernels and float path do neither
        case.overflow = f"{len(overflows)} accumulator overflow warning(s) in our engine"
    our_time = time.perf_counter() - t0
    our_acc = float(np.mean(ours.argmax(1) == y))
    for config in CONFIGS:
        row = Row(name, profile, config, our_acc=our_acc)
        try:
            t0 = time.perf_counter()
            sess = session(model, config)
            yo = run_ort(sess, q.inputs[0], x)
            row.seconds = time.perf_counter() - t0
            row.fused = fused_ops(model, config)
        except Exception as exc:  # an ORT failure is a result too
            row.note = f"ORT failed: {str(exc).splitlines()[0][:160]}"
            case.rows.append(row)
            continue
        theirs = np.rint(yo.astype(np.float64) * factor).astype(np.int64)
        diff = theirs != ours
        row.elements = int(diff.size)
        row.mismatches = int(diff.sum())
        row.max_diff = int(np.abs(theirs - ours).max())
        row.argmax_agree = float(np.mean(theirs.argmax(1) == ours.argmax(1)))
        row.ort_acc = float(np.mean(yo.argmax(1) == y))
        case.rows.append(row)
        if config == "disabled" and row.mismatches and with_diagnosis:
            case.diagnosis = diagnose(q, model, x, ours, theirs)
    print(f"  [{name} / {profile} {variant}] our engine {our_time:.1f}s", file=sys.stderr)
    return case


def machine_info() -> list[str]:
    cpu = platform.processor() or "?"
    flags = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and cpu in ("?", "x86_64", ""):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("sse4_1", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
           if f in flags]
    import numba

    return [
        f"- CPU: {cpu}; {os.cpu_count()} logical cores; ISA: {', '.join(isa) or '?'}"
        f"{' (no VNNI)' if flags and not flags & {'avx512_vnni', 'avx_vnni'} else ''}",
        f"- Python {platform.python_version()}, NumPy {np.__version__}, numba {numba.__version__}, "
        f"onnx {onnx.__version__}, onnxruntime {ort.__version__} (CPUExecutionProvider), "
        f"aidge_lite {aidge_lite.__version__}; {platform.platform()}",
    ]


def pct(v):
    return "n/a" if v != v else f"{100 * v:.2f}%"


# Extra quantization options measured on a few models with the "onnx" profile.
VARIANTS = {
    "per_channel": {"per_channel": True},
    "single_shift": {"single_shift": True},
    "optimize_signs": {"optimize_signs": True},
    "4 bits": {"nb_bits": 4},
    "12 bits (int16 QDQ)": {"nb_bits": 12},
}
VARIANT_MODELS = ("mnist8", "resnet_tiny")


def saturation_probe(seed: int = 0) -> dict[str, float]:
    """Fraction of wrong (unclipped) outputs of one QDQ Conv (int8 activations, 8 x 5 x 5 window)
    under each ORT configuration, with 8-bit weights (|w| <= 127) and with 7-bit ones
    (|w| <= 63): u8s8 kernels that sum pairs of u8 x s8 products in int16
    (VPMADDUBSW, AVX2 / AVX-512 without VNNI) saturate only with the former."""
    from onnx import TensorProto, numpy_helper

    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (4, 8, 12, 12)).astype(np.float32)
    result = {}
    for label, wmax in (("8-bit weights", 127), ("7-bit weights", 63)):
        w = rng.integers(-wmax, wmax + 1, (16, 8, 5, 5)).astype(np.int8)
        inits = [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                 numpy_helper.from_array(np.array(0, np.int8), "z8"),
                 numpy_helper.from_array(w, "w"),
                 numpy_helper.from_array(np.array(1.0, np.float32), "sw"),
                 numpy_helper.from_array(np.array(0, np.int8), "zw"),
                 numpy_helper.from_array(np.array(2048.0, np.float32), "sy")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "one", "z8"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "one", "z8"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"]),
                 helper.make_node("Conv", ["xd", "wd"], ["c"]),
                 # int8 output (QLinearConv needs it) at scale 2^11, exact in float32
                 helper.make_node("QuantizeLinear", ["c", "sy", "z8"], ["yq"]),
                 helper.make_node("DequantizeLinear", ["yq", "sy", "z8"], ["y"])]
        g = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
        model.ir_version = 10
        exact = session(model, "disabled").run(None, {"x": x})[0]
        inside = np.abs(exact) < 127 * 2048  # not clipped by the int8 output
        for config in CONFIGS:
            got = session(model, config).run(None, {"x": x})[0]
            result[f"{label}, {config}"] = float(np.mean(got[inside] != exact[inside]))
    return result


def _table(cases, variant_column=False) -> list[str]:
    head = "| model | " + ("variant | " if variant_column else "") + "profile | ORT config | mismatching elements | rate " \
           "| max abs diff | argmax agreement | ORT accuracy | our accuracy | ORT integer kernels |"
    cols = head.count("|") - 1
    lines = [head, "|" + "---|" * 3 + ("---|" if variant_column else "") + "---:|" * 6 + "---|"]
    for case in cases:
        lead = f"| {case.model} | " + (f"{case.variant} | " if variant_column else "")
        if case.error:
            lines.append(lead + f"{case.profile} | - | not measured: {case.error} |" + " |" * (cols - 4 - variant_column))
            continue
        for r in case.rows:
            if r.note:
                lines.append(lead + f"{r.profile} | {r.config} | {r.note} |" + " |" * (cols - 5 - variant_column))
                continue
            lines.append(
                lead + f"{r.profile} | {r.config} | {r.mismatches} / {r.elements} | "
                f"{r.mismatches / r.elements:.2e} | {r.max_diff} | {pct(r.argmax_agree)} | "
                f"{pct(r.ort_acc)} | {pct(r.our_acc)} | {r.fused} |"
            )
    return lines


def _summary(cases, config, profiles) -> str:
    rows = [r for c in cases for r in c.rows if r.config == config and r.profile in profiles and not r.note]
    if not rows:
        return "n/a"
    bad = sum(r.mismatches for r in rows)
    total = sum(r.elements for r in rows)
    return f"{bad} / {total} ({bad / total:.2e})"


def render(cases, variants, probe, limit, elapsed) -> str:
    lines = [
        "# ONNX QDQ export: onnxruntime vs our integer engine",
        "",
        "Generated by `python -m bench.qdq_agreement` "
        f"({time.strftime('%Y-%m-%d %H:%M')}, {elapsed:.0f} s).",
        "",
        *machine_info(),
        "",
        "Each model is quantized at 8 bits with each profile of `aidge_lite.target.PROFILES`"
        " (1,000 calibration images), exported with `export_qdq(q, batch_dim=\"N\")` (opset 21;"
        f" the symbolic batch dim lets ORT run batches of {BATCH}, mnist-8 declaring batch 1),"
        f" and run by onnxruntime on the first {limit} MNIST test images. ORT's float output y is"
        " brought back to integers as round(y * F_out) and compared element by element (10 logits"
        " per image) with `aidge_lite.run(q, x, engine=\"integer\")`. Accuracies are top-1 on"
        " the same images.",
        "",
        "ORT configurations: `disabled` = `ORT_DISABLE_ALL` (every DequantizeLinear / float op /"
        " QuantizeLinear runs as written, in float32); `enabled` = `ORT_ENABLE_ALL` (the default:"
        " DQ -> op -> Q groups fused into QLinearConv / QGemm / ... integer kernels);"
        " `enabled+x64quantprecision` = `ORT_ENABLE_ALL` plus the session config entry"
        " `session.x64quantprecision=1` (see the analysis).",
        "",
        "## Models x profiles",
        "",
        *_table(cases),
    ]
    overflow = [c for c in [*cases, *variants] if c.overflow]
    lines += ["", "Accumulator overflows in our engine (profiles that saturate or wrap): " + (
        "; ".join(f"{c.model} / {c.profile}{' / ' + c.variant if c.variant else ''}: {c.overflow}"
                  for c in overflow) if overflow else "none on these images.")]
    if variants:
        lines += ["", "## Other quantization options (profile `onnx`)", "", *_table(variants, True)]
    lines += ["", "## Saturation probe", "",
              "One QDQ Conv (random int8 activations in [-128, 127], 8 input channels, 5x5 kernel, int8"
              " output at scale 2^11), fraction of the unclipped outputs that differ from the exact"
              " result (`disabled`: float32 sums of integer products, exact here):",
              "", "| weights, ORT config | wrong outputs |", "|---|---:|"]
    lines += [f"| {k} | {100 * v:.1f}% |" for k, v in probe.items()]
    lines += ["", "## Summary: mismatching logits over all models, per profile", "",
              "| profile (rounding, rescale) | " + " | ".join(CONFIGS) + " |",
              "|---|" + "---:|" * len(CONFIGS)]
    for p, target in PROFILES.items():
        cells = [_summary(cases, config, [p]) for config in CONFIGS]
        lines.append(f"| {p} ({target.rounding}, {target.rescale}) | " + " | ".join(cells) + " |")
    gaps = [100 * (r.ort_acc - r.our_acc) for c in [*cases, *variants] for r in c.rows
            if r.config == "enabled" and not r.note and r.mismatches > r.elements // 2]
    lines += ["", "## Analysis", ""]
    lines += [a.replace("{GAPS}", f"{min(gaps):+.2f} to {max(gaps):+.2f}" if gaps else "n/a") for a in ANALYSIS]
    diag = [c for c in [*cases, *variants] if c.diagnosis]
    if diag:
        lines += ["", "## Where the `disabled` mismatches start", "",
                  "For up to 8 mismatching images per case: the first tensor (topological order) whose"
                  " integers differ between ORT (the QuantizeLinear output) and our engine, and our exact"
                  " value there before rounding.", ""]
        for c in diag:
            lines += [f"**{c.model} / {c.profile}{' / ' + c.variant if c.variant else ''}**", ""]
            lines += [f"- {d}" for d in c.diagnosis]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


ANALYSIS = [
    "- **`enabled` (ORT's default) is not usable as a bit-exact reference on this CPU.** The fused"
    " QLinearConv / QGemm run MLAS's x64 8-bit GEMM kernels, which on CPUs without VNNI"
    " multiply-add pairs of u8 x s8 products into a saturating int16 (VPMADDUBSW; an int8"
    " activation is offset to uint8 first): 255 x 127 x 2 > 32767, so accumulators are silently"
    " wrong as soon as weights use 8 bits. The saturation probe above isolates it (8-bit weights wrong, 7-bit weights"
    " exact). Almost every logit differs; ORT's accuracy minus ours: {GAPS} points (4-bit"
    " weights do not saturate, and 12-bit models are not fused: int16 QDQ stays float). This is documented onnxruntime behaviour (the usual workaround"
    " is 7-bit weights, `reduce_range`); it depends on the CPU: on a VNNI CPU `enabled` should"
    " behave like `enabled+x64quantprecision`.",
    "- **`session.x64quantprecision=1`** makes ORT convert those weights to uint8 (u8u8 kernels,"
    " no saturation) while keeping the fusion. The integer kernels then compute the accumulator"
    " exactly and requantize with round_half_even(fl32(fl32(acc) * fl32(s_x * s_w / s_y))). The"
    " export derives every float32 scale along the graph the way ORT combines them"
    " (s_acc = fl32(s_x * s_w), s_y = fl32(s_acc / m)), so the multiplier ORT uses is the float32"
    " nearest to our multiplier m, and m itself when m is a power of two (shift rescales,"
    " `single_shift`): exact ties stay exact ties. (With scales and zero points shared between"
    " weights, this ORT option fails at session creation with \"Attempt to replace the existing"
    " tensor\"; the export gives each weight and bias its own.)",
    "- **Remaining mismatches with half-even rounding** are near ties: our exact value (float64"
    " multiplier on an exact int64 accumulator) lies within float32 error of k + 1/2 and ORT's"
    " float32 arithmetic (the dequantized Conv / Gemm sums in `disabled`, the float32 multiplier"
    " and product in the fused kernels) lands on the other side. The diagnosis below shows the"
    " first divergent element with its exact value. They are rare at 8 bits and grow with the"
    " integer range (12 bits: larger integers, same float32 precision). Per-channel weights"
    " share one output scale, so their fused multipliers carry a few more float32 roundings"
    " (a few more near ties).",
    "- **`disabled` does not keep exact ties either**: the float32 Conv / Gemm on dequantized"
    " tensors rounds every product q_x * s_x * q_w * s_w and partial sum, so an exact tie"
    " round(acc / 2^k) of a power-of-two rescale (`single_shift`, `mcu-shift`) lands on either"
    " side (compare mnist8 / single_shift `disabled` and `enabled+x64quantprecision`).",
    "- **`tflite` rounds twice** (gemmlowp: SaturatingRoundingDoublingHighMul, ties toward +inf,"
    " then RoundingDivideByPOT), as TFLite does; ONNX rounds once. Values whose exact product lies"
    " within 2^-(r+1) of a half (r = -shift, the final right shift) can round differently (a fraction of a percent per requantized"
    " tensor, see tests/ptq/test_gemmlowp_rescale.py), and each difference propagates to later"
    " layers, so `tflite` mismatches on more logits than the single-rounding profiles.",
    "- **Other profiles mismatch on exact ties**, as expected: ONNX QuantizeLinear rounds half to"
    " even, `default` / `wrap32` round half away from zero and `mcu-shift` half up. With"
    " a float64 multiplier (`default`, `wrap32`) or a Q31 fixed-point one (`Target(rescale="
    "\"fixed_point\")`) exact ties are almost impossible, so they agree like `onnx`; with a"
    " power-of-two rescale (`mcu-shift`,"
    " round(acc / 2^k)) ties are frequent and every tie can differ (the diagnosis shows values"
    " like -19.5 rounded to -19 by us, -20 by ORT). `mcu-shift` and `wrap32` saturate or wrap"
    " int32 accumulators, which ORT does not reproduce; see the overflow line under the table.",
    "- **Integer pools** are exported as DequantizeLinear(scale 1) -> AveragePool ->"
    " QuantizeLinear(scale 1) -> DequantizeLinear(s): ORT averages the integers themselves, so a"
    " tie of sum / count is an exact tie in float32 too. (Pooling the dequantized values x * s"
    " rounds each product and breaks ties randomly; `tests/test_export_onnx.py` checks the 2x2"
    " pool tie by tie.)",
    "- **Requantizing an int8 tensor** (a residual / join QUANTIZER reading a quantized tensor)"
    " is DequantizeLinear -> QuantizeLinear, which ORT runs in float32 (no fused kernel): with a"
    " non power-of-two multiplier such as `single_shift`'s compensated m / 2^k, exact ties there"
    " can fall either way (resnet_tiny / single_shift).",
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--variant-models", default=",".join(VARIANT_MODELS),
                        help="models measured with VARIANTS (empty: none)")
    parser.add_argument("--limit", type=int, default=4000)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    data = datasets.mnist()
    t0 = time.perf_counter()

    def report(case):
        for r in case.rows:
            print(f"{case.model:15s} {case.variant or '-':20s} {case.profile:10s} {r.config:26s} "
                  + (r.note or f"{r.mismatches:6d}/{r.elements} argmax {pct(r.argmax_agree)} "
                     f"ORT {pct(r.ort_acc)} ours {pct(r.our_acc)} max|d| {r.max_diff}"), flush=True)
        if case.error:
            print(f"{case.model:15s} {case.variant or '-':20s} {case.profile:10s} {case.error}", flush=True)
        return case

    cases = [report(measure(name, profile, data, args.limit))
             for name in args.models.split(",") for profile in args.profiles.split(",")]
    variants = [report(measure(name, "onnx", data, args.limit, variant=label, **options))
                for name in filter(None, args.variant_models.split(","))
                for label, options in VARIANTS.items()]
    probe = saturation_probe()
    text = render(cases, variants, probe, args.limit, time.perf_counter() - t0)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
