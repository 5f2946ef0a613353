"""`aidge-lite golden` and `aidge-lite export-c` (registered by `aidge_lite.cli`).

    aidge-lite golden MODEL --data FILE.npz [--samples N] -o DIR
    aidge-lite export-c MODEL -o DIR

MODEL is a quantized graph (.npz written by `quantize`) or an int8 .tflite.
"""
from __future__ import annotations

import numpy as np


def _model(spec):
    from ..cli import load_model

    graph, _ = load_model(spec)
    return graph


def cmd_golden(args) -> int:
    from ..cli_data import check_data_fits, load_data
    from . import golden

    from ..cli_data import UsageError

    if args.samples is not None and args.samples < 1:
        raise UsageError(f"--samples must be a positive integer, got {args.samples}")
    data = load_data(args.data)
    graph = _model(args.model)
    check_data_fits(graph, data)
    x = data.test_x[: args.samples] if args.samples else data.test_x
    declared = np.dtype(graph.node(graph.inputs[0]).attrs.get("dtype", "float32"))
    if declared.kind == "f":
        x = x.astype(np.float32)
    folder = golden(graph, x, args.output)
    print(f"wrote {folder}: manifest.json + .npy of {len(graph.topo_order())} nodes on {len(x)} samples")
    return 0


def cmd_export_c(args) -> int:
    from . import export_c

    graph = _model(args.model)
    result = export_c(graph, args.output)
    print(f"wrote {result.folder}: {result.summary()}")
    print(f"activation arena: {result.arena_bytes} bytes; weights and parameters: {result.weight_bytes} bytes")
    print(f"build: make -C {result.folder}  (debug dump of every layer: make -C {result.folder} debug)")
    if result.uses_float and graph.meta.get("source") == "tflite":
        print("note: a rescale is one double multiply in C, as in LiteRT's reference kernels "
              "(FULLY_CONNECTED's double-precision rescale)")
    elif result.uses_float:
        print("note: the graph's Target rescales in float64 (rescale='float'): the C code does "
              "one double multiply per rescale; quantize with --target tflite for integer-only code")
    return 0


def add_parsers(sub) -> None:
    """Register the two subcommands on the CLI's subparsers."""
    p = sub.add_parser("golden", help="every layer's integer tensors and parameters as .npy + manifest.json")
    p.add_argument("model", metavar="MODEL", help="quantized graph (.npz) or int8 .tflite")
    p.add_argument("--data", required=True, metavar="mnist|digits|FILE.npz",
                   help="inputs: a data set (its test split) or an .npz holding x")
    p.add_argument("--samples", type=int, metavar="N", help="first N samples (default: all)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="new or empty folder")
    p.set_defaults(func=cmd_golden)

    p = sub.add_parser("export-c", help="self-contained C99 project (make -C DIR) equal to the integer engine")
    p.add_argument("model", metavar="MODEL", help="quantized graph (.npz) or int8 .tflite")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="new or empty folder")
    p.set_defaults(func=cmd_export_c)
