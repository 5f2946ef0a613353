"""Accuracy of every zoo model quantized at 8/6/5/4/3/2 bits.

For each model × option set × bit width: float, fake-quant (reference
engine) and integer (Numba engine) top-1 accuracy on the test split, and the
number of output elements where the integer engine differs from the
fake-quant one (0 = bit-exact). Calibration: MNIST's 1,000 calibration
images / the digits train split. Options that the library rejects with a
`QuantizationError` are reported as "n/a"; other failures as "error" with the
message below the table.

The option grid is data (`OPTION_GRID`): add an entry to sweep clipping
modes, sign optimisation, single shift, CLE, per-channel, target profiles...

    python -m bench.accuracy [--models lenet mnist8] [--bits 8 4] [--grid default] [--limit N]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from bench.common import Timer, machine_info, markdown_table, pct, write_result

BITS = (8, 6, 5, 4, 3, 2)


@dataclass(frozen=True)
class OptionSet:
    """One point of the option grid: a label and `quantize_network` keyword arguments.

    `target` names a profile of `aidge_lite.target.PROFILES`, or is "key=value,..."
    fields of `aidge_lite.Target` (None = default).
    """

    label: str
    options: dict = field(default_factory=dict)
    target: str | None = None


_BEST = {"clipping": "mse", "optimize_signs": True, "per_channel": True, "cle": True}

OPTION_GRID: tuple[OptionSet, ...] = (
    OptionSet("default", {"clipping": "max"}),
    OptionSet("mse", {"clipping": "mse"}),
    OptionSet("aa", {"clipping": "aa"}),
    OptionSet("kl", {"clipping": "kl"}),
    OptionSet("kl-aidge", {"clipping": "kl", "compat": "aidge"}),
    OptionSet("signs", {"optimize_signs": True}),
    OptionSet("per-channel", {"per_channel": True}),
    OptionSet("cle", {"cle": True}),
    OptionSet("single-shift", {"single_shift": True}),
    OptionSet("mse+signs", {"clipping": "mse", "optimize_signs": True}),
    OptionSet("mse+signs+pc", {"clipping": "mse", "optimize_signs": True, "per_channel": True}),
    OptionSet("best", _BEST),
    OptionSet("best+shift", {**_BEST, "single_shift": True}),
    # profile "tflite" meant this single-rounding Q31 rescale until it became gemmlowp
    OptionSet("fixed-point", {}, target="rescale=fixed_point"),
    OptionSet("tflite", {}, target="tflite"),
    OptionSet("mse+signs+bc", {"clipping": "mse", "optimize_signs": True, "bias_correction": True}),
    OptionSet("mse+signs+pc+bc", {**_BEST, "cle": False, "bias_correction": True}),
    OptionSet("best+bc", {**_BEST, "bias_correction": True}),
    OptionSet("preset-best", {"preset": "best"}),  # quantize_network(preset="best")
)


CLIPPING_MODES = ("max", "mse", "aa", "kl")
FULL_BITS = (8, 6, 5, 4, 3)


def full_grid(clippings=CLIPPING_MODES) -> tuple[OptionSet, ...]:
    """Every combination: clipping x signs x single shift x CLE x per-channel (64 sets)."""
    switches = (("signs", "optimize_signs"), ("shift", "single_shift"), ("cle", "cle"),
                ("pc", "per_channel"))
    grid = []
    for clipping in clippings:
        for mask in range(1 << len(switches)):
            on = [(label, key) for i, (label, key) in enumerate(switches) if mask >> i & 1]
            label = "+".join([clipping] + [label for label, _ in on])
            grid.append(OptionSet(label, {"clipping": clipping, **{key: True for _, key in on}}))
    return tuple(grid)


def load_split(name: str):
    from aidge_lite.models import datasets

    split = datasets.mnist() if name == "mnist" else datasets.digits()
    return split.calib_x, split.test_x, split.test_y


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _target(text, profiles):
    """A profile name or "key=value,..." Target fields (None: the default target)."""
    from aidge_lite.target import Target

    if not text:
        return None
    if "=" not in text:
        return profiles[text]
    return Target(**{k: int(v) if k == "acc_bits" else v
                     for k, v in (item.split("=", 1) for item in text.split(","))})


def run_model(model: str, grid, bits_list, limit=None, batch_size=500, log=print):
    """Rows (list of cells) and notes for one model."""
    import aidge_lite
    from aidge_lite.errors import AidgeLiteError, QuantizationError
    from aidge_lite.evaluate import accuracy, compare_engines, top1
    from aidge_lite.target import PROFILES
    from aidge_lite.models import zoo

    notes = []
    try:
        graph = zoo.load(model)
        calib_x, test_x, test_y = load_split(zoo.dataset(model))
    except (FileNotFoundError, AidgeLiteError) as exc:
        notes.append(f"{model}: not run: {_short(exc)}")
        return [[model, "-", "-", "missing", "", "", "", "", ""]], notes
    if limit:
        idx = np.unique(np.linspace(0, len(test_x) - 1, limit).round().astype(int))
        test_x, test_y = test_x[idx], test_y[idx]
    calib = np.asarray(calib_x, dtype=np.float32)
    with Timer() as t:
        float_acc = accuracy(graph, test_x, test_y, batch_size=batch_size)
    log(f"{model}: float {pct(float_acc)} ({t.seconds:.1f} s)")
    rows = []
    for opt in grid:
        for bits in bits_list:
            cells = [model, opt.label, bits, pct(float_acc)]
            start = time.perf_counter()
            try:
                target = _target(opt.target, PROFILES)
                qgraph = aidge_lite.quantize_network(graph, calib, nb_bits=bits, target=target, **opt.options)
                cmp = compare_engines(qgraph, test_x, batch_size=batch_size)
                cells += [pct(top1(cmp["reference"], test_y)), pct(top1(cmp["integer"], test_y)),
                          cmp["mismatches"], cmp["elements"]]
            except QuantizationError as exc:
                cells += ["n/a", "n/a", "n/a", ""]
                notes.append(f"{model} {opt.label} {bits} bits: n/a: {_short(exc)}")
            except AidgeLiteError as exc:
                cells += ["error", "error", "", ""]
                notes.append(f"{model} {opt.label} {bits} bits: {type(exc).__name__}: {_short(exc)}")
            cells.append(f"{time.perf_counter() - start:.1f}")
            rows.append(cells)
            log("  " + " | ".join(map(str, cells)))
    return rows, notes


def main(argv=None) -> int:
    from aidge_lite.models import zoo

    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(zoo.NAMES), choices=zoo.NAMES)
    parser.add_argument("--bits", nargs="+", type=int, default=list(BITS))
    parser.add_argument("--grid", nargs="+", default=[o.label for o in OPTION_GRID],
                        choices=[o.label for o in OPTION_GRID], help="option sets to run (labels)")
    parser.add_argument("--limit", type=int, help="test on N evenly spread test images (quick runs)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--name", default="accuracy", help="results file name (bench/results/<name>.md)")
    parser.add_argument("--full", action="store_true",
                        help="the full cross product (full_grid(), bits 8/6/5/4/3) instead of --grid")
    parser.add_argument("--clippings", nargs="+", default=list(CLIPPING_MODES), choices=CLIPPING_MODES,
                        help="with --full: the clipping modes to sweep")
    args = parser.parse_args(argv)

    info = machine_info()
    grid = full_grid(args.clippings) if args.full else [o for o in OPTION_GRID if o.label in args.grid]
    bits = FULL_BITS if args.full and args.bits == list(BITS) else args.bits
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rows, notes = [], []
    with Timer() as total:
        for done, model in enumerate(args.models, 1):
            r, n = run_model(model, grid, bits, args.limit, args.batch_size, log)
            rows += r
            notes += n
            if done < len(args.models):  # a partial table survives an interrupted run
                _write(args, info, grid, rows, notes, f"partial: {done} of {len(args.models)} models, "
                       f"{time.perf_counter() - total.start:.0f} s so far")
    path, table = _write(args, info, grid, rows, notes, f"total time: {total.seconds:.0f} s")
    print(table)
    if notes:
        print("\n" + "\n".join(notes))
    print(f"\nwrote {path}")
    return 0


def _write(args, info, grid, rows, notes, status: str):
    headers = ["model", "options", "bits", "float", "fake-quant", "integer", "int != fake-quant",
               "elements", "time (s)"]
    table = markdown_table(headers, rows, align="llrrrrrrr")
    grid_text = "\n".join(f"- `{o.label}`: `{o.options}`" + (f", target `{o.target}`" if o.target else "")
                          for o in grid)
    test_desc = f"{args.limit} evenly spread test images" if args.limit else \
        "the full test split (MNIST: 4,000 images; digits: 719)"
    body = (
        "## Settings\n\n"
        f"Calibration: MNIST's 1,000 calibration images (digits: the 1,078-image train split). "
        f"Test: {test_desc}. Integer vs fake-quant: output elements that differ between the integer "
        "engine and the reference (fake-quant) engine (0 = bit-exact). Time: quantization + both "
        f"engines on the test set.\n\nOption sets:\n\n{grid_text}\n\n## Results\n\n{table}\n"
    )
    if notes:
        body += "\n## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    body += f"\nRun status: {status}.\n"
    return write_result(args.name, "Quantized accuracy of the zoo models", body, info,
                        module="accuracy"), table


if __name__ == "__main__":
    raise SystemExit(main())
