"""Peak Python memory of calibration: 1,000 vs 4,000 MNIST images on mnist-8.

Calibration streams its data and keeps running statistics only, so its
memory must not grow with the number of images. Measured with `tracemalloc`
(which sees NumPy's buffers), data fed as an iterable of 100-image float32
batches made on the fly from the uint8 images (the images themselves are
allocated before tracing starts):

1. `aidge_lite.ptq.calibrate` alone, on the graph after the passes that
   precede it in `PIPELINE` (prepare, insert_scaling, normalize_parameters, ...);
2. the whole `quantize_network` (every pass, including the graph copy).

The 1,000 images are MNIST's calibration set; the 4,000 are its test images,
used as a larger calibration set for this measurement only.
Target: relative difference of the peaks < 10%.

    python -m bench.calib_memory
"""
from __future__ import annotations

import gc
import sys
import tracemalloc

import numpy as np

from bench.common import Timer, machine_info, markdown_table, write_result

BATCH = 100
TARGET = 0.10


def batch_stream(images: np.ndarray, batch: int = BATCH):
    """A re-iterable source: each call yields fresh float32 batches of `batch` images."""
    def source():
        for start in range(0, len(images), batch):
            yield images[start:start + batch].astype(np.float32)
    return source


def traced_peak(fn) -> tuple[int, float]:
    """(peak bytes allocated while `fn` runs, seconds)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with Timer() as t:
            fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, t.seconds


def prepared_graph(graph):
    """A copy of `graph` after every PIPELINE pass that precedes `calibrate`."""
    from aidge_lite.ptq import PIPELINE, PTQConfig, run_pipeline
    from aidge_lite.ptq.calibrate import calibrate

    before = PIPELINE[:PIPELINE.index(calibrate)]
    g = graph.copy()
    run_pipeline(g, PTQConfig(), before)
    return g, [p.__name__ for p in before]


def measure_calibrate(prepared, images) -> tuple[int, float]:
    from aidge_lite.ptq import PTQConfig
    from aidge_lite.ptq.calibrate import calibrate
    from aidge_lite.ptq.calibration_data import CalibrationSet

    g = prepared.copy()
    cfg = PTQConfig(calibration=CalibrationSet(batch_stream(images), BATCH))
    peak = traced_peak(lambda: calibrate(g, cfg))
    assert g.meta["calibration_samples"] == len(images)
    return peak


def measure_quantize(graph, images) -> tuple[int, float]:
    import aidge_lite

    return traced_peak(lambda: aidge_lite.quantize_network(graph, batch_stream(images), batch_size=BATCH))


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def main(argv=None) -> int:
    from aidge_lite.models import datasets, zoo

    info = machine_info()
    graph = zoo.load("mnist8")
    data = datasets.mnist()
    small, large = data.calib_x, data.test_x
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    prepared, passes = prepared_graph(graph)
    measure_calibrate(prepared, small[:BATCH])  # warm-up: first-call imports and caches
    rows, verdicts = [], []
    for label, fn in (("calibrate alone", lambda x: measure_calibrate(prepared, x)),
                      ("whole quantize_network", lambda x: measure_quantize(graph, x))):
        (p1, t1), (p4, t4) = fn(small), fn(large)
        rel = (p4 - p1) / p1
        ok = abs(rel) < TARGET
        verdicts.append(ok)
        rows.append([label, mib(p1), f"{t1:.1f}", mib(p4), f"{t4:.1f}", f"{100 * rel:+.2f}%",
                     "yes" if ok else "NO"])
        log(" | ".join(rows[-1]))
    headers = ["measured", "peak, 1,000 images", "time (s)", "peak, 4,000 images", "time (s)",
               "relative difference", "< 10%"]
    table = markdown_table(headers, rows, align="lrrrrrl")
    body = (
        "## Setting\n\n"
        f"Model: mnist-8. Data: {len(small):,} MNIST calibration images vs {len(large):,} MNIST test "
        f"images (used as a larger calibration set for this measurement only), fed as an iterable of "
        f"{BATCH}-image float32 batches created on the fly. Peak: `tracemalloc` peak above the "
        "allocations live when tracing started (NumPy buffers included).\n\n"
        f"- *calibrate alone*: `aidge_lite.ptq.calibrate` on a copy of the graph after "
        f"{', '.join(passes)}.\n"
        "- *whole quantize_network*: every PTQ pass, the graph copy included.\n\n"
        f"## Results\n\n{table}\n\nTarget: relative difference < {100 * TARGET:.0f}%.\n"
    )
    path = write_result("calib_memory", "Calibration memory: 1,000 vs 4,000 images", body, info)
    print(table)
    print(f"\nwrote {path}")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
