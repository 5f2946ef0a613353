"""JIT warm-up cost of the integer engine: import + first inference in a fresh process.

The kernels are ``numba.njit(cache=True)``: the first process that needs a
signature compiles it and writes the machine code to ``kernels/__pycache__``;
later processes only load it. This benchmark quantizes mnist-8 once (8 bits,
default options, the 1,000 calibration images) in the parent, saves it with
``aidge_lite.serialize.save`` together with one test image, then measures in
fresh subprocesses, each step timed separately inside the child:

- ``import aidge_lite`` (numba, the kernels modules and the whole package);
- loading the saved quantized graph (``aidge_lite.serialize.load``);
- the first integer-engine inference of one image (kernel load or compile);
- a second inference of the same image (steady state, for comparison).

Runs, in this order:

1. *cold*: a fresh, empty Numba cache (``NUMBA_CACHE_DIR`` set to a new
   temporary directory), so every kernel signature compiles; the normal cache
   is not touched;
2. *cold-ish first*: the first process on the normal cache (already warm if
   the test-suite ran before; it writes whatever is missing);
3. *warm*: 5 more processes on the normal cache; their median is the result.

Target: import + first inference < 1 s with a warm cache.
``python -m bench.jit_warm`` prints the markdown table and writes
``bench/results/jit_warm.md``.
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

ROOT = Path(__file__).resolve().parent.parent
WARM_RUNS = 5
TARGET_SECONDS = 1.0

CHILD = r"""
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import aidge_lite
import aidge_lite.serialize
t1, c1 = time.perf_counter(), time.process_time()
graph = aidge_lite.serialize.load(sys.argv[1])
import numpy as np
image = np.load(sys.argv[2])
t2, c2 = time.perf_counter(), time.process_time()
first = aidge_lite.run(graph, image, engine="integer")
t3, c3 = time.perf_counter(), time.process_time()
second = aidge_lite.run(graph, image, engine="integer")
t4 = time.perf_counter()
(out,) = graph.outputs
assert np.array_equal(first[out], second[out])
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "first": t3 - t2, "second": t4 - t3,
                  "import_cpu": c1 - c0, "first_cpu": c3 - c2,
                  "prediction": int(first[out].argmax())}))
"""


def run_child(graph_path: Path, image_path: Path, cache_dir: str | None = None,
              python: str = sys.executable) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if cache_dir is None:
        env.pop("NUMBA_CACHE_DIR", None)
    else:
        env["NUMBA_CACHE_DIR"] = cache_dir
    env.pop("NUMBA_DISABLE_JIT", None)
    start = time.perf_counter()
    proc = subprocess.run([python, "-c", CHILD, str(graph_path), str(image_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process"] = wall
    result["import+first"] = result["import"] + result["first"]
    result["import+first_cpu"] = result["import_cpu"] + result["first_cpu"]
    return result


def prepare(tmp: Path) -> tuple[Path, Path, float]:
    """Quantize mnist-8 once, save it and one test image; return the paths and the
    quantization time (not part of any measured child step)."""
    import aidge_lite
    import aidge_lite.serialize
    from aidge_lite.models import datasets, zoo

    data = datasets.mnist()
    start = time.perf_counter()
    qgraph = aidge_lite.quantize_network(zoo.load("mnist8"), data.calib_x.astype(np.float32),
                                         nb_bits=8)
    seconds = time.perf_counter() - start
    graph_path = aidge_lite.serialize.save(qgraph, tmp / "mnist8_q8.npz")
    image_path = tmp / "image.npy"
    np.save(image_path, data.test_x[:1].astype(np.float32))
    return Path(graph_path), image_path, seconds


def fmt(seconds: float) -> str:
    return f"{seconds:.3f}"


def has_scipy(python: str) -> bool:
    """Whether `python` can import scipy (Numba then imports scipy.linalg on first dispatch)."""
    probe = "import importlib.util as u; print(u.find_spec('scipy') is not None)"
    return subprocess.run([python, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None,
                        help="NUMBA_CACHE_DIR for the cold-ish and warm runs (default: the normal "
                             "cache, kernels/__pycache__)")
    parser.add_argument("--runtime-python", default=None, metavar="PYTHON",
                        help="also time warm children in this interpreter, e.g. a venv with only "
                             "the runtime dependencies (`pip install .`, no dev extra)")
    args = parser.parse_args(argv)
    info = machine_info()
    pythons = [sys.executable] + ([args.runtime_python] if args.runtime_python else [])
    labels = {py: ("dev venv" if py == sys.executable else "runtime-only venv")
              + (", scipy installed" if has_scipy(py) else ", no scipy") for py in pythons}
    with tempfile.TemporaryDirectory(prefix="jit_warm_") as tmp_name:
        tmp = Path(tmp_name)
        graph_path, image_path, quantize_seconds = prepare(tmp)
        cold_cache = tmp / "numba_cache"
        cold_cache.mkdir()
        cold = run_child(graph_path, image_path, str(cold_cache))
        first = run_child(graph_path, image_path, args.cache_dir)
        warm = {py: [run_child(graph_path, image_path, args.cache_dir, py) for _ in range(WARM_RUNS)]
                for py in pythons}
    cache_label = "cache " + args.cache_dir if args.cache_dir else "normal cache"
    keys = ("import", "import_cpu", "load", "first", "first_cpu", "import+first",
            "import+first_cpu", "second", "process")
    medians = {py: {k: statistics.median(r[k] for r in runs) for k in keys} for py, runs in warm.items()}
    median = medians[sys.executable]
    rows = [
        ["cold: empty Numba cache (every signature compiles)", *(fmt(cold[k]) for k in keys)],
        [f"cold-ish: first process, {cache_label}", *(fmt(first[k]) for k in keys)],
    ]
    for py in pythons:
        rows += [[f"warm run {i + 1} ({labels[py]})", *(fmt(r[k]) for k in keys)]
                 for i, r in enumerate(warm[py])]
        rows.append([f"**warm, {labels[py]}: median of {WARM_RUNS}**",
                     *(f"**{fmt(medians[py][k])}**" for k in keys)])
    headers = ["process", "import aidge_lite", "(CPU)", "load graph", "1st inference", "(CPU)",
               "import + 1st inference", "(CPU)", "2nd inference", "whole process"]
    table = markdown_table(headers, rows, "l" + "r" * 9)
    verdict = "met" if median["import+first"] < TARGET_SECONDS else "NOT met"
    cpu_verdict = "met" if median["import+first_cpu"] < TARGET_SECONDS else "NOT met"
    load = info.get("load average (1/5/15 min, at start)", "n/a")
    runtime_text = ""
    if args.runtime_python:
        rt = medians[args.runtime_python]
        rt_verdict = "met" if rt["import+first"] < TARGET_SECONDS else "NOT met"
        runtime_text = (f"With only the runtime dependencies ({labels[args.runtime_python]}, "
                        f"`{args.runtime_python}`): **{rt_verdict}**, median "
                        f"{rt['import+first']:.3f} s wall = import {rt['import']:.3f} s + first "
                        f"inference {rt['first']:.3f} s ({rt['import+first_cpu']:.3f} s CPU).\n")
    body = f"""## Setting

Model: mnist-8 quantized once in the parent process (8 bits, default options, 1,000
calibration images; {quantize_seconds:.1f} s, not measured below), saved with
`aidge_lite.serialize.save` and loaded in each child with `aidge_lite.serialize.load`.
Each row is a fresh `python -c` subprocess (cwd = repository root, PYTHONPATH = repository
root) that times, in-process with `time.perf_counter`: `import aidge_lite`, loading the saved
graph and one test image, the first integer-engine inference of that single image
(`aidge_lite.run(..., engine="integer")`, Numba kernels loaded from the cache or compiled),
and a second inference for comparison. All times in seconds: wall time, and "(CPU)" the
child's CPU time (`time.process_time`, all its threads: Numba's parallel kernels start a
second worker thread, so CPU can exceed wall) for the same step, which the load of other
processes on the machine inflates much less than wall time. "Whole process" is the parent's wall time for the
subprocess (interpreter start-up and exit included).

- *cold*: `NUMBA_CACHE_DIR` = a new empty temporary directory: every kernel signature
  compiles (the normal cache is left alone).
- *cold-ish*: the first process on the normal cache (`kernels/__pycache__`, written by
  `cache=True`), which earlier runs (e.g. the test-suite) may already have filled
  ({'NUMBA_CACHE_DIR=' + args.cache_dir + ' for this run' if args.cache_dir else 'the normal cache for this run'}).
- *warm*: {WARM_RUNS} more processes on the normal cache; the median is the result.

## Results

{table}

Target: `import aidge_lite` + first integer inference < {TARGET_SECONDS:.0f} s with a warm
cache: **{verdict}** in wall time (median {median['import+first']:.3f} s = import
{median['import']:.3f} s + first inference {median['first']:.3f} s); **{cpu_verdict}** in CPU
time, all threads (median {median['import+first_cpu']:.3f} s = {median['import_cpu']:.3f} s +
{median['first_cpu']:.3f} s). Load average when the run started: {load} on
{info.get('cores', '?')}: wall times are inflated accordingly. Without the cache (cold row)
the first inference costs {cold['first']:.1f} s wall ({cold['first_cpu']:.1f} s CPU) of
compilation.

{runtime_text}
Where the warm first inference goes (cProfile of a warm child): loading each cached
signature is cheap, but the first dispatch makes Numba import its lazily registered
typing/lowering registries (`numba.core.cpu.load_additional_registries`, which imports
`numba.np.arraymath` and, through `numba.np.linalg.ensure_blas`, `scipy.linalg` when scipy
is installed): a fixed cost of the first jitted call in a process, paid once whatever the
model. scipy is not an aidge_lite dependency; the dev extra brings it in (scikit-learn).
`import aidge_lite` loads onnx and the PTQ passes lazily (first use of `load_onnx` /
`quantize_network`), since running a saved quantized graph needs neither.
"""
    path = write_result("jit_warm", "Integer engine: JIT warm-up (import + first inference)",
                        body, info, module="jit_warm")
    print(path.read_text())


if __name__ == "__main__":
    main()
