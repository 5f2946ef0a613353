"""`aidge-lite`: inspect, evaluate and quantize models from the command line.

    aidge-lite info MODEL
    aidge-lite eval MODEL [--data mnist|digits] [--engine reference|integer]
    aidge-lite quantize MODEL [--data mnist|digits] --bits N [options] -o OUT

MODEL is an ONNX file, a saved graph (``.npz``, see `aidge_lite.serialize`)
or a zoo model name (``mnist8``, ``lenet``, ...; see `models.zoo`). ``--data``
defaults to the zoo model's data set. MNIST: calibration = the 1,000
calibration images, test = the 4,000 test images; digits: calibration = the
train split, test = the test split. ``--limit N`` evaluates on N test images
spread evenly over the split (the MNIST split is sorted by class).

Errors (bad arguments, missing or damaged files, unsupported options) print
one line on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

DATASETS = ("mnist", "digits")
CLIPPINGS = ("max", "mse", "aa", "kl")
PROG = "aidge-lite"
_ALIASES = {"mnist-8": "mnist8"}


class UsageError(Exception):
    """Bad command-line arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump; main() reports it
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# ------------------------------------------------------------------ helpers
def zoo_name(spec: str) -> str | None:
    """The zoo model `spec` names, if it is not an existing path."""
    if Path(spec).exists():
        return None
    from models import zoo

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
        return aidge_lite.load_onnx(path), None
    from models import zoo

    name = _ALIASES.get(spec.lower(), spec)
    if name in zoo.NAMES:
        return aidge_lite.load_onnx(zoo.path(name)), name
    if path.suffix.lower() in (".onnx", ".npz") or "/" in spec or "\\" in spec:
        raise FileNotFoundError(f"model file '{spec}' does not exist")
    raise FileNotFoundError(f"model '{spec}' is neither a file nor a zoo model "
                            f"(zoo: {', '.join(zoo.NAMES)})")


def resolve_dataset(data: str | None, zoo_model: str | None) -> str:
    if data is not None:
        return data
    if zoo_model is not None:
        from models import zoo

        return zoo.dataset(zoo_model)
    raise UsageError("--data is required for a model that is not in the zoo (mnist or digits)")


def dataset_for(spec: str, data: str | None) -> str:
    """--data, or the zoo model's data set; a missing model is reported before a missing --data."""
    if data is not None:
        return data
    name = zoo_name(spec)
    if name is None and not Path(spec).exists():
        load_model(spec)  # raises the "not found" error
    return resolve_dataset(None, name)


def load_data(name: str):
    """(calib_x, test_x, test_y) of data set `name` (arrays as the data set gives them)."""
    from models import datasets

    if name == "mnist":
        split = datasets.mnist()
    elif name == "digits":
        split = datasets.digits()
    else:
        raise UsageError(f"unknown data set '{name}' (choose from {', '.join(DATASETS)})")
    return split.calib_x, split.test_x, split.test_y


def subset(n: int, limit: int | None) -> np.ndarray:
    """`limit` indices spread evenly over range(n) (all of them when limit is None)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def table(headers, rows) -> str:
    """A markdown table with padded columns."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


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
    label = f" (zoo model '{zoo_model}')" if zoo_model else ""
    print(f"Model: {graph.name}{label}")
    meta = graph.meta
    if meta.get("quantized"):
        opts = meta.get("options", {})
        kind = "integer" if meta.get("integer") else "no_quant (scales only)"
        print(f"Quantized: {meta.get('nb_bits')} bits, {kind}, options {json.dumps(opts)}, "
              f"target {json.dumps(meta.get('target'))}")
    else:
        print("Quantized: no (float graph)")
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


def cmd_eval(args) -> int:
    from aidge_lite.evaluate import accuracy

    data = dataset_for(args.model, args.data)  # before the (slower) model load
    graph, _ = load_model(args.model)
    _, test_x, test_y = load_data(data)
    idx = subset(len(test_x), args.limit)
    acc = accuracy(graph, test_x[idx], test_y[idx], engine=args.engine, batch_size=args.batch_size,
                   progress=args.progress)
    kind = "quantized" if graph.meta.get("quantized") else "float"
    print(f"{kind} accuracy ({args.engine} engine) of {graph.name} on {len(idx)} {data} test images: "
          f"{_pct(acc)}")
    return 0


def cmd_quantize(args) -> int:
    import aidge_lite
    from aidge_lite import report as rep
    from aidge_lite import serialize
    from aidge_lite.target import PROFILES

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a directory")
    data = dataset_for(args.model, args.data)
    graph, _ = load_model(args.model)
    if graph.meta.get("quantized"):
        raise UsageError(f"{args.model}: already quantized; quantize a float model (.onnx or zoo name)")
    calib_x, test_x, test_y = load_data(data)
    calib_x = calib_x[subset(len(calib_x), args.calib_limit)]
    idx = subset(len(test_x), args.limit)
    test_x, test_y = test_x[idx], test_y[idx]
    calibration = lambda: (calib_x[i:i + args.batch_size].astype(np.float32)  # noqa: E731
                           for i in range(0, len(calib_x), args.batch_size))
    qgraph = aidge_lite.quantize_network(
        graph, calibration, nb_bits=args.bits, no_quant=args.no_quant, clipping=args.clipping,
        cle=args.cle, optimize_signs=args.signs, single_shift=args.single_shift,
        per_channel=args.per_channel, target=PROFILES[args.target], batch_size=args.batch_size,
    )
    report = rep.quantization_report(graph, qgraph, calib_x, test_x, test_y,
                                     batch_size=args.batch_size, progress=args.progress)
    report["model_spec"] = args.model
    report["data"] = data
    report["target_profile"] = args.target
    out.mkdir(parents=True, exist_ok=True)
    serialize.save(qgraph, out / "model.npz")
    rep.write_json(report, out / "report.json")
    rep.write_markdown(report, out / "report.md")
    acc, exact = report["accuracy"], report["bit_exact"]
    exact_text = "n/a (no_quant)" if exact is None else (
        f"{'yes' if exact['exact'] else 'NO'} ({exact['mismatches']} / {exact['elements']} elements differ)")
    print(f"{graph.name}: {args.bits} bits, {len(calib_x)} calibration / {len(test_x)} {data} test images, "
          f"target '{args.target}'")
    print(table(["float", "fake-quant", "integer", "bit-exact (integer == fake-quant)"],
                [[_pct(acc["float"]), _pct(acc["fake_quant"]), _pct(acc["integer"]), exact_text]]))
    clipped = sum(l["clipped"] for l in report["layers"])
    print(f"values clipped on the calibration set: {clipped:,} (per layer in {out / 'report.md'})")
    print(f"wrote {out / 'model.npz'}, {out / 'report.json'}, {out / 'report.md'}")
    return 0


# ------------------------------------------------------------------ parsing
def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from aidge_lite.target import PROFILES

    parser = _Parser(prog=PROG, description="Bit-exact integer reference for quantized neural networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(p, *, data=True):
        p.add_argument("model", metavar="MODEL", help="ONNX file, saved graph (.npz) or zoo model name")
        if data:
            p.add_argument("--data", choices=DATASETS, help="data set (default: the zoo model's)")
            p.add_argument("--limit", type=_positive, metavar="N",
                           help="evaluate on N test images spread over the test split")
            p.add_argument("--batch-size", type=_positive, default=500, metavar="B")
            p.add_argument("--progress", action="store_true", help="show progress bars")

    p = sub.add_parser("info", help="ops, parameters, tensor shapes")
    common(p, data=False)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("eval", help="top-1 accuracy on the test split")
    common(p)
    p.add_argument("--engine", choices=("reference", "integer"), default="reference")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("quantize", help="quantize, then report accuracy and bit-exactness")
    common(p)
    p.add_argument("--bits", type=int, required=True, metavar="N", help="bit width (2..16)")
    p.add_argument("--no-quant", action="store_true", help="keep the scales, skip rounding/clipping")
    p.add_argument("--clipping", choices=CLIPPINGS, default="max")
    p.add_argument("--signs", action="store_true", help="optimize signs (unsigned activations)")
    p.add_argument("--single-shift", action="store_true", help="power-of-two rescaling")
    p.add_argument("--cle", action="store_true", help="cross-layer equalization")
    p.add_argument("--per-channel", action="store_true", help="per-channel weight scales")
    p.add_argument("--target", choices=tuple(PROFILES), default="default", help="integer target profile")
    p.add_argument("--calib-limit", type=_positive, metavar="N",
                   help="calibrate on N images spread over the calibration split")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output directory (model.npz, report.json, report.md)")
    p.set_defaults(func=cmd_quantize)
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
