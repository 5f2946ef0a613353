"""`aidge-lite quantize`: quantize, report both engines and write OUT in one atomic step.

OUT/model.npz, report.json, report.md and the PNG plots are written into a
temporary sibling folder, then swapped in whole (`aidge_lite.atomic`): an
interrupted run leaves the previous OUT or none, and two runs writing one OUT
leave one complete output. An existing OUT holding files that quantize does not
write is refused, since replacing it would delete them.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from .cli import _load_inputs, _pct, _progress, _warn_integer_data
from .cli_data import UsageError
from .graph_text import table


def _step(label: str, progress: bool):
    """A step line on stdout (stderr keeps errors to one line); without progress bars (not a
    terminal) a line every 8 s while the step runs."""
    import contextlib

    from aidge_lite.progress import heartbeat, note_output

    print(f"{label} ...", flush=True)
    note_output()
    return contextlib.nullcontext() if progress else heartbeat(label, every=8.0, stream=sys.stdout)


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


QUANTIZE_FILES = ("model.npz", "report.json", "report.md", "sqnr.png", "histograms.png")


def _output_dir(text: str) -> Path:
    out = Path(text)
    _check_output_dir(out)
    return out


def _check_output_dir(out: Path) -> None:
    """OUT is replaced as a whole (`aidge_lite.atomic`): refuse one holding anything else than
    a previous quantize output, so no user file is ever deleted."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"-o {out}: exists and is not a directory")
    if not out.exists():
        return
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise UsageError(f"-o {out}: is the current folder or holds it; give a sub-folder (e.g. -o out)")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in QUANTIZE_FILES)
    if foreign:
        listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UsageError(f"-o {out}: holds files quantize does not write ({listed}); OUT is replaced "
                         "as a whole: give a new folder or a previous quantize output")


def cmd_quantize(args) -> int:
    from aidge_lite.errors import AccumulatorOverflowError

    try:
        return _quantize(args)
    except AccumulatorOverflowError as exc:
        if exc.bits < 64:
            exc.add_note("(a wider accumulator holds it: --acc-bits 64, or --target PROFILE,acc_bits=64 "
                         "with a profile whose rescale is not gemmlowp, e.g. default or onnx)")
        raise


def _quantize(args) -> int:
    import aidge_lite
    from aidge_lite import report as rep
    from aidge_lite import serialize
    from aidge_lite.cli_target import quantize_target

    out = _output_dir(args.output)
    target, args.target = quantize_target(args)  # args.target: the label printed and reported
    print(f"loading {args.model} and {args.data or 'its data set'} ...", flush=True)
    graph, zoo_model, data = _load_inputs(args)
    if graph.meta.get("quantized"):
        raise UsageError(f"{args.model}: already quantized; quantize a float model (.onnx or zoo name)")
    progress = _progress(args)
    calib_x = data.calib_x[rep.spread(len(data.calib_x), args.calib_limit)]
    idx = rep.spread(len(data.test_x), args.limit)
    test_x = data.test_x[idx]
    test_y = None if data.test_y is None else data.test_y[idx]
    _warn_integer_data(graph, zoo_model, data)
    chosen = [args.preset, args.clipping, args.signs, args.single_shift, args.cle, args.per_channel,
              args.bias_correction, args.spec]
    if args.bits < 8 and not args.no_quant and all(v is None for v in chosen):
        print(f"hint: below 8 bits, --preset best (mse clipping, signs, per-channel, bias correction) is "
              "far more accurate on every zoo model (4 bits: mobilenet_tiny 24 % -> 97 %, mnist8 97.7 % -> "
              "98.9 %; bench/results/accuracy_preset.md)")
    with _step(f"quantizing {graph.name} to {args.bits} bits on {len(calib_x)} calibration samples", progress):
        qgraph = aidge_lite.quantize_network(
            graph, _calibration_stream(calib_x, args.batch_size, progress), nb_bits=args.bits,
            preset=args.preset, no_quant=args.no_quant, clipping=args.clipping, cle=args.cle,
            optimize_signs=args.signs, single_shift=args.single_shift, per_channel=args.per_channel,
            bias_correction=args.bias_correction, **_sample_caps(args),
            target=target,
            spec=args.spec, batch_size=args.batch_size,
            exclude=args.exclude or None, fallback=args.fallback,
        )
    if args.spec:  # zero points: the report in TFLite's conventions
        from aidge_lite import report_zp as rep
    with _step(f"report: both engines on {len(test_x)} test samples, clipping and SQNR on the "
               "calibration set", progress):
        report = rep.quantization_report(graph, qgraph, calib_x, test_x, test_y, batch_size=args.batch_size,
                                         progress=progress, sqnr_samples=args.sqnr_samples)
    report.update(model_spec=args.model, data=data.name, target_profile=args.target)
    from aidge_lite.atomic import atomic_folder

    # built in a temporary sibling, then swapped in whole: an interrupted run leaves the old OUT or none
    with atomic_folder(out, check=_check_output_dir) as tmp:
        serialize.save(qgraph, tmp / "model.npz")
        rep.write_json(report, tmp / "report.json")
        images = {} if args.no_plots or args.spec else _write_plots(report, tmp)
        rep.write_markdown(report, tmp / "report.md", images=images)
    written = ["model.npz", "report.json", "report.md", *images.values()]
    _print_quantize_summary(graph, args, report, calib_x, data.describe(len(test_x)), out)
    print(f"wrote {', '.join(str(out / name) for name in written)}")
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
    clipped = sum(l.get("clipped", 0) for l in report["layers"])
    zeroed = sum(l.get("zeroed_unsigned", 0) for l in report["layers"])
    print(f"values clipped on the calibration set: {clipped:,} (per layer in {out / 'report.md'})"
          + (f"; not counted: {zeroed:,} values below 0 that unsigned quantizers set to 0 (the ReLU's work)"
             if zeroed else ""))
    measured = [l for l in worst_first(report["layers"]) if l.get("sqnr_db") is not None]
    if measured:
        worst = measured[0]
        print(f"worst layer SQNR: {sqnr_text(worst)} dB at '{worst['name']}' ({worst['role']})")
    for text in zeroed_text(report):
        print(f"warning: {text}")


def _sample_caps(args) -> dict:
    """`bias_correction_samples` / `clipping_samples` when the option was given ("all": None);
    the library defaults for the others."""
    caps = {}
    for option in ("bias_correction_samples", "clipping_samples"):
        chosen = getattr(args, option, None)
        if chosen is not None:
            caps[option] = None if chosen == "all" else chosen
    return caps
