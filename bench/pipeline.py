"""PTQ pipeline: `aidge_lite.quantize_network` vs onnxruntime `quantize_static` on mnist-8.

Wall time and peak memory of quantizing mnist-8 with the 1,000 MNIST
calibration images:
- ours, for each clipping mode (`clipping="max"|"mse"|"aa"|"kl"`), 8 bits,
  other options default, data passed as one float32 array;
- onnxruntime `quantize_static` (QDQ, uint8 activations, int8 weights) with
  the MinMax, Entropy and Percentile calibration methods, fed by a
  CalibrationDataReader over the same images (one image per batch: mnist-8's
  batch dimension is fixed at 1).
Each configuration runs in a fresh subprocess (1 thread: `kernels.set_threads(1)`
and `intra_op_num_threads`-free ORT calibration sessions limited through
`OMP`/`threadpoolctl` defaults): one warm-up call (imports, JIT cache loads),
then `REPEAT` timed calls, median reported. Peak memory: the process's peak
resident set (VmHWM, reset through /proc/self/clear_refs) above the resident
set before the call, on a separate call.

Calibration memory flatness: ours with 1,000 vs 4,000 images (the MNIST test
images as a larger calibration set, for this measurement only).

A clipping mode that raises is reported n/a with its error, and retried
once at the end of the run.

    python -m bench.pipeline [--quick]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import machine_info, markdown_table, write_result

REPEAT = 3
OURS = ("max", "mse", "aa", "kl")
ORT = ("MinMax", "Entropy", "Percentile")
FLAT_MIB = 2  # growth below max(10%, this) counts as flat


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def peak_bytes(fn):
    """Peak RSS increase while `fn` runs (Linux VmHWM, reset before)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    base = _status("VmRSS")
    fn()
    return _status("VmHWM") - base


def child(kind, mode, n_images, repeat):
    """Run in the subprocess: time `repeat` calls and measure the peak of one more."""
    from aidge_lite import kernels
    kernels.set_threads(1)
    from aidge_lite.models import datasets, zoo
    d = datasets.mnist()
    images = d.calib_x if n_images <= len(d.calib_x) else np.concatenate([d.calib_x, d.test_x])
    images = np.ascontiguousarray(images[:n_images].astype(np.float32))
    if kind == "ours":
        import aidge_lite
        graph = zoo.load("mnist8")

        def call():
            return aidge_lite.quantize_network(graph, images, clipping=mode)
    elif kind == "ours_stream":  # batches of 100 made on the fly from the uint8 images
        import aidge_lite
        graph = zoo.load("mnist8")
        raw = d.calib_x if n_images <= len(d.calib_x) else np.concatenate([d.calib_x, d.test_x])
        raw = raw[:n_images]
        del images

        def source():
            for i in range(0, len(raw), 100):
                yield raw[i:i + 100].astype(np.float32)

        def call():
            return aidge_lite.quantize_network(graph, source, clipping=mode, batch_size=100)
    else:
        from bench.end_to_end import ort_quantize
        tmp = tempfile.mkdtemp()

        def call():
            return ort_quantize(zoo.path("mnist8"), images, "u8", tmp, True, method=mode)
    call()  # warm-up
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        call()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = peak_bytes(call)
    result = {"median": statistics.median(times), "times": times, "cpu": statistics.median(cpu),
              "peak": peak}
    if kind != "ort":  # Python-side peak too (NumPy buffers included), as bench.calib_memory does
        import tracemalloc
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        call()
        result["traced"] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    return result


def measure(kind, mode, n_images, repeat):
    cmd = [sys.executable, "-m", "bench.pipeline", "--child", kind, mode, str(n_images), str(repeat)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=str(Path(__file__).resolve().parent.parent))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": err[:160]}
    return json.loads(lines[-1][7:])


def mib(n):
    return "n/a" if n is None else f"{n / 2 ** 20:.1f}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        kind, mode, n, repeat = argv[1], argv[2], int(argv[3]), int(argv[4])
        print("RESULT " + json.dumps(child(kind, mode, n, repeat)), flush=True)
        return None
    repeat = 1 if "--quick" in argv else REPEAT
    info = machine_info()
    info["threads"] = "1 (kernels.set_threads(1); OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=1)"
    results = {}
    configs = [("ours", m, 1000) for m in OURS] + [("ort", m, 1000) for m in ORT] + \
              [("ours", m, 4000) for m in ("max", "mse")] + \
              [("ours_stream", "mse", n) for n in (1000, 4000)]
    for cfg in configs:
        results[cfg] = measure(*cfg, repeat)
        print(cfg, results[cfg], flush=True)
    for cfg in configs:  # a mode a colleague was still wiring in: retry once at the end
        if "error" in results[cfg]:
            results[cfg] = measure(*cfg, repeat)
            print("retry", cfg, results[cfg], flush=True)
    path = write_result("pipeline", "PTQ pipeline speed and memory (mnist-8)", render(results, repeat), info)
    print(f"wrote {path}")
    return results


def render(results, repeat):
    entropy = results.get(("ort", "Entropy", 1000), {}).get("median")
    entropy_cpu = results.get(("ort", "Entropy", 1000), {}).get("cpu")
    rows = []
    for (kind, mode, n), r in results.items():
        if n != 1000 or kind == "ours_stream":
            continue
        label = (f"aidge_lite.quantize_network clipping={mode!r}" if kind == "ours"
                 else f"onnxruntime quantize_static {mode} (QDQ u8/s8)")
        if "error" in r:
            rows.append([label, "n/a", "n/a", "n/a", "n/a", "n/a", r["error"]])
            continue
        speed = f"{entropy / r['median']:.2f}" if entropy else ""
        speed_cpu = f"{entropy_cpu / r['cpu']:.2f}" if entropy_cpu else ""
        rows.append([label, f"{r['median']:.2f}", f"{r['cpu']:.2f}", mib(r["peak"]), speed, speed_cpu,
                     " ".join(f"{t:.2f}" for t in r["times"])])
    table = markdown_table(["configuration (1,000 images)", "median wall (s)", "median cpu (s)",
                            "peak RSS increase (MiB)", "speed vs ORT Entropy (wall)",
                            "speed vs ORT Entropy (cpu)", "runs, wall (s)"], rows, align="lrrrrrl")
    flat = []
    for kind, mode in (("ours", "max"), ("ours", "mse"), ("ours_stream", "mse")):
        a, b = results.get((kind, mode, 1000), {}), results.get((kind, mode, 4000), {})
        mode = mode + (" (streamed batches)" if kind == "ours_stream" else " (one array)")
        if "peak" in a and "peak" in b and a["peak"] and b["peak"] is not None:
            traced = (f"{mib(a['traced'])} -> {mib(b['traced'])} ({100 * (b['traced'] - a['traced']) / a['traced']:+.1f}%)"
                      if a.get("traced") and b.get("traced") is not None else "n/a")
            flat.append([mode, traced, mib(a["peak"]), mib(b["peak"]),
                         f"{100 * (b['peak'] - a['peak']) / a['peak']:+.1f}%",
                         f"{a['median']:.2f}", f"{b['median']:.2f}"])
        else:
            flat.append([mode, "n/a", mib(a.get("peak")), mib(b.get("peak")), "n/a", "", ""])
    flat_table = markdown_table(["clipping", "tracemalloc peak, 1,000 -> 4,000 images (MiB)",
                                 "RSS peak increase, 1,000 (MiB)", "RSS, 4,000 (MiB)", "RSS difference",
                                 "time 1,000 (s)", "time 4,000 (s)"], flat, align="lrrrrrr")
    tgt = []
    mse = results.get(("ours", "mse", 1000), {})
    ent = results.get(("ort", "Entropy", 1000), {})
    if "median" in mse and "median" in ent:
        w, c = ent["median"] / mse["median"], ent["cpu"] / mse["cpu"]
        tgt.append(["quantize_network clipping='mse' >= 3x faster than quantize_static Entropy (1,000 images)",
                    f"{mse['median']:.2f} s vs {ent['median']:.2f} s (cpu {mse['cpu']:.2f} vs {ent['cpu']:.2f})",
                    f"{w:.2f} (cpu {c:.2f})", "yes" if min(w, c) >= 3 else ("cpu only" if c >= 3 else "NO")])
    else:
        tgt.append(["quantize_network clipping='mse' >= 3x faster than quantize_static Entropy", "n/a", "n/a",
                    "n/a"])
    for kind, mode in (("ours", "max"), ("ours", "mse"), ("ours_stream", "mse")):
        a, b = results.get((kind, mode, 1000), {}), results.get((kind, mode, 4000), {})
        how = "streamed batches" if kind == "ours_stream" else "one array"
        key = "traced" if a.get("traced") and b.get("traced") is not None else "peak"
        if a.get(key) and b.get(key) is not None:
            rel = (b[key] - a[key]) / a[key]
            flat = abs(b[key] - a[key]) <= max(0.10 * a[key], FLAT_MIB * 2 ** 20)
            what = "tracemalloc peak" if key == "traced" else "RSS peak increase"
            tgt.append([f"calibration peak memory flat in the number of images ({mode}, {how}, 1,000 -> 4,000)",
                        f"{what} {mib(a[key])} -> {mib(b[key])} MiB", f"{100 * rel:+.1f}%",
                        "yes" if flat else "NO"])
    target_table = markdown_table(["target", "measured", "ratio", "met?"], tgt, align="lllr")
    return (
        "Each configuration in a fresh subprocess: a warm-up call, then "
        f"{repeat} timed calls (median), then one call measured for peak RSS above the RSS before it. "
        "1 thread. `cpu` = process CPU time of the call (insensitive to other processes on this shared "
        "machine; wall times are inflated by them). onnxruntime reads the calibration images one by one (mnist-8's batch dimension is "
        "fixed at 1); its time includes loading/saving the model files, as `quantize_static` does.\n\n"
        f"## Quantization time and memory\n\n{table}\n\n"
        f"## Calibration memory vs number of images (ours)\n\n{flat_table}\n\n"
        "Memory: `tracemalloc` peak of one whole `quantize_network` call (Python and NumPy "
        "allocations; the flatness target uses it), and peak RSS of a call above the RSS before it, "
        "after a warm-up call (memory the warm-up left mapped and the call reuses is not counted, so "
        "small values mean \"no growth\", not \"no memory\"; the allocator's caching makes it "
        "noisy). Images passed as one float32 array, or streamed as 100-image batches made on the "
        "fly. `bench.calib_memory` measures the calibration pass with `tracemalloc` and streamed "
        "batches.\n\n"
        f"## Targets\n\n{target_table}\n"
    )


if __name__ == "__main__":
    main()
