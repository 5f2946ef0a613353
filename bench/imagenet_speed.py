"""Speed and memory at ImageNet scale (224x224), against onnxruntime in the same process.

Model: a MobileNet-v1-like network built here with `onnx.helper` (3x3 stride-2
stem, 13 depthwise-separable blocks, global average pool, 1000-way Gemm; ReLU;
He-initialised random weights, `WIDTH` x MobileNet-v1's channels): the
topology and the work of an ImageNet depthwise network, without a download.
With ``--model FILE.onnx`` any other float model (e.g. EfficientNet-Lite0).
Data: random 224x224 crops (uniform [0, 1)), synthetic: speed and memory do
not depend on what the pixels show.

Rows (1 thread everywhere: `kernels.set_threads(1)`, `intra_op_num_threads=1`;
contenders take turns, `ROUNDS` rounds, medians):
1. float reference (`aidge_lite.run`, float32, NumPy + BLAS) vs onnxruntime
   float, one image per call and batches of 8;
2. integer engine vs onnxruntime int8 QDQ (`quantize_static`: QDQ, uint8
   activations x int8 per-channel weights, MinMax), one image per call;
3. `quantize_network` (preset "best" and the defaults) vs `quantize_static`
   (QDQ, per-channel, MinMax) on `CALIB` crops, wall time; onnxruntime's calibration
   session on 1 thread (and, one more row, on its default: every core);
4. peak RSS of calibration (every PTQ pass up to and including `calibrate`)
   in a fresh process per count, crops streamed by a callable (64-crop
   batches made on the fly): 64 vs 1,024 crops.

    python -m bench.imagenet_speed [--quick] [--model FILE.onnx] [--calib 500]

The "before" RSS figure (no memory budget: the stream's 64-crop batches go
through whole) comes from one row run with ``AIDGE_LITE_BENCH_BUDGET=10**12``:
``python -m bench.imagenet_speed --rss 64 --model MODEL.onnx``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import machine_info, markdown_table, write_result

WIDTH = 1.0
ROUNDS = 5
CALIB = 500
SIZE = 224
# MobileNet-v1: (output channels, stride) of the 13 separable blocks
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
          (512, 1), (512, 1), (1024, 2), (1024, 1))


def mobilenet_like(path: Path, width: float = WIDTH, seed: int = 0) -> Path:
    """Write the MobileNet-v1-like float ONNX model (dynamic batch) to `path`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x, name, c_in, c_out, k, stride, group=1, relu=True):
        fan_in = c_in // group * k * k
        w = (rng.standard_normal((c_out, c_in // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(c_out) * 0.05).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")])
        pad = k // 2
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[pad] * 4, group=group))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"]))
        return f"{name}_relu"

    c = max(8, int(32 * width))
    x = conv("input", "stem", 3, c, 3, 2)
    for i, (out, stride) in enumerate(BLOCKS):
        out = max(8, int(out * width))
        x = conv(x, f"dw{i}", c, c, 3, stride, group=c)
        x = conv(x, f"pw{i}", c, out, 1, 1)
        c = out
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"]))
    w = (rng.standard_normal((1000, c)) * np.sqrt(1.0 / c)).astype(np.float32)
    inits.extend([numpy_helper.from_array(w, "fc_w"),
                  numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b")])
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(nodes, "mobilenet_like",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def crops(n: int, seed: int = 0, batch: int = 64):
    """A callable streaming `n` random crops in batches (a fresh stream per call)."""
    def source():
        rng = np.random.default_rng(seed)
        for start in range(0, n, batch):
            yield rng.random((min(batch, n - start), 3, SIZE, SIZE), dtype=np.float32)
    return source


class Reader:
    """onnxruntime CalibrationDataReader over a crop stream."""

    def __init__(self, name, source):
        self.name, self.it = name, iter(source())

    def get_next(self):
        batch = next(self.it, None)
        return None if batch is None else {self.name: batch}


def ort_session(path, threads=1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_quantize(model: Path, out: Path, source, threads: int | None = 1) -> Path:
    """`quantize_static` (QDQ, u8 activations, s8 per-channel weights, MinMax); its calibration
    session on `threads` intra-op threads (None: onnxruntime's default, every core).
    quantize_static takes no session options, so the calibrator's `SessionOptions` is wrapped."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    name = onnx.load(str(model)).graph.input[0].name
    options_class = onnxruntime.SessionOptions

    def pinned_options():
        options = options_class()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        return options

    if threads is not None:
        onnxruntime.SessionOptions = pinned_options  # the calibrator looks it up at call time
    try:
        quantize_static(str(model), str(out), Reader(name, source), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        onnxruntime.SessionOptions = options_class
    return out


CPU = {}  # name -> median CPU seconds of the last `alternate` call


def alternate(fns: dict, rounds: int) -> dict:
    """Median wall seconds of each callable, run in turns (first one rotating), after one
    warm call; the median CPU seconds go to `CPU` (1 thread: CPU ~ wall on an idle machine)."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    CPU.clear()
    CPU.update({k: statistics.median(v) for k, v in cpu.items()})
    return {k: statistics.median(v) for k, v in times.items()}


def _row(what, per, ours, theirs, unit=1e3):
    """A table row: wall times, ratio, and the same for CPU times."""
    fmt = (lambda v: f"{v:.1f}") if unit == 1e3 else (lambda v: f"{v:.1f} s")
    return [what, per, fmt(unit * ours[0]) if unit == 1e3 else fmt(ours[0]),
            fmt(unit * theirs[0]) if unit == 1e3 else fmt(theirs[0]), f"{theirs[0] / ours[0]:.2f}",
            f"{theirs[1] / ours[1]:.2f}"]


def speed_rows(model: Path, tmp: Path, calib: int, rounds: int, log) -> tuple[list, dict]:
    import aidge_lite
    from aidge_lite import kernels

    kernels.set_threads(1)
    graph = aidge_lite.load_onnx(str(model))
    x1 = np.random.default_rng(9).random((1, 3, SIZE, SIZE), dtype=np.float32)
    x8 = np.random.default_rng(10).random((8, 3, SIZE, SIZE), dtype=np.float32)
    ort_float = ort_session(model)
    name = ort_float.get_inputs()[0].name
    rows, notes = [], {}

    out_ref = aidge_lite.run(graph, x1)
    out_ort = ort_float.run(None, {name: x1})[0]
    key = next(iter(out_ref))
    notes["float max rel err"] = float(np.abs(out_ref[key] - out_ort).max() / np.abs(out_ort).max())
    log("float reference vs onnxruntime float ...")
    t = alternate({"ours1": lambda: aidge_lite.run(graph, x1), "ort1": lambda: ort_float.run(None, {name: x1}),
                   "ours8": lambda: aidge_lite.run(graph, x8), "ort8": lambda: ort_float.run(None, {name: x8})},
                  rounds)
    rows.append(_row("float reference (float32) vs onnxruntime float", "1 image",
                     (t["ours1"], CPU["ours1"]), (t["ort1"], CPU["ort1"])))
    rows.append(_row("float reference (float32) vs onnxruntime float", "8 images (per image)",
                     (t["ours8"] / 8, CPU["ours8"] / 8), (t["ort8"] / 8, CPU["ort8"] / 8)))

    log(f"quantize_network vs quantize_static on {calib} crops ...")
    source = crops(calib, seed=1)
    qdq = tmp / "qdq.onnx"
    timings = {}

    def timed(key, fn):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        timings[key] = (time.perf_counter() - t0, time.process_time() - c0)
        log(f"  {key}: {timings[key][0]:.1f} s wall, {timings[key][1]:.1f} s CPU")
        return result

    # one run each (minutes per run), in turns: onnxruntime 1 thread, ours, onnxruntime all cores, ours
    timed("ort", lambda: ort_quantize(model, qdq, source, threads=1))
    timed("best", lambda: aidge_lite.quantize_network(graph, source, preset="best"))
    timed("ort_all", lambda: ort_quantize(model, tmp / "qdq_all.onnx", source, threads=None))
    qgraph = timed(None, lambda: aidge_lite.quantize_network(graph, source))
    for preset in ("best", None):
        label = f'quantize_network(preset="{preset}")' if preset else "quantize_network (defaults)"
        rows.append(_row(f"{label} vs quantize_static (QDQ, per-channel, MinMax), 1 thread",
                         f"{calib} crops", timings[preset], timings["ort"], unit=1))
    rows.append(_row('quantize_network(preset="best") vs quantize_static (same), onnxruntime on '
                     f"{os.cpu_count()} threads", f"{calib} crops", timings["best"], timings["ort_all"], unit=1))

    log("integer engine vs onnxruntime int8 ...")
    ort_int8 = ort_session(qdq)
    fake = aidge_lite.run(qgraph, x1)
    ints = aidge_lite.run(qgraph, x1, engine="integer")
    notes["engines bit-exact"] = all(np.array_equal(fake[k], ints[k]) for k in fake)
    t = alternate({"ours": lambda: aidge_lite.run(qgraph, x1, engine="integer"),
                   "ort": lambda: ort_int8.run(None, {name: x1}),
                   "fake": lambda: aidge_lite.run(qgraph, x1)}, rounds)
    rows.append(_row("integer engine vs onnxruntime int8 QDQ (u8s8)", "1 image",
                     (t["ours"], CPU["ours"]), (t["ort"], CPU["ort"])))
    rows.append(_row("fake-quant engine (float BLAS) vs onnxruntime int8 QDQ", "1 image",
                     (t["fake"], CPU["fake"]), (t["ort"], CPU["ort"])))
    kernels.set_threads(None)
    return rows, notes


def calibration_rss(model: Path, n: int) -> dict:
    """In this (fresh) process: RSS before and peak RSS after the passes up to `calibrate`."""
    import aidge_lite
    from aidge_lite.ptq import PIPELINE, PTQConfig, run_pipeline
    from aidge_lite.ptq.calibrate import calibrate
    from aidge_lite.ptq.calibration_data import CalibrationSet

    graph = aidge_lite.load_onnx(str(model)).copy()
    budget = int(os.environ.get("AIDGE_LITE_BENCH_BUDGET", "0")) or None  # for a before/after row
    cfg = PTQConfig(calibration=CalibrationSet(crops(n, seed=2), **({"memory_budget": budget} if budget else {})))
    _reset_peak_rss()  # the imports' peak must not hide calibration's
    base = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    run_pipeline(graph, cfg, PIPELINE[:PIPELINE.index(calibrate) + 1])
    seconds = time.perf_counter() - t0
    peak = _rss_kib("VmHWM")
    return {"n": n, "base_mib": base / 1024, "peak_mib": peak / 1024, "seconds": seconds}


def _rss_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, KiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def rss_rows(model: Path, counts, log) -> list:
    rows = []
    for n in counts:
        log(f"calibration peak RSS, {n} crops (fresh process) ...")
        done = subprocess.run([sys.executable, "-m", "bench.imagenet_speed", "--rss", str(n), "--model", str(model)],
                              capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                                "NUMBA_NUM_THREADS": "1",
                                                                                "OPENBLAS_NUM_THREADS": "1"})
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append([f"{n:,}", f"{r['base_mib']:.0f}", f"{r['peak_mib']:.0f}",
                     f"{r['peak_mib'] - r['base_mib']:.0f}", f"{r['seconds']:.0f}"])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a float ONNX model (default: the MobileNet-like one built here)")
    parser.add_argument("--calib", type=int, default=CALIB)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--quick", action="store_true", help="64 calibration crops, 3 rounds, RSS for 64/256")
    parser.add_argument("--rss", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--width", type=float, default=WIDTH, help="channel multiplier of the built model")
    parser.add_argument("--rss-counts", type=int, nargs="+", help="crop counts of the RSS rows")
    parser.add_argument("--name", default="imagenet_speed", help="result file name (bench/results/NAME.md)")
    args = parser.parse_args(argv)
    if args.rss:
        print(json.dumps(calibration_rss(Path(args.model), args.rss)))
        return
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    info = machine_info()
    calib, rounds, counts = (64, 3, (64, 256)) if args.quick else (args.calib, args.rounds, (64, 1024))
    counts = args.rss_counts or counts
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(args.model) if args.model else mobilenet_like(tmp / "mobilenet_like.onnx", args.width)
        rows, notes = speed_rows(model, tmp, calib, rounds, log)
        rss = [] if args.skip_rss else rss_rows(model, counts, log)
    load_after = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    what = (f"`{Path(args.model).name}` (its own weights)" if args.model
            else f"MobileNet-v1-like (width {args.width}, built by this script, random weights)")
    body = (
        f"## Setting\n\nModel: {what}, 224x224; data: random crops. 1 thread for every "
        f"contender; {rounds} alternating rounds, medians. Load average at the end: {load_after}.\n\n"
        f"Float reference vs onnxruntime float, max relative error on one crop: "
        f"{notes['float max rel err']:.2e}. Integer engine vs fake-quant engine: "
        f"{'bit-exact' if notes['engines bit-exact'] else 'DIFFERENT'}.\n\n## Speed\n\n"
        + markdown_table(["what", "per call", "ours (wall ms, or s)", "onnxruntime (wall ms, or s)",
                          "speed vs onnxruntime, wall (x)", "same, CPU time (x)"], rows, "llrrrr")
        + "\n\n`speed vs onnxruntime` = onnxruntime time / our time (1.00: as fast). The CPU-time ratio "
        "is the one to read when other processes load the machine (wall time then counts their turns).\n"
    )
    if rss:
        body += ("\n## Calibration peak memory\n\nFresh process per count; every PTQ pass up to and including "
                 "`calibrate`; crops streamed by a callable in 64-crop batches (the stream's own batch), "
                 "the calibration batch then cut to the memory budget (`CalibrationSet.memory_budget`, "
                 "256 MiB of float64 activations).\n\n"
                 + markdown_table(["crops", "RSS before (MiB)", "peak RSS (MiB)", "growth (MiB)", "time (s)"],
                                  rss, "lrrrr") + "\n")
    path = write_result(args.name, "Speed and memory at 224x224 vs onnxruntime", body, info,
                        module="imagenet_speed")
    print(path.read_text())


if __name__ == "__main__":
    main()
