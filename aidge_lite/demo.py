"""`python -m aidge_lite.demo [--out DIR]` (`make demo`): quantize mnist-8 at 8, 4 and 3 bits.

Loads the ONNX model-zoo mnist-8, measures its float accuracy on the 4,000
MNIST test images, quantizes it with the 1,000 calibration images (8 and 4
bits with the default options, then 4 and 3 bits with ``preset="best"``: MSE
clipping, unsigned ranges after ReLU, per-channel weights, bias correction),
and prints float / fake-quant / integer accuracy together with the
bit-exact check: the number of output elements on which the integer engine
(Numba kernels, int8 activations) differs from the fake-quant reference.

Every step says what it does; a step longer than 5 s prints a line every 5 s
(`aidge_lite.progress.heartbeat`), and Numba compilation announces itself
(`aidge_lite.jit`). It ends by writing the 4-bit best run's report (model.npz,
report.json, report.md and, with matplotlib, the plots) into DIR (default
``out/demo``) and printing what to try next.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

RUNS = ((8, "default", None), (4, "default", None), (4, "best", "best"), (3, "best", "best"))
REPORT_RUN = (4, "best")


def _say(text: str = "") -> None:
    from aidge_lite.progress import note_output

    print(text, flush=True)
    note_output()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aidge_lite.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/demo", help="where to write the 4-bit report (default out/demo)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print("aidge_lite demo: loading aidge_lite, mnist-8 and the MNIST images ...", flush=True)

    import numpy as np

    import aidge_lite
    from aidge_lite.cli import table
    from aidge_lite.errors import AidgeLiteError
    from aidge_lite.evaluate import accuracy, compare_engines, top1
    from aidge_lite.models import datasets, zoo
    from aidge_lite.progress import heartbeat

    elapsed = lambda: f"{time.perf_counter() - start:.0f} s"  # noqa: E731
    try:
        with heartbeat("loading"):
            graph = zoo.load("mnist8")
            data = datasets.mnist()
    except (FileNotFoundError, AidgeLiteError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    calib = data.calib_x.astype(np.float32)
    test_x = data.test_x.astype(np.float32)
    _say(f"mnist-8 ({len(graph)} nodes): {len(data.calib_x)} calibration images, "
         f"{len(data.test_x)} test images")
    with heartbeat("float accuracy"):
        float_acc = accuracy(graph, test_x, data.test_y)
    _say(f"float accuracy: {100 * float_acc:.2f}% ({elapsed()})")
    rows, kept = [], None
    for bits, label, preset in RUNS:
        step = f"{bits} bits, {label} options"
        _say(f"{step}: quantizing on {len(calib)} images ...")
        with heartbeat(f"quantizing {step}"):
            qgraph = aidge_lite.quantize_network(graph, calib, nb_bits=bits, preset=preset)
        _say(f"{step}: running the fake-quant and the integer engine on {len(test_x)} images ...")
        with heartbeat(f"both engines, {step}"):
            cmp = compare_engines(qgraph, test_x)
        rows.append([bits, label, f"{100 * float_acc:.2f}%", f"{100 * top1(cmp['reference'], data.test_y):.2f}%",
                     f"{100 * top1(cmp['integer'], data.test_y):.2f}%",
                     f"{cmp['mismatches']} / {cmp['elements']}"])
        _say(f"{step}: done, {rows[-1][4]} ({elapsed()})")
        if (bits, label) == REPORT_RUN:
            kept = qgraph
    _say()
    from aidge_lite.ptq import PRESETS

    best = PRESETS["best"]
    _say(f"best options (preset='best'): {', '.join(f'{k}={v}' for k, v in best.items() if v not in (False,))}")
    _say(table(["bits", "options", "float", "fake-quant", "integer", "mismatching elements (bit-exact check)"],
               rows))
    out = _write_report(graph, kept, data, float_acc, Path(args.out), heartbeat)
    _say(f"\n({elapsed()})")
    _next_steps(out)
    return 0


def _write_report(graph, qgraph, data, float_acc, out: Path, heartbeat) -> Path:
    """The 4-bit best run's model.npz, report.json/.md and plots, as `aidge-lite quantize` writes them."""
    from aidge_lite import report as rep
    from aidge_lite import serialize

    _say(f"\nwriting the {REPORT_RUN[0]}-bit {REPORT_RUN[1]} run's report into {out}/ "
         "(per-layer SQNR, clipping, accumulator bits) ...")
    with heartbeat("report"):
        report = rep.quantization_report(graph, qgraph, data.calib_x, data.test_x, data.test_y,
                                         float_accuracy=float_acc)
        report.update(model_spec="mnist8", data="mnist", target_profile="default")
        out.mkdir(parents=True, exist_ok=True)
        written = [serialize.save(qgraph, out / "model.npz"), rep.write_json(report, out / "report.json")]
        images = {}
        try:
            from aidge_lite import plots

            images = plots.write_plots(report, out)
        except ImportError:  # pragma: no cover - plots warns itself when matplotlib is missing
            pass
        written.append(rep.write_markdown(report, out / "report.md", images=images))
    _say("wrote " + ", ".join(str(p) for p in written + [out / f for f in images.values()]))
    return out


def _next_steps(out: Path) -> None:
    model = out / "model.npz"
    _say("\nNext:")
    for command, what in (
            (f"open {out / 'report.md'}", "the 4-bit report: per-layer SQNR, clipping, accumulator bits, plots"),
            (f"aidge-lite show {model}", "the quantized graph with each quantizer's scale"),
            (f"aidge-lite eval {model} --engine integer", "its accuracy, integer engine"),
            (f"aidge-lite export {model} -o {out / 'model.onnx'}", "ONNX QDQ model for onnxruntime"),
            ("aidge-lite quantize YOUR.onnx --data YOUR.npz --bits 4 --preset best -o out/yours",
             "your model (x, y, calib_x in the .npz; see README)")):
        _say(f"  {command:<72} {what}")


if __name__ == "__main__":
    raise SystemExit(main())
