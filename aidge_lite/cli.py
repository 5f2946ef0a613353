"""`aidge-lite`: inspect, evaluate, quantize and export models from the command line.

    aidge-lite info MODEL
    aidge-lite show MODEL [--dot FILE]
    aidge-lite eval MODEL [--data mnist|digits|FILE.npz] [--engine reference|integer]
    aidge-lite quantize MODEL [--data mnist|digits|FILE.npz] --bits N [options] -o OUT
    aidge-lite export QGRAPH.npz -o model.onnx
    aidge-lite warmup [--all]      (compile the Numba kernels ahead of time)

MODEL is an ONNX file, an int8 TFLite file (``.tflite``), a saved graph (``.npz``, see `aidge_lite.serialize`)
or a zoo model name (``mnist8``, ``lenet``, ...; see `models.zoo`). ``--data``
defaults to the zoo model's data set. MNIST: calibration = the 1,000
calibration images, test = the 4,000 test images; digits: calibration = the
train split, test = the test split. ``--limit N`` evaluates on N test images
spread evenly over the split (the MNIST split is sorted by class).

``--data FILE.npz``: array ``x`` (required; float or integer, N x the model's
input shape, finite), optional ``y`` (integer labels, length N) and, for
quantize, optional ``calib_x`` (calibration samples; default ``x``). Without
``y`` there is nothing to score: ``eval`` prints a summary of the outputs
(shape, min / mean / max, how often each class is the argmax) instead of an
accuracy, and ``quantize`` reports n/a accuracies but still the bit-exact check
and the per-layer SQNR.

``quantize -o OUT`` writes OUT/model.npz, report.json, report.md and, with
matplotlib, sqnr.png and histograms.png (see `aidge_lite.report`,
`aidge_lite.plots`). OUT is built in a temporary sibling folder and swapped in
whole (`aidge_lite.atomic`): an interrupted run leaves the previous OUT or none,
two runs writing one OUT leave one complete output; an OUT holding files that
quantize does not write is refused (they would be lost). ``--bits`` above 12
with no accumulator width given: acc_bits=64 (a note says so; gemmlowp
targets keep int32). ``export`` writes an ONNX QDQ model of an integer graph
(`aidge_lite.export_onnx.export_qdq`) with a symbolic batch dimension.

Exit status: 0; 2 for every error (bad arguments, missing or damaged files,
bad data, unsupported options, and unexpected ones), printed as one line on
stderr; 130 on Ctrl-C and 143 on SIGTERM (temporary files removed); 141,
silently, when stdout is a closed pipe (``aidge-lite show m | head -1``).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from .cli_data import UsageError, check_data_fits, load_data, resolve_dataset  # noqa: F401
from .cli_inputs import (_ALIASES, _load_inputs, _warn_integer_data,  # noqa: F401  (re-exported)
                         dataset_for, graph_kind, load_model, zoo_name)
from .graph_text import key_attrs, scale_of, table, to_dot

CLIPPINGS = ("max", "mse", "aa", "kl")
PRESETS = ("default", "best")  # aidge_lite.ptq.PRESETS (not imported: the PTQ loads lazily)
PROG = "aidge-lite"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump; main() reports it
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# --------------------------------------------------------------- formatting
def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


# ----------------------------------------------------------------- commands
def cmd_info(args) -> int:
    from aidge_lite.ir import OpType
    from aidge_lite.ir.node import META_SHAPE

    graph, zoo_model = load_model(args.model)
    nodes = graph.topo_order()
    if any(META_SHAPE not in n.meta for n in nodes if n.op is not OpType.CONSTANT):
        try:  # e.g. quantizers inserted after shape inference
            from aidge_lite.interp.shapes import infer_shapes

            shaped = graph.copy()
            infer_shapes(shaped)
            nodes = shaped.topo_order()
        except Exception:  # shapes are informative only
            pass
    constants = [n for n in nodes if n.op is OpType.CONSTANT]
    params = sum(int(np.size(n.attrs["value"])) for n in constants)
    nbytes = sum(int(np.asarray(n.attrs["value"]).nbytes) for n in constants)
    _print_model_header(graph, zoo_model)
    from aidge_lite.tensor_info import shape_text, tensor_dtypes, tensor_shapes

    onnx_path = _onnx_source(args.model, zoo_model)
    try:
        shapes = tensor_shapes(graph)
    except Exception:  # shapes are informative only
        shapes = {n.name: n.meta.get(META_SHAPE) for n in nodes}
    dtypes = tensor_dtypes(graph, onnx_path)
    for name in graph.inputs:
        node = graph.node(name)
        shape = ["N" if i == 0 or d is None else d for i, d in enumerate(node.attrs["shape"])]
        print(f"Input:  {name}  shape [{', '.join(map(str, shape))}]  {node.attrs['dtype']}")
    for name in graph.outputs:
        print(f"Output: {name}  shape {shape_text(shapes.get(name))}  {dtypes.get(name, '?')}")
    print(f"Nodes: {len(nodes)} ({len(constants)} constants), parameters: {params:,} ({nbytes:,} bytes)")
    print()
    counts = Counter(n.op.value for n in nodes)
    print(table(["op", "count"], sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
    print()
    rows = []
    for n in nodes:
        if n.op is OpType.CONSTANT:
            value = n.attrs["value"]
            rows.append([n.name, n.op.value, shape_text(np.shape(value)), np.asarray(value).dtype])
        else:
            rows.append([n.name, n.op.value, shape_text(shapes.get(n.name)), dtypes.get(n.name, "?")])
    print(table(["tensor", "op", "shape (N: batch)", "dtype"], rows))
    return 0


def _onnx_source(spec: str, zoo_model: str | None):
    """The ONNX file `spec` names (a path or a zoo model), for ONNX shape inference; else None."""
    if zoo_model is not None:
        from aidge_lite.models import zoo

        return zoo.path(zoo_model)
    path = Path(spec)
    return path if path.suffix.lower() == ".onnx" and path.is_file() else None


def _print_model_header(graph, zoo_model) -> None:
    label = f" (zoo model '{zoo_model}')" if zoo_model else ""
    print(f"Model: {graph.name}{label}")
    meta = graph.meta
    if meta.get("source") == "tflite":
        print(f"Quantized: int8 TFLite model (TFLite reference-kernel arithmetic, layout NHWC), "
              f"target {json.dumps(meta.get('target'))}")
    elif meta.get("quantized"):
        kind = "integer" if meta.get("integer") else "no_quant (scales only)"
        print(f"Quantized: {meta.get('nb_bits')} bits, {kind}, options {json.dumps(meta.get('options', {}))}, "
              f"target {json.dumps(meta.get('target'))}")
    else:
        print("Quantized: no (float graph)")


def cmd_show(args) -> int:
    from aidge_lite.ir import OpType

    graph, zoo_model = load_model(args.model)
    _print_model_header(graph, zoo_model)
    nodes = [n for n in graph.topo_order() if n.op is not OpType.CONSTANT]
    constants = len(graph) - len(nodes)
    print(f"Outputs: {', '.join(graph.outputs)}; {len(nodes)} nodes and {constants} constants "
          "(weights, biases: see `aidge-lite info`)")
    print()
    rows = [[n.name, n.op.value, ", ".join(n.inputs), key_attrs(n), scale_of(n)] for n in nodes]
    print(table(["node", "op", "inputs", "attributes", "scale"], rows))
    if args.dot:
        path = Path(args.dot)
        if path.is_dir():
            raise UsageError(f"--dot {path}: is a directory, not a file")
        from aidge_lite.atomic import write_text

        write_text(path, to_dot(graph))
        print(f"\nwrote {path} (Graphviz: `dot -Tsvg {path} -o graph.svg`)")
    return 0


def _outputs_summary(scores: np.ndarray) -> list[str]:
    """Shape, value range and argmax counts of a batch of outputs (for unlabelled data)."""
    flat = scores.reshape(len(scores), -1)
    classes = Counter(np.argmax(flat, axis=1).tolist())
    spread_text = ", ".join(f"{c}: {classes[c]}" for c in sorted(classes))
    return [f"output shape {scores.shape}, min {flat.min():.6g}, mean {flat.mean():.6g}, max {flat.max():.6g}",
            f"predicted class (argmax) counts: {spread_text}"]


def cmd_eval(args) -> int:
    from aidge_lite.evaluate import accuracy, predict
    from aidge_lite.report import spread

    from aidge_lite.cli_target import run_target

    graph, zoo_model, data = _load_inputs(args)
    target = run_target(args, graph)
    idx = spread(len(data.test_x), args.limit)
    x = data.test_x[idx]
    _warn_integer_data(graph, zoo_model, data)
    kw = dict(engine=args.engine, batch_size=args.batch_size, progress=_progress(args), target=target)
    kind = "quantized" if graph.meta.get("quantized") else "float"
    where = f"({args.engine} engine) of {graph.name} on {data.describe(len(idx))}"
    if data.test_y is None:
        print(f"{kind} outputs {where} (no labels 'y': no accuracy)")
        print("\n".join(_outputs_summary(predict(graph, x, **kw))))
        return 0
    print(f"{kind} accuracy {where}: {_pct(accuracy(graph, x, data.test_y[idx], **kw))}")
    return 0


def cmd_export(args) -> int:
    from aidge_lite.export_onnx import OPSET, export_qdq

    graph, _ = load_model(args.qgraph)
    kind = graph_kind(graph)
    if kind == "float":
        raise UsageError(f"{args.qgraph} is a float graph: quantize it first "
                         f"(`{PROG} quantize {args.qgraph} --bits 8 -o OUT`), then export OUT/model.npz")
    if kind == "no_quant":
        raise UsageError(f"{args.qgraph} is a no_quant graph (scales only, no integers): "
                         "quantize without --no-quant to export it")
    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"-o {out}: is a directory; give the .onnx file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = export_qdq(graph, out, batch_dim=args.batch_dim or None)
    ops = Counter(n.op_type for n in model.graph.node)
    factors = graph.meta.get("output_scale", {})
    print(f"wrote {out}: ONNX QDQ opset {OPSET}, {len(model.graph.node)} nodes "
          f"({ops['QuantizeLinear']} QuantizeLinear, {ops['DequantizeLinear']} DequantizeLinear)")
    zero_pointed = graph.meta.get("output_quantization", {})
    for name in graph.outputs:
        if name in zero_pointed:
            scale, zp = zero_pointed[name]
            print(f"output '{name}': float values; integers of our engine = round(value / {scale!r}) + {zp}")
        else:
            print(f"output '{name}': float values; integers of our engine = round(value * {factors.get(name)})")
    return 0


def cmd_warmup(args) -> int:
    from aidge_lite.jit import warmup

    warmup("all" if args.all else "default", samples=args.samples, progress=True, stream=sys.stdout)
    return 0


# ------------------------------------------------------------------ parsing
def _integer_at_least(minimum: int, kind: str):
    """An argparse type: an int >= `minimum`, else a one-line error naming `kind`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
        return value
    return parse


_positive = _integer_at_least(1, "positive")
_non_negative = _integer_at_least(0, "non-negative")


def _samples_or_all(text: str) -> int | str:
    """An argparse type: "all" or a positive integer."""
    return "all" if text.strip().lower() == "all" else _positive(text)


def _progress(args) -> bool:
    """--progress / --no-progress, else progress bars only on a terminal."""
    return sys.stderr.isatty() if args.progress is None else args.progress


def build_parser() -> argparse.ArgumentParser:
    from aidge_lite.cli_target import add_target_options

    parser = _Parser(prog=PROG, description="Bit-exact integer reference for quantized neural networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(p, *, data=True):
        p.add_argument("model", metavar="MODEL", help="ONNX file, int8 .tflite file, saved graph (.npz) or zoo model name")
        if data:
            p.add_argument("--data", metavar="mnist|digits|FILE.npz",
                           help="data set or .npz file with x [, y, calib_x] (default: the zoo model's)")
            p.add_argument("--limit", type=_positive, metavar="N",
                           help="evaluate on N test samples spread over the test split")
            p.add_argument("--batch-size", type=_positive, default=500, metavar="B")
            p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                           help="progress bars (default: when stderr is a terminal)")

    p = sub.add_parser("info", help="ops, parameters, tensor shapes")
    common(p, data=False)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("show", help="node table (attributes, scales); --dot writes Graphviz")
    common(p, data=False)
    p.add_argument("--dot", metavar="FILE", help="write the graph as Graphviz text, scales annotated")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("eval", help="top-1 accuracy on the test split (outputs summary without labels)")
    common(p)
    p.add_argument("--engine", choices=("reference", "integer"), default="reference")
    add_target_options(p, default_help="eval: only acc_bits and overflow change at run time; "
                                       "default: the graph's own")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("quantize", help="quantize, then report accuracy, bit-exactness, per-layer SQNR")
    common(p)
    p.add_argument("--bits", type=int, required=True, metavar="N", help="bit width (2..16)")
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="option set: best = --clipping mse --signs --per-channel --bias-correction "
                        "(the options below override it; default: max clipping, all off)")
    p.add_argument("--no-quant", action="store_true", help="keep the scales, skip rounding/clipping")
    flag = argparse.BooleanOptionalAction
    p.add_argument("--clipping", choices=CLIPPINGS, default=None, help="clipping (default: max, or the preset's)")
    p.add_argument("--signs", action=flag, default=None, help="optimize signs (unsigned activations)")
    p.add_argument("--single-shift", action=flag, default=None, help="power-of-two rescaling")
    p.add_argument("--cle", action=flag, default=None, help="cross-layer equalization")
    p.add_argument("--per-channel", action=flag, default=None, help="per-channel weight scales")
    p.add_argument("--bias-correction", action=flag, default=None,
                   help="correct each layer's mean output shift (empirical bias correction)")
    p.add_argument("--bias-correction-samples", type=_samples_or_all, default=None, metavar="N|all",
                   help="calibration samples bias correction measures: the first N (default 128), or all")
    p.add_argument("--clipping-samples", type=_samples_or_all, default=None, metavar="N|all",
                   help="calibration samples the clipping histograms are binned on: the first N (default 256), "
                        "or all (the ranges always see every sample)")
    add_target_options(p, default_help="default: the 'default' profile")
    p.add_argument("--spec", choices=("tflite",), default=None,
                   help="TFLite's int8 spec: zero points, per-channel weights, gemmlowp (--bits 8)")
    p.add_argument("--exclude", action="append", metavar="NODE|OP",
                   help="keep this node (or every node of this op type, e.g. Softmax) in float; repeatable")
    p.add_argument("--fallback", action="store_true",
                   help="keep the ops the PTQ cannot quantize in float, with a warning (else an error)")
    p.add_argument("--calib-limit", type=_positive, metavar="N",
                   help="calibrate on N samples spread over the calibration split")
    p.add_argument("--sqnr-samples", type=_non_negative, default=256, metavar="N",
                   help="calibration samples for the per-layer SQNR and histograms (0: skip; default 256)")
    p.add_argument("--no-plots", action="store_true", help="skip sqnr.png and histograms.png")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output directory (model.npz, report.json, report.md, PNG plots)")
    from aidge_lite.cli_quantize import cmd_quantize
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("export", help="ONNX QDQ model of a quantized graph (onnxruntime runs it)")
    p.add_argument("qgraph", metavar="QGRAPH", help="quantized graph (.npz written by `quantize`)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx")
    p.add_argument("--batch-dim", default="N", metavar="NAME",
                   help="symbolic batch dimension of inputs/outputs (default N; '' keeps the declared one)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("warmup", help="compile the integer kernels ahead of time (first run only; cached)")
    p.add_argument("--all", action="store_true",
                   help="also 16 bits and the tflite / mcu-shift / wrap32 targets (default: 8 and 4 bits)")
    p.add_argument("--samples", type=_positive, default=4, metavar="N",
                   help="random samples per model (at least 2; default 4)")
    p.set_defaults(func=cmd_warmup)

    from aidge_lite.export.cli_export import add_parsers as add_export_parsers
    add_export_parsers(sub)  # golden, export-c
    return parser


def main(argv=None) -> int:
    """Run one command: exit status 0; 2 on any error (one line on stderr), 130 on Ctrl-C,
    143 on SIGTERM, 141 when stdout is a closed pipe (see `aidge_lite.cli_exit`)."""
    from aidge_lite.cli_exit import run

    return run(lambda: build_parser().parse_args(argv), from_console=argv is None)


if __name__ == "__main__":
    raise SystemExit(main())
