"""`aidge-lite`: inspect, evaluate, quantize and export models from the command line.

    aidge-lite info MODEL
    aidge-lite show MODEL [--dot FILE]
    aidge-lite eval MODEL [--data mnist|digits|FILE.npz] [--engine reference|integer]
    aidge-lite quantize MODEL [--data mnist|digits|FILE.npz] --bits N [options] -o OUT
    aidge-lite export QGRAPH.npz -o model.onnx

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
`aidge_lite.plots`). ``export`` writes an ONNX QDQ model of an integer graph
(`aidge_lite.export_onnx.export_qdq`) with a symbolic batch dimension.

Errors (bad arguments, missing or damaged files, bad data, unsupported
options) print one line on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from .cli_data import UsageError, check_data_fits, load_data, resolve_dataset
from .graph_text import key_attrs, scale_of, table, to_dot

CLIPPINGS = ("max", "mse", "aa", "kl")
PROG = "aidge-lite"
_ALIASES = {"mnist-8": "mnist8"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump; main() reports it
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# ------------------------------------------------------------------- models
def zoo_name(spec: str) -> str | None:
    """The zoo model `spec` names, if it is not an existing path."""
    if Path(spec).exists():
        return None
    from aidge_lite.models import zoo

    name = _ALIASES.get(spec.lower(), spec)
    return name if name in zoo.NAMES else None


def load_model(spec: str):
    """(graph, zoo name or None) from a path (.onnx / .npz) or a zoo model name."""
    import aidge_lite
    from aidge_lite import serialize

    path = Path(spec)
    if path.exists():
        if path.is_dir():
            raise FileNotFoundError(f"{spec}: is a directory, not a model file")
        if path.suffix.lower() == ".npz":
            return serialize.load(path), None
        if path.suffix.lower() == ".tflite":
            return aidge_lite.load_tflite(path), None
        return aidge_lite.load_onnx(path), None
    from aidge_lite.models import zoo

    name = _ALIASES.get(spec.lower(), spec)
    if name in zoo.NAMES:
        return aidge_lite.load_onnx(zoo.path(name)), name
    if path.suffix.lower() in (".onnx", ".npz", ".tflite") or "/" in spec or "\\" in spec:
        raise FileNotFoundError(f"model file '{spec}' does not exist")
    raise FileNotFoundError(f"model '{spec}' is neither a file nor a zoo model "
                            f"(zoo: {', '.join(zoo.NAMES)})")


def graph_kind(graph) -> str:
    """'float', 'no_quant' (scales only) or 'integer'."""
    if not graph.meta.get("quantized"):
        return "float"
    return "integer" if graph.meta.get("integer") else "no_quant"


def dataset_for(spec: str, data: str | None) -> str:
    """--data, or the zoo model's data set; a missing model is reported before a missing --data."""
    if data is not None:
        return data
    name = zoo_name(spec)
    if name is None and not Path(spec).exists():
        load_model(spec)  # raises the "not found" error
    return resolve_dataset(None, name)


def _load_inputs(args):
    """(graph, zoo name, data) for eval / quantize; the data is checked against the model."""
    data = load_data(dataset_for(args.model, args.data))  # before the (slower) model load
    graph, zoo_model = load_model(args.model)
    check_data_fits(graph, data)
    return graph, zoo_model, data


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
    for name in graph.inputs:
        node = graph.node(name)
        shape = ["N" if i == 0 or d is None else d for i, d in enumerate(node.attrs["shape"])]
        print(f"Input:  {name}  shape [{', '.join(map(str, shape))}]  {node.attrs['dtype']}")
    shapes = {n.name: n.meta.get(META_SHAPE) for n in nodes}
    for name in graph.outputs:
        print(f"Output: {name}  shape {shapes.get(name, '?')} (batch of one)")
    print(f"Nodes: {len(nodes)} ({len(constants)} constants), parameters: {params:,} ({nbytes:,} bytes)")
    print()
    counts = Counter(n.op.value for n in nodes)
    print(table(["op", "count"], sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
    print()
    rows = []
    for n in nodes:
        if n.op is OpType.CONSTANT:
            value = n.attrs["value"]
            rows.append([n.name, n.op.value, tuple(np.shape(value)), np.asarray(value).dtype])
        else:
            rows.append([n.name, n.op.value, n.meta.get(META_SHAPE, "?"),
                         n.attrs.get("dtype", "") if n.op in (OpType.QUANTIZER, OpType.INPUT) else ""])
    print(table(["tensor", "op", "shape (batch of one)", "dtype"], rows))
    return 0


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
        path.write_text(to_dot(graph))
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

    graph, _, data = _load_inputs(args)
    idx = spread(len(data.test_x), args.limit)
    x = data.test_x[idx]
    kw = dict(engine=args.engine, batch_size=args.batch_size, progress=_progress(args))
    kind = "quantized" if graph.meta.get("quantized") else "float"
    where = f"({args.engine} engine) of {graph.name} on {data.describe(len(idx))}"
    if data.test_y is None:
        print(f"{kind} outputs {where} (no labels 'y': no accuracy)")
        print("\n".join(_outputs_summary(predict(graph, x, **kw))))
        return 0
    print(f"{kind} accuracy {where}: {_pct(accuracy(graph, x, data.test_y[idx], **kw))}")
    return 0


def _calibration_stream(x: np.ndarray, batch_size: int, progress: bool):
    """A callable returning float32 batches of `x` (re-readable: clipping reads it twice)."""
    def stream():
        chunks = (x[i:i + batch_size].astype(np.float32) for i in range(0, len(x), batch_size))
        if not progress:
            return chunks
        from tqdm import tqdm

        return tqdm(chunks, total=math.ceil(len(x) / batch_size), desc="calibration pass",
                    unit="batch", leave=False)
    return stream


def _output_dir(text: str) -> Path:
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a directory")
    return out


def cmd_quantize(args) -> int:
    import aidge_lite
    from aidge_lite import report as rep
    from aidge_lite import serialize
    from aidge_lite.target import PROFILES

    out = _output_dir(args.output)
    graph, _, data = _load_inputs(args)
    if graph.meta.get("quantized"):
        raise UsageError(f"{args.model}: already quantized; quantize a float model (.onnx or zoo name)")
    progress = _progress(args)
    calib_x = data.calib_x[rep.spread(len(data.calib_x), args.calib_limit)]
    idx = rep.spread(len(data.test_x), args.limit)
    test_x = data.test_x[idx]
    test_y = None if data.test_y is None else data.test_y[idx]
    qgraph = aidge_lite.quantize_network(
        graph, _calibration_stream(calib_x, args.batch_size, progress), nb_bits=args.bits,
        no_quant=args.no_quant, clipping=args.clipping, cle=args.cle, optimize_signs=args.signs,
        single_shift=args.single_shift, per_channel=args.per_channel,
        bias_correction=args.bias_correction,
        target=None if args.spec and args.target == "default" else PROFILES[args.target],
        spec=args.spec, batch_size=args.batch_size,
    )
    if args.spec:  # zero points: the report in TFLite's conventions
        from aidge_lite import report_zp as rep
    report = rep.quantization_report(graph, qgraph, calib_x, test_x, test_y, batch_size=args.batch_size,
                                     progress=progress, sqnr_samples=args.sqnr_samples)
    report.update(model_spec=args.model, data=data.name, target_profile=args.target)
    out.mkdir(parents=True, exist_ok=True)
    written = [serialize.save(qgraph, out / "model.npz"), rep.write_json(report, out / "report.json")]
    images = {} if args.no_plots or args.spec else _write_plots(report, out)
    written.append(rep.write_markdown(report, out / "report.md", images=images))
    _print_quantize_summary(graph, args, report, calib_x, data.describe(len(test_x)), out)
    print(f"wrote {', '.join(str(p) for p in written + [out / f for f in images.values()])}")
    return 0


def _write_plots(report: dict, out: Path) -> dict[str, str]:
    from aidge_lite import plots

    return plots.write_plots(report, out)


def _print_quantize_summary(graph, args, report, calib_x, tested: str, out: Path) -> None:
    from aidge_lite.report import sqnr_text, worst_first, zeroed_text

    acc, exact = report["accuracy"], report["bit_exact"]
    exact_text = "n/a (no_quant)" if exact is None else (
        f"{'yes' if exact['exact'] else 'NO'} ({exact['mismatches']} / {exact['elements']} elements differ)")
    print(f"{graph.name}: {args.bits} bits, {len(calib_x)} calibration / {tested}, target '{args.target}'")
    print(table(["float", "fake-quant", "integer", "bit-exact (integer == fake-quant)"],
                [[_pct(acc["float"]), _pct(acc["fake_quant"]), _pct(acc["integer"]), exact_text]]))
    clipped = sum(l["clipped"] for l in report["layers"])
    print(f"values clipped on the calibration set: {clipped:,} (per layer in {out / 'report.md'})")
    measured = [l for l in worst_first(report["layers"]) if l.get("sqnr_db") is not None]
    if measured:
        worst = measured[0]
        print(f"worst layer SQNR: {sqnr_text(worst)} dB at '{worst['name']}' ({worst['role']})")
    for text in zeroed_text(report):
        print(f"warning: {text}")


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


def _progress(args) -> bool:
    """--progress / --no-progress, else progress bars only on a terminal."""
    return sys.stderr.isatty() if args.progress is None else args.progress


def build_parser() -> argparse.ArgumentParser:
    from aidge_lite.target import PROFILES

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
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("quantize", help="quantize, then report accuracy, bit-exactness, per-layer SQNR")
    common(p)
    p.add_argument("--bits", type=int, required=True, metavar="N", help="bit width (2..16)")
    p.add_argument("--no-quant", action="store_true", help="keep the scales, skip rounding/clipping")
    p.add_argument("--clipping", choices=CLIPPINGS, default="max")
    p.add_argument("--signs", action="store_true", help="optimize signs (unsigned activations)")
    p.add_argument("--single-shift", action="store_true", help="power-of-two rescaling")
    p.add_argument("--cle", action="store_true", help="cross-layer equalization")
    p.add_argument("--per-channel", action="store_true", help="per-channel weight scales")
    p.add_argument("--bias-correction", action="store_true",
                   help="correct each layer's mean output shift (empirical bias correction)")
    p.add_argument("--target", choices=tuple(PROFILES), default="default", help="integer target profile")
    p.add_argument("--spec", choices=("tflite",), default=None,
                   help="TFLite's int8 spec: zero points, per-channel weights, gemmlowp (--bits 8)")
    p.add_argument("--calib-limit", type=_positive, metavar="N",
                   help="calibrate on N samples spread over the calibration split")
    p.add_argument("--sqnr-samples", type=_non_negative, default=256, metavar="N",
                   help="calibration samples for the per-layer SQNR and histograms (0: skip; default 256)")
    p.add_argument("--no-plots", action="store_true", help="skip sqnr.png and histograms.png")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output directory (model.npz, report.json, report.md, PNG plots)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("export", help="ONNX QDQ model of a quantized graph (onnxruntime runs it)")
    p.add_argument("qgraph", metavar="QGRAPH", help="quantized graph (.npz written by `quantize`)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.onnx")
    p.add_argument("--batch-dim", default="N", metavar="NAME",
                   help="symbolic batch dimension of inputs/outputs (default N; '' keeps the declared one)")
    p.set_defaults(func=cmd_export)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    notes = getattr(exc, "__notes__", None) or []
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    parts = [text] + [str(n) for n in notes]
    return " ".join(" ".join(parts).split())


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"{PROG}: warning: {category.__name__}: {message}", file=file or sys.stderr)


def main(argv=None) -> int:
    import warnings

    from aidge_lite.errors import AidgeLiteError

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # one line per warning, no source excerpt
            args = build_parser().parse_args(argv)
            return args.func(args)
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else 0
    except UsageError as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (AidgeLiteError, OSError, ImportError) as exc:
        kind = type(exc).__name__
        print(f"{PROG}: error: {kind}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
