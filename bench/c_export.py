"""C export: the compiled program's time per sample vs our integer engine vs onnxruntime int8,
and the activation arena and weight bytes of every exported model.

Models: every zoo model quantized to 8 bits with the `tflite` profile (Q31 fixed-point
rescale: integer-only C) and per-channel weights, calibrated on 200 images; the MLPerf
Tiny int8 models whole (int8 SOFTMAX included), on `standard_inputs` (int8: all -128,
all 127, two smooth images, the rest uniform random).

- C: `export_c`, built with `-std=c99 -O2 -Wall -Wextra -Werror` (no sanitizers), fed N
  samples on stdin in one process; per-sample time = wall time / N (includes process
  start and I/O). Outputs checked equal to the integer engine's first (0 mismatches),
  and for the .tflite models to LiteRT's reference kernels (BUILTIN_REF) too.
- arena: the activation arena with rescale fusion (the default: Conv / FC + requant,
  TFLite's ADD with its operand and result rescales, in one kernel call) and without
  (`export_c(..., fuse=False)`: int32 accumulators and ADD operands stored).
- ours: `run(q, x, engine="integer")` on the N samples as one batch (per sample = total / N),
  and sample by sample (batch 1, like the C program and an MCU).
- onnxruntime: our QDQ export (`export_qdq`) run sample by sample, 1 thread
  (zoo models); LiteRT's default (optimized) kernels sample by sample for the .tflite.
Median of `REPEAT` runs; 1 thread everywhere (kernels.set_threads(1)).

    python -m bench.c_export [--quick]
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPEAT = 3


def _median_time(fn, repeat=REPEAT):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _zoo_graph(model):
    import aidge_lite
    from aidge_lite.models import datasets, zoo
    from aidge_lite.target import PROFILES

    data = datasets.mnist() if zoo.dataset(model) == "mnist" else datasets.digits()
    step = max(len(data.calib_x) // 200, 1)
    q = aidge_lite.quantize_network(zoo.load(model), data.calib_x[::step].astype(np.float32),
                                    nb_bits=8, target=PROFILES["tflite"], per_channel=True)
    return q, data.test_x.astype(np.float32)


def _mlperf_graph(model):
    import aidge_lite
    from aidge_lite.testing.tflite_check import standard_inputs

    path = Path(__file__).resolve().parent.parent / "tests" / "data" / "mlperf_tiny" / f"{model}_int8.tflite"
    g = aidge_lite.load_tflite(path)
    return g, standard_inputs(g.node(g.inputs[0]).attrs["shape"][1:], 256), path


#: kTensorArenaSize of the MLPerf Tiny reference submissions (TFLite Micro on an
#: STM32 NUCLEO-L4R5ZI), mlcommons/tiny benchmark/reference_submissions/
#: {image_classification,keyword_spotting}/submitter_implemented.cpp: the arena the
#: reference firmware reserves, TFLM's tensor metadata and persistent buffers included,
#: not a measured minimum.
TFLM_ARENA = {"resnet8": 100 * 1024, "dscnn_kws": 200 * 1024}


def _litert_mismatches(path, x, got):
    from aidge_lite.testing.litert_oracle import run_litert

    (name, value), = got.items()
    lite = run_litert(str(path), x)[name]
    return int(np.count_nonzero(value != lite.reshape(value.shape)))


def _ort_per_sample(q, x, work):
    import onnxruntime as ort

    from aidge_lite.export_onnx import export_qdq

    path = Path(work) / "q.onnx"
    export_qdq(q, path, batch_dim="N")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return _median_time(lambda: [sess.run(None, {name: x[i:i + 1]}) for i in range(len(x))]) / len(x)


def _litert_per_sample(path, x):
    from aidge_lite.testing.litert_oracle import load_litert

    lt = load_litert()
    it = lt.Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    index = it.get_input_details()[0]["index"]

    def loop():
        for i in range(len(x)):
            it.set_tensor(index, x[i:i + 1])
            it.invoke()
    return _median_time(loop) / len(x)


def measure(name, q, x, work, peer, tflite=None):
    import aidge_lite
    from aidge_lite.export import export_c
    from aidge_lite.export.build import Builder, run_program

    folder = Path(work) / name
    result = export_c(q, folder)
    unfused = export_c(q, Path(work) / (name + "_unfused"), fuse=False)
    exe = Builder().build(folder)
    want = aidge_lite.run(q, x, engine="integer")
    got = run_program(exe, folder, x)
    bad = sum(int(np.count_nonzero(got[k] != want[k])) for k in want)
    lite_bad = None if tflite is None else _litert_mismatches(tflite, x, got)
    data = np.ascontiguousarray(x, dtype=np.dtype(str(x.dtype))).tobytes()
    c_time = _median_time(lambda: subprocess.run([str(exe)], input=data, capture_output=True, check=True))
    batch = _median_time(lambda: aidge_lite.run(q, x, engine="integer"))
    few = x[: min(len(x), 100)]
    single = _median_time(lambda: [aidge_lite.run(q, few[i:i + 1], engine="integer") for i in range(len(few))])
    return {"model": name, "n": len(x), "mismatch": bad, "lite_mismatch": lite_bad,
            "arena_unfused": unfused.arena_bytes, "c_ms": 1e3 * c_time / len(x),
            "engine_batch_ms": 1e3 * batch / len(x), "engine_single_ms": 1e3 * single / len(few),
            "peer_ms": None if peer is None else 1e3 * peer(),
            "arena": result.arena_bytes, "weights": result.weight_bytes, "steps": len(result.steps)}


def main(argv=None) -> int:
    from aidge_lite import kernels
    from aidge_lite.models import zoo
    from bench.common import machine_info, markdown_table, write_result

    quick = "--quick" in (argv or sys.argv[1:])
    kernels.set_threads(1)
    info = machine_info()
    rows = []
    n = 200 if quick else 1000
    with tempfile.TemporaryDirectory() as work:
        for model in zoo.NAMES:
            q, x = _zoo_graph(model)
            x = x[:n]
            rows.append(measure(model, q, x, work, lambda: _ort_per_sample(q, x[:200], work)))
            print(rows[-1], flush=True)
        for model in ("resnet8", "dscnn_kws"):
            g, x, path = _mlperf_graph(model)
            rows.append(measure(f"{model} (int8 .tflite)", g, x, work,
                                lambda: _litert_per_sample(path, x), tflite=path))
            rows[-1]["tflm"] = TFLM_ARENA[model]
            print(rows[-1], flush=True)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    na = lambda v: "n/a" if v is None else v
    table = markdown_table(
        ["model", "samples", "C vs engine mismatches", "C vs LiteRT ref mismatches", "C ms/sample",
         "engine ms/sample (batch)", "engine ms/sample (batch 1)",
         "ORT int8 / LiteRT ms/sample (batch 1)", "arena bytes (fused)", "arena bytes (unfused)",
         "TFLM reference arena", "weight+param bytes", "C steps"],
        [[r["model"], r["n"], r["mismatch"], na(r["lite_mismatch"]), fmt(r["c_ms"]),
          fmt(r["engine_batch_ms"]), fmt(r["engine_single_ms"]), fmt(r["peer_ms"]), r["arena"],
          r["arena_unfused"], na(r.get("tflm")), r["weights"], r["steps"]]
         for r in rows], "lrrrrrrrrrrrr")
    body = __doc__.split("\n\n", 1)[1].split("    python -m")[0] + "\n## Results\n\n" + table + NOTES
    write_result("c_export", "C export: time per sample, arena and weight bytes", body, info)
    return 0


NOTES = """

Notes:
- The arena holds every activation the schedule keeps alive at once (greedy-by-size
  placement over the lifetimes, TFLite Micro's scheme). Fused (default): each Conv / FC
  rescales its accumulators as it produces them and TFLite's ADD reads its int8 operands
  and writes its int8 result in one pass, so no int32 tensor is stored (the debug build
  keeps them in buffers of their own, outside the arena, for the per-layer dump).
  resnet8: 192 KiB -> 48 KiB, the three 32 x 32 x 16 int8 tensors a residual ADD has
  live at once; dscnn_kws: 40,000 -> 16,000 bytes (two 25 x 5 x 64 int8 activations).
- TFLite Micro: the MLPerf Tiny reference submissions reserve kTensorArenaSize = 100 KiB
  (image classification, resnet8) and 200 KiB (keyword spotting, dscnn_kws)
  (mlcommons/tiny, benchmark/reference_submissions/*/submitter_implemented.cpp). Those
  are the sizes the reference firmware sets aside, including TFLM's tensor structs and
  persistent allocations, not the arena its planner actually uses; a measured TFLM
  `arena_used_bytes` for these models was not found.
- SOFTMAX: TFLite's reference int8 kernel (gemmlowp fixed point, csrc/softmax.c); with
  10 / 12 classes the export proves that TFLite's abort (a row's sum of exponentials
  reaching 2**28) cannot happen.
- The C kernels are plain loops (no SIMD intrinsics); the engine's are Numba with AVX2
  micro-kernels and batch over samples.
"""

if __name__ == "__main__":
    raise SystemExit(main())
