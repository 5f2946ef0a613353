"""16-bit models in the integer engine: byte-limb convolutions vs the direct int64 loops.

A 16-bit model's convolutions miss the int16 fast path's exactness bound
(``max|x| * max|w| * C*KH*KW <= 2**31 - 1``). `kernels.conv2d` then splits the
operands into bytes and runs the partial convolutions on the fast path
(`kernels.conv._limb_terms`); before, they ran the direct loops with an int64
accumulator. This measures both in the same process: the direct loops are
what `conv2d` does with the split switched off (`_limb_terms` -> None).

For every MNIST zoo model: `quantize_network(nb_bits=16, target=Target(acc_bits=64))`
on the 1,000 calibration images, then the integer engine over 1,000 test
images in one batch; median of `REPEAT` runs after a warm-up, 1 thread and
2 threads. Both paths' outputs are checked identical, and bit-exact against
the fake-quant engine, before timing.

    python -m bench.wide_operands
"""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

import numpy as np

import aidge_lite
from aidge_lite import kernels
import kernels.conv
from aidge_lite import evaluate
from bench.common import machine_info, markdown_table, write_result

MODELS = ("mnist8", "lenet", "resnet_tiny", "inception_tiny", "mobilenet_tiny")
IMAGES = 1000
REPEAT = 5
THREADS = (1, 2)


@contextmanager
def direct_loops():
    """`kernels.conv2d` without the byte split: the direct int64 loops, as before it."""
    split = kernels.conv._limb_terms
    kernels.conv._limb_terms = lambda x, w, geometry: None
    try:
        yield
    finally:
        kernels.conv._limb_terms = split


def timed(qgraph, x) -> float:
    runs = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        aidge_lite.run(qgraph, x, engine="integer")
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def measure(name, calib, x) -> list:
    from aidge_lite.models import zoo

    qgraph = aidge_lite.quantize_network(zoo.load(name), calib, nb_bits=16,
                                         target=aidge_lite.Target(acc_bits=64))
    limbs = aidge_lite.run(qgraph, x, engine="integer")
    with direct_loops():
        direct = aidge_lite.run(qgraph, x, engine="integer")
    for out in qgraph.outputs:
        np.testing.assert_array_equal(limbs[out], direct[out])
    assert evaluate.compare_engines(qgraph, x)["mismatches"] == 0
    row = [name]
    for threads in THREADS:
        kernels.set_threads(threads)
        fast = timed(qgraph, x)
        with direct_loops():
            slow = timed(qgraph, x)
        row += [f"{1e3 * slow:.0f}", f"{1e3 * fast:.0f}", f"{slow / fast:.1f}x"]
    kernels.set_threads(max(THREADS))
    return row


def main():
    from aidge_lite.models import datasets

    info = machine_info()
    split = datasets.mnist()
    calib, x = split.calib_x.astype(np.float32), split.test_x[:IMAGES].astype(np.float32)
    rows = []
    for name in MODELS:
        rows.append(measure(name, calib, x))
        print(" | ".join(rows[-1]), flush=True)
    headers = ["model"] + [f"{label} ({t}T)" for t in THREADS
                           for label in ("direct loops ms", "byte limbs ms", "speed-up")]
    body = (f"16-bit weights and activations, int64 accumulator, float rescale; integer engine over "
            f"{IMAGES:,} MNIST test images in one batch, median of {REPEAT} runs after a warm-up. "
            "Both paths' outputs identical and bit-exact against the fake-quant engine (checked "
            "before timing).\n\n" + markdown_table(headers, rows, "l" + "r" * (len(headers) - 1)))
    print(write_result("wide_operands", "16-bit models: byte-limb convolutions vs direct loops", body, info))


if __name__ == "__main__":
    main()
