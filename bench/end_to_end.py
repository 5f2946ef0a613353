"""End-to-end inference: our integer engine vs onnxruntime int8 QDQ vs our reference engine.

For mnist-8 and every zoo model (`models.zoo.NAMES`):
- ours: `aidge_lite.quantize_network` (8 bits, defaults) on the 1,000 MNIST
  calibration images (digits: its 1,078 train images), then
  `IntegerInterpreter` over the whole test set (4,000 MNIST images; 719 for
  digits) in batches of `BATCH`;
- our NumPy fake-quant reference engine on the same graph and batches: the
  integer engine's outputs are checked bit-exact against it before timing;
- onnxruntime running the float ONNX model quantized by its own
  `onnxruntime.quantization.quantize_static` (QDQ, MinMax, same calibration
  images), with uint8 activations x int8 weights (ORT's fast path) and with
  its default int8 activations. mnist-8's batch dimension is fixed at 1, so
  onnxruntime runs it image by image (our engines take any batch); the other
  models run in batches of `BATCH` in both.
- onnxruntime on the float model, for scale.
onnxruntime rows can't be bit-exact with ours (another quantizer); their
top-1 accuracy is shown as a sanity check.

1 and 2 threads (`kernels.set_threads`, `intra_op_num_threads`), median of
`REPEAT` round-robin passes after a warm-up pass.

    python -m bench.end_to_end [--quick] [model ...]
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aidge_lite import kernels
from bench.common import machine_info, markdown_table, write_result

BATCH = 1000
REPEAT = 5
REF_REPEAT = 2
THREADS = (1, 2)


def dataset(name):
    from aidge_lite.models import datasets, zoo
    if zoo.dataset(name) == "mnist":
        d = datasets.mnist()
        return d.calib_x.astype(np.float32), d.test_x.astype(np.float32), d.test_y
    d = datasets.digits()
    return d.calib_x.astype(np.float32), d.test_x.astype(np.float32), d.test_y


class Reader:
    """onnxruntime CalibrationDataReader over our calibration images."""

    def __init__(self, input_name, images, batch):
        self.batches = iter([{input_name: images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self.batches, None)


def ort_quantize(model_path: Path, calib, activation, out_dir, fixed_batch, method="MinMax"):
    """quantize_static (QDQ) of a float model; returns the output path."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    name = onnx.load(str(model_path)).graph.input[0].name
    out = Path(out_dir) / f"{model_path.stem}_{activation}_{method}.onnx"
    quantize_static(str(model_path), str(out), Reader(name, calib, 1 if fixed_batch else 100),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8 if activation == "u8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method))
    return out


def ort_session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_runner(session, images, fixed_batch):
    name = session.get_inputs()[0].name
    if fixed_batch:
        return lambda: np.concatenate([session.run(None, {name: images[i:i + 1]})[0]
                                       for i in range(len(images))])
    return lambda: np.concatenate([session.run(None, {name: images[i:i + BATCH]})[0]
                                   for i in range(0, len(images), BATCH)])


def engine_runner(interp_cls, qgraph, images):
    out_name = qgraph.outputs[0]
    return lambda: np.concatenate([interp_cls().run(qgraph, images[i:i + BATCH])[out_name]
                                   for i in range(0, len(images), BATCH)])


def accuracy(logits, labels):
    return float(np.mean(np.argmax(logits.reshape(len(labels), -1), axis=1) == labels))


def timed(fns, repeat):
    """Round-robin timing: name -> (median wall, median cpu)."""
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - w0)
            cpu[k].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


def bench_model(name, tmp, repeat, log):
    import aidge_lite
    from aidge_lite.interp.integer import IntegerInterpreter
    from aidge_lite.interp.reference import ReferenceInterpreter
    from aidge_lite.models import zoo

    calib, test_x, test_y = dataset(name)
    graph = zoo.load(name)
    fixed = name == "mnist8"
    qgraph = aidge_lite.quantize_network(graph, calib)
    rows = {}
    integer = engine_runner(IntegerInterpreter, qgraph, test_x)
    reference = engine_runner(ReferenceInterpreter, qgraph, test_x)
    kernels.set_threads(1)
    got, want = integer(), reference()
    exact = np.array_equal(got.astype(np.float64), want)
    log(f"{name}: integer vs reference bit-exact: {exact}")
    acc_ours = accuracy(got, test_y)
    ort_models = {}
    for act in ("u8", "s8"):
        try:
            ort_models[act] = ort_quantize(zoo.path(name), calib, act, tmp, fixed)
        except Exception as exc:  # noqa: BLE001 - reported
            log(f"{name}: quantize_static {act} failed: {exc}")
    labels = {
        "ours: integer engine": "integer",
        "ours: NumPy fake-quant reference engine": "reference",
        "onnxruntime int8 QDQ (u8 act x s8 w)": "u8",
        "onnxruntime int8 QDQ (s8 act x s8 w)": "s8",
        "onnxruntime float32 model": "float",
    }
    for threads in THREADS:
        kernels.set_threads(threads)
        fns = {"integer": integer}
        accs = {"integer": acc_ours, "reference": accuracy(want, test_y)}
        for act, path in ort_models.items():
            run = ort_runner(ort_session(path, threads), test_x, fixed)
            accs[act] = accuracy(run(), test_y)
            fns[act] = run
        run = ort_runner(ort_session(zoo.path(name), threads), test_x, fixed)
        accs["float"] = accuracy(run(), test_y)
        fns["float"] = run
        for fn in fns.values():  # warm-up
            fn()
        timings = timed(fns, repeat)
        if threads == 1:  # the NumPy engine takes seconds: timed on its own, after the others
            timings.update(timed({"reference": reference}, REF_REPEAT))
        for key, (wall, cpu) in timings.items():
            rows[(key, threads)] = (wall, cpu, accs[key])
            log(f"{name} {threads}T {key}: {wall:.3f} s (cpu {cpu:.3f}) acc {accs[key]:.4f}")
    kernels.set_threads(None)
    return {"rows": rows, "labels": labels, "exact": exact, "n": len(test_x), "fixed": fixed,
            "load": "/".join(f"{v:.1f}" for v in os.getloadavg())}


def render(results, repeat):
    parts = [
        f"Median of {repeat} round-robin passes after a warm-up pass (reference engine: "
        f"{REF_REPEAT} passes on its own, 1 thread), over the whole test set "
        f"(batches of {BATCH}). `cpu` = median process CPU time (1 thread: excludes time stolen by "
        "other processes). `ratio` = onnxruntime u8 x s8 time / our integer engine time at the same "
        "thread count (> 1: ours is faster).",
    ]
    for name, res in results.items():
        rows = res["rows"]
        ort_key = "u8"
        table = []
        for label, key in res["labels"].items():
            cells = [label]
            for t in THREADS:
                if (key, t) not in rows:
                    cells += ["—", ""]
                    continue
                wall, cpu, acc = rows[(key, t)]
                cells += [f"{wall:.3f}" + (f" (cpu {cpu:.3f})" if t == 1 else ""),
                          f"{res['n'] / wall:,.0f}"]
            acc = next((rows[(key, t)][2] for t in THREADS if (key, t) in rows), None)
            cells.append("n/a" if acc is None else f"{100 * acc:.2f}%")
            ratio = []
            for t in THREADS:
                if (key, t) in rows and (ort_key, t) in rows:
                    ratio.append(f"{rows[(ort_key, t)][0] / rows[(key, t)][0]:.2f}")
                    if t == 1:
                        ratio.append(f"cpu {rows[(ort_key, t)][1] / rows[(key, t)][1]:.2f}")
            cells.append(" / ".join(ratio) if key == "integer" else "")
            table.append(cells)
        note = ("batch dimension fixed at 1: **onnxruntime runs it image by image**; our engines "
                f"run batches of {BATCH}" if res["fixed"] else f"free batch dimension: batches of {BATCH} for all")
        parts.append(
            f"## {name} ({res['n']:,} test images; {note})\n\n"
            f"Integer engine bit-exact with the reference engine on all outputs: "
            f"**{'yes' if res['exact'] else 'NO'}**. Load average after: {res['load']}.\n\n"
            + markdown_table(["engine", "1T time (s)", "1T images/s", "2T time (s)", "2T images/s",
                              "top-1", "ratio ORT u8 / ours (1T wall / 1T cpu / 2T wall)"], table, align="lrrrrrr"))
    return "\n\n".join(parts)


def targets(results) -> str:
    """The issue's end-to-end targets: ratio = onnxruntime u8 QDQ time / our integer engine time, 1T."""
    rows = []

    def ratios(res):
        r = res["rows"]
        if ("integer", 1) not in r or ("u8", 1) not in r:
            return None
        return r[("u8", 1)][0] / r[("integer", 1)][0], r[("u8", 1)][1] / r[("integer", 1)][1]

    if "mnist8" in results and ratios(results["mnist8"]):
        w, c = ratios(results["mnist8"])
        rows.append(["mnist-8, 4,000 images: integer engine >= onnxruntime int8 (ORT image by image)",
                     f"{w:.2f} (cpu {c:.2f})", "yes" if min(w, c) >= 1 else ("cpu only" if c >= 1 else "NO")])
    free = {n: ratios(r) for n, r in results.items() if not r["fixed"] and ratios(r)}
    if free:
        best = max(free, key=lambda n: min(free[n]))
        w, c = free[best]
        rows.append([f">= 0.5x onnxruntime int8 on a free-batch zoo model (best: {best})", f"{w:.2f} (cpu {c:.2f})",
                     "yes" if min(w, c) >= 0.5 else ("cpu only" if c >= 0.5 else "NO")])
        rows.append(["(all free-batch models: wall / cpu)",
                     ", ".join(f"{n} {v[0]:.2f}/{v[1]:.2f}" for n, v in free.items()), ""])
    return "## Targets\n\n" + markdown_table(["target", "ratio ORT / ours, 1 thread", "met?"], rows, align="llr")


def main(argv=None):
    from aidge_lite.models import zoo
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    names = [a for a in argv if not a.startswith("--")] or list(zoo.NAMES)
    repeat = 2 if quick else REPEAT
    info = machine_info()
    from importlib import metadata
    info["onnx"] = metadata.version("onnx")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results[name] = bench_model(name, tmp, repeat, log)
    body = render(results, repeat) + "\n\n" + targets(results)
    path = write_result("end_to_end", "End-to-end inference", body, info)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
