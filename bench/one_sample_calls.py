"""One sample per call: mnist-8 called 4,000 times with one image, as a test harness calls a
golden reference.

Contenders, in one process, taking turns (round r runs every contender once, in
rotated order, each for `CALLS` calls on the same images):
- our integer engine (`aidge_lite.run(q, x, engine="integer")`) with 1 and 2
  threads (`kernels.set_threads`): the kernels then pick per call how many of
  them the work pays for (`kernels.threads`);
- onnxruntime on the int8 QDQ model `quantize_static` makes of mnist-8 (uint8
  activations, int8 weights, MinMax, same calibration images), 1 and 2 threads
  (`intra_op_num_threads`);
- onnxruntime on the float model, 1 thread, for scale;
- with ``--walk``: our integer engine walking the graph node by node (a subclass of
  `IntegerInterpreter`, so no compiled steps, `interp.fast_steps`), 1 thread: what a
  call cost before the compiled steps, in the same rounds.
Both quantized models are calibrated on the 1,000 MNIST calibration images.
Reported: median wall time of the `ROUNDS` rounds and its CPU time, per
contender, the ratio to onnxruntime int8 on 1 thread, and the load average
(other processes share this 2-core machine).

    python -m bench.one_sample_calls [--calls 4000] [--rounds 5] [--no-write] [--walk]

`--no-write` prints the table without replacing bench/results/one_sample_calls.md (a
quick check with fewer calls, or on a busy machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import machine_info, markdown_table, write_result
from bench.end_to_end import ort_quantize, ort_session

CALLS = 4000
ROUNDS = 5


def contenders(tmp: Path, calib: np.ndarray, walk: bool = False):
    import aidge_lite
    from aidge_lite import kernels
    from aidge_lite.interp.integer import IntegerInterpreter
    from aidge_lite.models import zoo

    class NodeByNode(IntegerInterpreter):
        """The engine's walk, node by node (a subclass never takes the compiled steps)."""

    path = zoo.path("mnist8")
    qgraph = aidge_lite.quantize_network(zoo.load("mnist8"), calib)
    qdq = ort_quantize(Path(path), calib, "u8", tmp, fixed_batch=True)

    def ours(threads):
        def call(x):
            return aidge_lite.run(qgraph, x, engine="integer")
        return threads, call

    def ort(model, threads):
        session = ort_session(str(model), threads)
        name = session.get_inputs()[0].name
        return None, lambda x: session.run(None, {name: x})

    rows = {
        "aidge_lite integer engine, 1 thread": ours(1),
        "aidge_lite integer engine, 2 threads": ours(2),
        "onnxruntime int8 QDQ (u8s8), 1 thread": ort(qdq, 1),
        "onnxruntime int8 QDQ (u8s8), 2 threads": ort(qdq, 2),
        "onnxruntime float, 1 thread": ort(path, 1),
    }
    if walk:
        rows["aidge_lite integer engine, node-by-node walk, 1 thread"] = (
            1, lambda x: NodeByNode().run(qgraph, x))
    return rows, kernels, qgraph


def run_rounds(rows, kernels, images, calls, rounds):
    names = list(rows)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
            threads, call = rows[name]
            if threads is not None:
                kernels.set_threads(threads)
            for i in range(20):  # warm: compiled kernels, the plan of the graph
                call(images[i:i + 1])
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(calls):
                j = i % len(images)
                call(images[j:j + 1])
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    kernels.set_threads(None)
    return wall, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--no-write", action="store_true", help="print only, keep the results file")
    parser.add_argument("--walk", action="store_true", help="add the node-by-node walk (no compiled steps)")
    args = parser.parse_args(argv)
    from aidge_lite.models import datasets

    data = datasets.mnist()
    calib = data.calib_x.astype(np.float32)
    images = data.test_x[:500].astype(np.float32)
    info = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        rows, kernels, qgraph = contenders(Path(tmp), calib, args.walk)
        # sanity: the integer engine agrees with our fake-quant engine on these images
        import aidge_lite
        fake = aidge_lite.run(qgraph, images[:50])
        ints = aidge_lite.run(qgraph, images[:50], engine="integer")
        assert all(np.array_equal(fake[k], ints[k]) for k in fake)
        for i in range(50):  # and one image per call (compiled steps from the second call)
            one = aidge_lite.run(qgraph, images[i:i + 1], engine="integer")
            assert all(np.array_equal(one[k], ints[k][i:i + 1]) for k in one)
        load_before = os.getloadavg()
        wall, cpu = run_rounds(rows, kernels, images, args.calls, args.rounds)
        load_after = os.getloadavg()
    base = statistics.median(wall["onnxruntime int8 QDQ (u8s8), 1 thread"])
    table = []
    for name in rows:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        table.append([name, f"{w:.3f}", f"{1e6 * w / args.calls:.0f}", f"{c:.3f}",
                      f"{1e6 * c / args.calls:.0f}", f"{w / base:.2f}",
                      " / ".join(f"{v:.2f}" for v in wall[name])])
    one = statistics.median(wall["aidge_lite integer engine, 1 thread"])
    two = statistics.median(wall["aidge_lite integer engine, 2 threads"])
    one_cpu = statistics.median(cpu["aidge_lite integer engine, 1 thread"])
    base_cpu = statistics.median(cpu["onnxruntime int8 QDQ (u8s8), 1 thread"])
    body = (
        f"## Setting\n\nmnist-8, {args.calls} calls of one image each (500 MNIST test images in turn), "
        f"{args.rounds} rounds; in each round every contender runs once, the first one rotating. "
        "Both quantized models calibrated on the 1,000 MNIST calibration images (ours: 8 bits, default "
        "options; onnxruntime: `quantize_static`, QDQ, MinMax, uint8 activations x int8 weights). "
        "The integer engine's outputs equal our fake-quant engine's on 50 of the images, as a batch "
        "and one image per call (checked).\n\n"
        f"Load average (1/5/15 min) before the rounds: {' / '.join(f'{v:.2f}' for v in load_before)}, "
        f"after: {' / '.join(f'{v:.2f}' for v in load_after)}.\n\n"
        "## Results\n\n"
        + markdown_table(["contender", f"median wall (s, {args.calls} calls)", "us per call",
                          "median CPU (s)", "CPU us per call", "x onnxruntime int8 1T",
                          "each round (s)"], table, "lrrrrrl")
        + f"\n\nTargets: integer engine 1 thread <= onnxruntime int8 1 thread: "
        f"{one:.3f} s vs {base:.3f} s ({'met' if one <= base else 'NOT met'}; CPU per call "
        f"{1e6 * one_cpu / args.calls:.0f} us vs {1e6 * base_cpu / args.calls:.0f} us); "
        f"2 threads never slower than 1: {two:.3f} s vs {one:.3f} s "
        f"({'met' if two <= one * 1.05 else 'NOT met'}, 5 % noise allowed)."
    )
    if args.no_write:
        print(body)
        return
    path = write_result("one_sample_calls", "One image per call: mnist-8, integer engine vs onnxruntime",
                        body, info)
    print(path.read_text())


if __name__ == "__main__":
    main()
