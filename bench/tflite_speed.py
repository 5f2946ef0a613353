"""Inference speed on the MLPerf Tiny int8 models: our engines vs LiteRT, 1 thread.

For each model (`resnet8_int8.tflite`, `dscnn_kws_int8.tflite`, from
`tests/data/mlperf_tiny/`, else the shared assets), on `N` random int8 inputs:

- ours, integer engine: `aidge_lite.run(load_tflite(path), x, engine="integer")`,
  the `N` samples in one call ("batch"), and one sample per call ("1/call", what a
  golden-reference harness does);
- ours, NumPy fake-quant reference engine (`engine="reference"`), the same two ways;
- LiteRT (`ai_edge_litert.interpreter.Interpreter(model_path, num_threads=1)`),
  default op resolver (optimized kernels + the XNNPACK delegate, applied by
  default), one sample per `invoke` (the models' batch is fixed at 1): set_tensor,
  invoke, get_tensor;
- LiteRT with `experimental_op_resolver_type=OpResolverType.BUILTIN_REF` (the
  reference kernels, the bit-exact oracle), the same way.

1 thread everywhere (`kernels.set_threads(1)`, LiteRT `num_threads=1`). Warm
times: each contender's first call is timed on its own (Numba kernels loaded
from the on-disk cache or compiled, LiteRT's first invoke) and reported apart,
then one untimed warm-up pass over the `N` inputs (its outputs feed the
bit-exactness check), then `REPEAT` timed passes, the contenders alternated
(round-robin, order reversed every other pass). Reported: median per-sample time
over the passes (pass time / `N`), and ratios vs LiteRT.

    python -m bench.tflite_speed [model ...]
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from bench.common import machine_info, markdown_table, write_result

ROOT = Path(__file__).resolve().parent.parent
SEARCH = (ROOT / "tests" / "data" / "mlperf_tiny", Path("/work/shared/assets/mlperf-tiny"),
          ROOT.parent / "shared" / "assets" / "mlperf-tiny")
MODELS = ("resnet8_int8", "dscnn_kws_int8")
N = 256
REPEAT = 5
SEED = 0

LABELS = {
    "int_batch": f"ours: integer engine, {N} samples in one call",
    "int_single": "ours: integer engine, 1 sample per call",
    "ref_batch": f"ours: NumPy reference engine, {N} samples in one call",
    "ref_single": "ours: NumPy reference engine, 1 sample per call",
    "lite_default": "LiteRT default resolver (XNNPACK), 1 sample per invoke",
    "lite_ref": "LiteRT BUILTIN_REF, 1 sample per invoke",
}


def model_path(name: str) -> Path:
    for folder in SEARCH:
        path = folder / f"{name}.tflite"
        if path.is_file():
            return path
    raise FileNotFoundError(f"{name}.tflite not found in {[str(f) for f in SEARCH]}")


def litert(path: Path, reference: bool):
    """(runner over a batch, first-call runner over one sample, setup seconds)."""
    from ai_edge_litert import interpreter as lt
    kwargs = {"experimental_op_resolver_type": lt.OpResolverType.BUILTIN_REF} if reference else {}
    t0 = time.perf_counter()
    it = lt.Interpreter(model_path=str(path), num_threads=1, **kwargs)
    it.allocate_tensors()
    setup = time.perf_counter() - t0
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    i_in, i_out = inp["index"], out["index"]

    def one(x1):
        it.set_tensor(i_in, x1)
        it.invoke()
        return it.get_tensor(i_out).copy()

    def batch(x):
        return np.concatenate([one(x[i:i + 1]) for i in range(len(x))])

    return batch, one, setup


def ours(graph, engine: str, per_sample: bool):
    import aidge_lite as al
    (out,) = graph.outputs

    def one(x1):
        return al.run(graph, x1, engine=engine)[out]

    if per_sample:
        return (lambda x: np.concatenate([one(x[i:i + 1]) for i in range(len(x))])), one
    return one, one


def timed(fns: dict, x, repeat: int):
    """Round-robin passes over x, order reversed every other pass: name -> (wall, cpu) lists."""
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeat):
        for k in (keys if r % 2 == 0 else keys[::-1]):
            c0, w0 = time.process_time(), time.perf_counter()
            fns[k](x)
            wall[k].append(time.perf_counter() - w0)
            cpu[k].append(time.process_time() - c0)
    return wall, cpu


def mismatches(a, b) -> int:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return -1
    return int(np.count_nonzero(a.astype(np.int64) != b.astype(np.int64)))


def bench_model(name: str, repeat: int, log) -> dict:
    import aidge_lite as al

    path = model_path(name)
    t0 = time.perf_counter()
    graph = al.load_tflite(path)
    load_s = time.perf_counter() - t0
    shape = tuple(graph.node(graph.inputs[0]).attrs["shape"][1:])
    x = np.random.default_rng(SEED).integers(-128, 128, size=(N,) + shape, dtype=np.int8)

    fns, first, setup = {}, {}, {}
    # first calls, one sample each, in this order: our integer engine first (it pays the
    # Numba kernel load / compile), then the batch variant (same kernels, larger shapes)
    for key, engine, single in (("int_single", "integer", True), ("int_batch", "integer", False),
                                ("ref_single", "reference", True), ("ref_batch", "reference", False)):
        batch_fn, one = ours(graph, engine, single)
        t0 = time.perf_counter()
        one(x[:1])
        first[key] = time.perf_counter() - t0
        fns[key], setup[key] = batch_fn, load_s
    for key, reference in (("lite_default", False), ("lite_ref", True)):
        batch_fn, one, setup[key] = litert(path, reference)
        t0 = time.perf_counter()
        one(x[:1])
        first[key] = time.perf_counter() - t0
        fns[key] = batch_fn

    outputs = {k: fn(x) for k, fn in fns.items()}  # warm-up pass
    exact = {k: mismatches(outputs[k], outputs["lite_ref"]) for k in fns}
    size = int(np.asarray(outputs["lite_ref"]).size)
    log(f"{name}: mismatching output elements vs LiteRT BUILTIN_REF (of {size}): {exact}")

    wall, cpu = timed(fns, x, repeat)
    per = {k: statistics.median(v) / N for k, v in wall.items()}
    per_cpu = {k: statistics.median(v) / N for k, v in cpu.items()}
    spread = {k: (min(v) / N, max(v) / N) for k, v in wall.items()}
    for k in fns:
        log(f"{name} {k}: {1e3 * per[k]:.3f} ms/sample (cpu {1e3 * per_cpu[k]:.3f}), "
            f"first call {1e3 * first[k]:.1f} ms")
    return {"path": path, "shape": shape, "per": per, "per_cpu": per_cpu, "spread": spread,
            "first": first, "setup": setup, "exact": exact, "size": size,
            "out_dtype": str(np.asarray(outputs["int_batch"]).dtype),
            "load": " / ".join(f"{v:.2f}" for v in os.getloadavg())}


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3f}" if seconds < 0.1 else f"{1e3 * seconds:,.1f}"


def ratio(num: float, den: float) -> str:
    r = num / den
    return f"{r:.2f}" if r >= 0.1 else f"{r:.3f}"


def render(results: dict, repeat: int) -> str:
    parts = [
        f"{N} random int8 inputs (uniform over [-128, 127], seed {SEED}) per model; 1 thread "
        f"(`aidge_lite.kernels.set_threads(1)`, LiteRT `num_threads=1`). **Per-sample time** = median "
        f"over {repeat} timed passes of (pass wall time / {N}), contenders alternated round-robin "
        "(order reversed every other pass) in one process, after an untimed warm-up pass; `cpu` = "
        "the same with process CPU time; `min–max` = the spread of the passes. *1 sample per call* "
        "runs `aidge_lite.run` once per sample (full per-call overhead: input checks, graph walk, "
        "output dict); LiteRT runs set_tensor + invoke + get_tensor per sample (its models' batch is "
        "fixed at 1). **Ratios** = LiteRT time / contender time, wall (and CPU: less inflated when "
        "other processes load the machine; > 1: the contender is faster; < 1: it is 1/ratio times "
        "slower). **First call** = that contender's first call on one "
        "sample in this process, timed before any warm-up (not in the medians): for our integer "
        "engine, the first one (the 1-per-call row) includes loading the Numba kernels from the "
        "on-disk cache (`cache=True`; a compile if the cache is cold), the batch row reuses them; "
        "LiteRT's includes its first invoke only. **Setup** = `load_tflite` for ours (shared by "
        "all four rows), `Interpreter(...)` + `allocate_tensors()` for LiteRT (XNNPACK delegate "
        "creation included for the default resolver). Output elements != BUILTIN_REF: over the "
        f"{N} outputs of the warm-up pass (our reference engine's float64 outputs compared as "
        "integers).",
    ]
    for name, res in results.items():
        per, cpu, first = res["per"], res["per_cpu"], res["first"]
        rows = []
        for key, label in LABELS.items():
            lo, hi = res["spread"][key]
            rows.append([label, f"**{ms(per[key])}**", ms(res["per_cpu"][key]), f"{ms(lo)}–{ms(hi)}",
                         f"{ratio(per['lite_default'], per[key])} (cpu {ratio(cpu['lite_default'], cpu[key])})",
                         f"{ratio(per['lite_ref'], per[key])} (cpu {ratio(cpu['lite_ref'], cpu[key])})",
                         ms(first[key]), f"{1e3 * res['setup'][key]:.1f}",
                         str(res["exact"][key]) if res["exact"][key] >= 0 else "shape differs"])
        table = markdown_table(
            ["contender", "per sample (ms)", "cpu (ms)", "min–max (ms)", "ratio vs LiteRT default",
             "ratio vs LiteRT BUILTIN_REF", "first call (ms)", "setup (ms)",
             f"output elements != BUILTIN_REF (of {res['size']})"],
            rows, align="lrrrrrrrr")
        ok = res["exact"]["int_batch"] == 0 and res["exact"]["int_single"] == 0
        rel = res["path"].relative_to(ROOT) if res["path"].is_relative_to(ROOT) else res["path"]
        parts.append(
            f"## {name} (`{rel}`, input int8 {list(res['shape'])}, output {res['out_dtype']})\n\n"
            f"Bit-exactness sanity: our integer engine's output == LiteRT BUILTIN_REF's on the {N} "
            f"inputs: **{'yes' if ok else 'NO'}** ({res['exact']['int_batch']} mismatching elements "
            f"of {res['size']} in one call, {res['exact']['int_single']} one sample per call). "
            f"Load average (1/5/15 min) after: {res['load']}.\n\n{table}")
    return "\n\n".join(parts)


def main(argv=None):
    from aidge_lite import kernels
    argv = sys.argv[1:] if argv is None else argv
    names = [a for a in argv if not a.startswith("--")] or list(MODELS)
    info = machine_info()
    for pkg in ("ai-edge-litert", "tflite"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = "not installed"
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    previous = kernels.set_threads(1)
    try:
        results = {name: bench_model(name, REPEAT, log) for name in names}
    finally:
        kernels.set_threads(previous)
    body = render(results, REPEAT)
    path = write_result("tflite_speed", "MLPerf Tiny int8 models: our engines vs LiteRT (1 thread)", body, info)
    print(body)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
