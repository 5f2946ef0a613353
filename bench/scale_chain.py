"""Quantization time against graph size: `quantize_network` on long chains.

A chain of Gemm (4 x 4 permutation weights, bias) + Relu blocks, N operator
nodes (N / 2 blocks, plus 2 constants per block), 16 calibration samples, 8
bits, default options. Each size: one warm call on a 20-node chain first (JIT
caches, imports), then the median of REPEAT calls, in CPU time of the process
(robust to the load of a shared machine; wall time is listed too). "ratio to
linear" is (time / N) divided by (time / N) of the smallest size: 1.0 is linear.
A Conv 1x1 + Relu chain (4 channels, 4 x 4 images) is timed the same way.

A second table counts instructions with valgrind's cachegrind (when valgrind
is installed): one process builds the chain and stops, a second one also
quantizes it; the difference divided by N is the instructions (and simulated
first-level data-cache misses) per node of `quantize_network` alone. An
instruction count does not depend on the machine's load or caches: it is the
work, so it shows whether the algorithm is linear while the CPU time shows what
the memory hierarchy adds on a bigger graph.

    python -m bench.scale_chain [--quick] [--cachegrind 500 5000]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import sys
import time

import numpy as np

from bench.common import markdown_table, machine_info, write_result

SIZES = (500, 1000, 2000, 5000, 10000)
# Measured once on the same machine (load ~12) with the code before issue 20's fix
# (`verify` scanned every edge for every node; `topo_order` was networkx's
# lexicographical sort), Gemm + Relu chain, CPU seconds of one call:
BEFORE = ("Before the fix (commit 4258215: `verify` scanned all edges for each node, O(N^2); "
          "`Graph.topo_order` was networkx's lexicographical sort, ~2.5x slower), Gemm + Relu, CPU "
          "seconds of one call: N=500 1.01 s (2.0 ms per node), N=1,000 3.69 s (3.7), N=2,000 "
          "17.04 s (8.5): quadratic, and N=5,000 did not finish in the issue's run. Same "
          "`topo_order` order (Kahn's algorithm over a heap of names), so every pass sees the "
          "graph in the same order as before.")
REPEAT = 3
WIDTH = 4
L1D, L2 = "49152,12,64", "2097152,16,64"  # this machine's per-core caches (lscpu): 48 KiB, 2 MiB


def chain(n_ops: int, kind: str = "gemm", width: int = WIDTH, seed: int = 0):
    """A verified, shape-inferred chain of n_ops // 2 blocks: Gemm + Relu, or Conv 1x1 + Relu
    (kind="conv", width channels on 4 x 4 images)."""
    from aidge_lite.interp.shapes import infer_shapes
    from aidge_lite.ir import Graph, Node, OpType, verify

    rng = np.random.default_rng(seed)
    graph = Graph(f"{kind}_chain{n_ops}")
    shape = [1, width] if kind == "gemm" else [1, width, 4, 4]
    graph.add(Node("x", OpType.INPUT, attrs={"shape": shape, "dtype": "float32"}))
    prev = "x"
    for i in range(n_ops // 2):
        # a permutation keeps the values in range over thousands of layers
        w = np.eye(width, dtype=np.float32)[rng.permutation(width)]
        if kind == "conv":
            w = w.reshape(width, width, 1, 1)
        inputs = [prev, graph.add_constant(f"l{i}_w", w).name,
                  graph.add_constant(f"l{i}_b", np.full(width, 0.01, np.float32)).name]
        if kind == "gemm":
            graph.add(Node(f"l{i}", OpType.GEMM, inputs, attrs={"transB": 1}))
        else:
            graph.add(Node(f"l{i}", OpType.CONV, inputs, attrs={"pads": [0, 0, 0, 0], "strides": [1, 1]}))
        graph.add(Node(f"relu{i}", OpType.RELU, [f"l{i}"]))
        prev = f"relu{i}"
    graph.outputs = [prev]
    verify(graph)
    infer_shapes(graph)
    return graph


def calibration(kind: str = "gemm", n: int = 16) -> np.ndarray:
    shape = (n, WIDTH) if kind == "gemm" else (n, WIDTH, 4, 4)
    return np.abs(np.random.default_rng(1).standard_normal(shape)).astype(np.float32)


def time_quantize(n_ops: int, kind: str = "gemm", repeat: int = REPEAT) -> float:
    from aidge_lite import quantize_network

    graph, x = chain(n_ops, kind), calibration(kind)
    cpu, wall = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        quantize_network(graph, x)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return statistics.median(cpu), statistics.median(wall)


def lookup_baseline(n_ops: int, kind: str = "gemm", repeat: int = 20) -> float:
    """CPU seconds per node of a trivial linear walk: `graph.node(name)` for every name.
    Its growth with N is the machine's (caches, memory), not an algorithm's: the yardstick
    for the quantization's own growth."""
    graph = chain(n_ops, kind)
    names = [n.name for n in graph.topo_order()]
    start = time.process_time()
    for _ in range(repeat):
        for name in names:
            graph.node(name)
    return (time.process_time() - start) / repeat / len(names)


def count_calls(n_ops: int, kind: str = "gemm") -> int:
    """Python function calls of one `quantize_network` (cProfile): the work, free of the
    machine's load and cache effects, so a super-linear algorithm shows even on a busy machine."""
    import cProfile
    import pstats

    from aidge_lite import quantize_network

    graph, x = chain(n_ops, kind), calibration(kind)
    profile = cProfile.Profile()
    profile.runcall(quantize_network, graph, x)
    return pstats.Stats(profile).total_calls


def _child(kind: str, n_ops: int, quantize: bool) -> None:
    """The process cachegrind watches: warm call, build the chain, quantize it or not."""
    from aidge_lite import quantize_network

    quantize_network(chain(20, kind), calibration(kind))
    graph, x = chain(n_ops, kind), calibration(kind)
    if quantize:
        quantize_network(graph, x)


def _cachegrind(kind: str, n_ops: int, quantize: bool) -> tuple[int, int, int]:
    """(instructions, first-level and second-level data misses) of one child process
    under cachegrind, its caches sized as this machine's per-core L1d and L2."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=yes", f"--cachegrind-out-file={tmp}/cg.out",
             f"--D1={L1D}", f"--LL={L2}",
             sys.executable, "-m", "bench.scale_chain", "--child", kind, str(n_ops), str(int(quantize))],
            capture_output=True, text=True, check=True).stderr
    def total(label):
        return int(re.search(rf"{label}:\s+([\d,]+)", out).group(1).replace(",", ""))
    return total("I   refs"), total("D1  misses"), total("LLd misses")


def instructions_table(sizes, kinds) -> None:
    """Write bench/results/scale_chain_instructions.md (one valgrind run per size and kind)."""
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed")
    info = machine_info()
    rows = []
    for kind in kinds:
        base = None
        for n in sizes:
            with_q, without_q = _cachegrind(kind, n, True), _cachegrind(kind, n, False)
            per_node = [(a - b) / n for a, b in zip(with_q, without_q)]
            base = base or per_node
            rows.append([f"{kind} + Relu", f"{n:,}", f"{per_node[0] / 1e6:.3f}", f"{per_node[0] / base[0]:.3f}",
                         f"{per_node[1] / 1e3:.1f}", f"{per_node[1] / base[1]:.2f}",
                         f"{per_node[2] / 1e3:.2f}", f"{per_node[2] / base[2]:.2f}"])
            print(*rows[-1], flush=True)
    body = ("`quantize_network` on the same chains as `scale_chain.md`, counted by valgrind's cachegrind "
            "instead of timed: instructions executed and simulated data-cache misses of a process that "
            "builds the chain and quantizes it, minus those of one that only builds it, per node. The "
            f"simulated caches have this machine's per-core sizes: L1d {L1D}, L2 {L2} (size, ways, "
            "line). Counts, not times: the machine's load does not change them. Instructions per node "
            "constant = linear work; misses per node that grow = the memory hierarchy's share of the "
            "CPU time's growth.\n\n"
            + markdown_table(["chain", "nodes N", "instructions per node (M)", "ratio", "L1d misses per node (k)",
                              "ratio", "L2 misses per node (k)", "ratio"], rows, "lrrrrrrr"))
    print(write_result("scale_chain_instructions", "Quantization work vs chain length (instruction counts)",
                       body, info))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 100..1000, one call each")
    parser.add_argument("--cachegrind", type=int, nargs="*", metavar="N",
                        help="instruction counts under valgrind for these sizes (default 500 5000)")
    parser.add_argument("--kinds", nargs="+", default=["gemm", "conv"], choices=["gemm", "conv"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child[0], int(args.child[1]), args.child[2] == "1")
    if args.cachegrind is not None:
        return instructions_table(args.cachegrind or (500, 5000), args.kinds)
    sizes, repeat = ((100, 250, 500, 1000), 1) if args.quick else (SIZES, REPEAT)
    info = machine_info()
    from aidge_lite import quantize_network

    rows = []
    for kind in ("gemm", "conv"):
        quantize_network(chain(20, kind), calibration(kind))  # warm: imports, JIT caches
        base = calls_base = walk_base = None
        for n in sizes:
            seconds, wall = time_quantize(n, kind, repeat)
            per_node, calls, walk = seconds / n, count_calls(n, kind) / n, lookup_baseline(n, kind)
            base, calls_base, walk_base = base or per_node, calls_base or calls, walk_base or walk
            rows.append([f"{kind} + Relu", f"{n:,}", f"{seconds:.2f}", f"{wall:.2f}", f"{1e3 * per_node:.3f}",
                         f"{per_node / base:.2f}", f"{calls:.0f}", f"{calls / calls_base:.3f}",
                         f"{walk / walk_base:.2f}"])
            print(*rows[-1], flush=True)
    try:
        load_after = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load_after = "n/a"
    body = (f"`quantize_network` on chains of N operator nodes (N/2 blocks of Gemm 4x4 or Conv 1x1 "
            f"4->4 channels on 4x4 images, each + Relu; plus N constants), 16 calibration samples, "
            f"8 bits, default options; median of {repeat} call(s) after a warm call. Times are the "
            f"process's CPU time (all threads; the machine is shared, load average at the end: "
            f"{load_after}), wall time for reference; ratio to linear = CPU ms per node / the "
            f"smallest chain's. Python calls per node: function calls of one call under cProfile "
            f"divided by N (the amount of work, independent of the load). Lookup walk ratio: CPU "
            f"time per node of a plain `graph.node(name)` walk over all nodes, against the smallest "
            f"chain's: how much the machine alone (caches, memory) slows a linear walk at that size."
            f"\n\n{BEFORE}\n\n"
            + markdown_table(["chain", "nodes N", "CPU s", "wall s", "CPU ms per node", "ratio to linear",
                              "Python calls per node", "calls ratio", "lookup walk ratio"], rows,
                             "lrrrrrrrr"))
    if not args.quick:
        print(write_result("scale_chain", "Quantization time vs chain length", body, info))


if __name__ == "__main__":
    main()
