"""Kernel benchmarks: our Numba conv2d / gemm vs onnxruntime, onnx.reference and our NumPy twins.

Layers (int8, NCHW):
- ResNet 3x3: 64->64, 56x56, pad 1, N=1 and N=8;
- MNIST-shaped: 1->32, 28x28, 5x5, N=64;
- depthwise 3x3: 64 channels, 56x56, pad 1, N=8;
- GEMM M=N=K=512 and 1024.

Rows per layer, each run at 1 and 2 threads in this one process
(``kernels.set_threads`` for Numba and BLAS, ``intra_op_num_threads`` for
onnxruntime); onnx.reference and the NumPy twins are single-threaded Python
and run once per layer (1-thread columns only):
- ours: ``kernels.conv2d`` / ``kernels.gemm`` (int64 accumulators out), and
  ``kernels.conv2d_requant`` (fused requantization, int16 out) for convs;
- onnxruntime QLinearConv (u8 x s8 and s8 x s8, requantized u8/s8 out),
  u8 x s8 rows (ours and ORT) with 7-bit weights in [-64, 63]: on this AVX2
  machine ORT's u8 x s8 kernels saturate int16 pair sums with full-range
  int8 weights (the reason for onnxruntime's `reduce_range`); the
  full-range row is kept to show it (MISMATCH);
  ConvInteger (u8 x u8 weights + zero point 128, int32 out), MatMulInteger
  (u8 x s8, s8 x s8);
- ``onnx.reference`` QLinearConv / MatMulInteger;
- our NumPy twin ``kernels.conv2d_ref`` / ``kernels.gemm_ref``.

Every row's output is checked bit-exact against the NumPy twin before it is
timed: accumulators against ``conv2d_ref`` / ``gemm_ref``; requantized
outputs against ``requant_float_ref`` (half-even, the ONNX rounding) of the
twin's accumulators. The requantization multiplier is a power of two, so
onnxruntime's float32 scale is exact and the check is meaningful.

Timing: warm-up, then the rows of a (layer, threads) group are timed
round-robin ``REPEAT`` times and the median wall time is reported (so
background load hits every row alike); the median process CPU time is
reported too (for 1-thread rows it is insensitive to other processes).

    python -m bench.kernels [--quick]
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

from aidge_lite import kernels
from bench.common import machine_info, markdown_table, write_result

REPEAT = 11
SLOW_REPEAT = 3
PAUSE = 0.005  # seconds slept (untimed) before each timed call
THREADS = (1, 2)
SHIFT = 12  # requantization multiplier 2**-SHIFT
ZP = 128


def geometry(pads=(0, 0, 0, 0), group=1, strides=(1, 1)):
    return np.array([*strides, *pads, 1, 1, group], np.int64)


def conv_layers():
    rng = np.random.default_rng(0)
    specs = [
        ("ResNet 3x3 64->64 56x56 N=1", (1, 64, 56, 56), (64, 64, 3, 3), (1, 1, 1, 1), 1),
        ("ResNet 3x3 64->64 56x56 N=8", (8, 64, 56, 56), (64, 64, 3, 3), (1, 1, 1, 1), 1),
        ("MNIST 5x5 1->32 28x28 N=64", (64, 1, 28, 28), (32, 1, 5, 5), (0, 0, 0, 0), 1),
        ("depthwise 3x3 64ch 56x56 N=8", (8, 64, 56, 56), (64, 1, 3, 3), (1, 1, 1, 1), 64),
    ]
    for name, xs, ws, pads, group in specs:
        x_u8 = rng.integers(0, 256, xs).astype(np.uint8)
        x_s8 = rng.integers(-128, 128, xs).astype(np.int8)
        w = rng.integers(-128, 128, ws).astype(np.int8)
        bias = rng.integers(-5000, 5000, ws[0]).astype(np.int32)
        yield name, x_u8, x_s8, w, bias, geometry(pads, group)


def seven_bit(w):
    """Weights in [-64, 63]: ORT's u8 x s8 AVX2 kernels (vpmaddubsw) saturate int16 pair sums
    with full-range int8 weights (onnxruntime's `reduce_range`); 7-bit weights keep them exact."""
    return (w.astype(np.int16) // 2).astype(np.int8)


def conv_ops(x, w, geo):
    n, k, oh, ow = kernels.conv2d_output_shape(x.shape, w.shape, geo)
    return 2 * n * k * oh * ow * w.shape[1] * w.shape[2] * w.shape[3]


# --------------------------------------------------------------------------- ONNX models

def _ort():
    import onnxruntime as ort
    return ort


def ort_session(model, threads):
    ort = _ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    # ORT's pool threads otherwise spin after each run and steal the second core from the
    # next row of the round-robin (our 2-thread median doubled on an idle machine)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _model(nodes, inputs, outputs, inits, opset=13):
    from onnx import helper
    graph = helper.make_graph(nodes, "bench", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def qlinearconv_model(x, w, bias, geo, signed):
    """QLinearConv with scales making the multiplier exactly 2**-SHIFT."""
    from onnx import TensorProto, helper, numpy_helper
    sh, sw, pt, pl, pb, pr, _, _, group = (int(v) for v in geo)
    xt = TensorProto.INT8 if signed else TensorProto.UINT8
    y_zp = np.array(0 if signed else ZP, np.int8 if signed else np.uint8)
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8 if signed else np.uint8), "xz"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(1.0, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, np.int8), "wz"),
        numpy_helper.from_array(np.array(2.0 ** SHIFT, np.float32), "ys"),
        numpy_helper.from_array(y_zp, "yz"),
        numpy_helper.from_array(bias.astype(np.int32), "b"),
    ]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            kernel_shape=list(w.shape[2:]), pads=[pt, pl, pb, pr],
                            strides=[sh, sw], group=group)
    return _model([node], [helper.make_tensor_value_info("x", xt, list(x.shape))],
                  [helper.make_tensor_value_info("y", xt, None)], inits)


def convinteger_model(x, w, geo):
    """ConvInteger u8 x u8: weights stored as w + 128 with zero point 128 (same accumulators)."""
    from onnx import TensorProto, helper, numpy_helper
    sh, sw, pt, pl, pb, pr, _, _, group = (int(v) for v in geo)
    inits = [numpy_helper.from_array((w.astype(np.int16) + 128).astype(np.uint8), "w"),
             numpy_helper.from_array(np.array(0, np.uint8), "xz"),
             numpy_helper.from_array(np.array(128, np.uint8), "wz")]
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], kernel_shape=list(w.shape[2:]),
                            pads=[pt, pl, pb, pr], strides=[sh, sw], group=group)
    return _model([node], [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
                  [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits, opset=10)


def matmulinteger_model(a, b):
    from onnx import TensorProto, helper, numpy_helper
    at = TensorProto.INT8 if a.dtype == np.int8 else TensorProto.UINT8
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    return _model([node], [helper.make_tensor_value_info("a", at, list(a.shape))],
                  [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
                  [numpy_helper.from_array(b, "b")], opset=10)


# --------------------------------------------------------------------------- expected values

def requant_expected(acc, signed):
    """ONNX requantization of accumulators with multiplier 2**-SHIFT, from our twin."""
    view = acc.reshape(acc.shape[0], acc.shape[1], -1)
    zp = 0 if signed else ZP
    bounds = np.array([-128 - zp, 127 - zp] if signed else [-zp, 255 - zp], np.int64)
    out = np.empty(view.shape, np.int64)
    kernels.requant_float_ref(view, np.full(view.shape[1], 2.0 ** -SHIFT), kernels.HALF_EVEN, bounds, out)
    return (out + zp).reshape(acc.shape)


# --------------------------------------------------------------------------- timing

class Row:
    def __init__(self, name, fn, check, single=False):
        self.name, self.fn, self.check, self.single = name, fn, check, single
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.error = None

    def verify(self):
        try:
            got = self.fn()
            ok = self.check(got)
        except Exception as exc:  # an unsupported op in a peer is reported, not fatal
            self.error = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
            return False
        if not ok:
            self.error = "MISMATCH"
        return ok

    def time_once(self):
        # A short sleep first: on a shared machine a call started right after another
        # process-hogging call is likely to be preempted midway (its time slice is used up).
        time.sleep(PAUSE)
        c0, w0 = time.process_time(), time.perf_counter()
        self.fn()
        self.wall.append(time.perf_counter() - w0)
        self.cpu.append(time.process_time() - c0)


def run_group(rows, repeat):
    """Check, warm up, then time the fast rows round-robin and the slow (single) rows after."""
    live = [r for r in rows if r.verify()]
    fast = [r for r in live if not r.single]
    for r in fast:  # warm-up (after the check, which was the first call)
        r.fn()
    order = np.random.default_rng(0)
    for _ in range(repeat):
        for i in order.permutation(len(fast)):  # a fresh order each round: no row always follows another
            fast[i].time_once()
    for r in live:
        if r.single:  # seconds per call: a few runs, not interleaved (they would skew the others)
            r.time_once()
            for _ in range(SLOW_REPEAT - 1 if r.wall[0] < 2.0 else 0):
                r.time_once()
    return rows


def fmt_ms(seconds):
    return "n/a" if seconds is None else f"{1000 * seconds:.3g}"


def load_now():
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def conv_rows(x_u8, x_s8, w, bias, geo, threads, include_slow):
    import onnx.reference
    w_full, w = w, seven_bit(w)  # u8 rows: 7-bit weights (see seven_bit); s8 rows: full range
    acc_u8 = kernels.conv2d_ref(x_u8, w, bias, geo)
    acc_s8 = kernels.conv2d_ref(x_s8, w_full, bias, geo)
    want_u8, want_s8 = requant_expected(acc_u8, False), requant_expected(acc_s8, True)
    conv_int = kernels.conv2d_ref(x_u8, w, np.zeros_like(bias), geo)
    mult = np.full(w.shape[0], 2.0 ** -SHIFT)
    params_u8 = np.array([kernels.HALF_EVEN, -ZP, 255 - ZP], np.int64)
    rows = [
        Row("ours conv2d u8 x s8 -> int64", lambda: kernels.conv2d(x_u8, w, bias, geo),
            lambda y: np.array_equal(y, acc_u8)),
        Row("ours conv2d s8 x s8 -> int64", lambda: kernels.conv2d(x_s8, w_full, bias, geo),
            lambda y: np.array_equal(y, acc_s8)),
        Row("ours conv2d_requant u8 x s8 -> int16 (fused)",
            lambda: kernels.conv2d_requant(x_u8, w, bias, geo, mult, params_u8)[0],
            lambda y: np.array_equal(y.astype(np.int64) + ZP, want_u8)),
    ]
    s_u8 = ort_session(qlinearconv_model(x_u8, w, bias, geo, False), threads)
    s_s8 = ort_session(qlinearconv_model(x_s8, w_full, bias, geo, True), threads)
    s_full = ort_session(qlinearconv_model(x_u8, w_full, bias, geo, False), threads)
    want_full = requant_expected(kernels.conv2d_ref(x_u8, w_full, bias, geo), False)
    rows += [
        Row("onnxruntime QLinearConv u8 x s8", lambda: s_u8.run(None, {"x": x_u8})[0],
            lambda y: np.array_equal(y.astype(np.int64), want_u8)),
        Row("onnxruntime QLinearConv s8 x s8", lambda: s_s8.run(None, {"x": x_s8})[0],
            lambda y: np.array_equal(y.astype(np.int64), want_s8)),
        Row("onnxruntime QLinearConv u8 x s8, full-range int8 weights",
            lambda: s_full.run(None, {"x": x_u8})[0],
            lambda y: np.array_equal(y.astype(np.int64), want_full)),
    ]
    try:
        s_ci = ort_session(convinteger_model(x_u8, w, geo), threads)
        rows.append(Row("onnxruntime ConvInteger u8 x u8(zp 128)", lambda: s_ci.run(None, {"x": x_u8})[0],
                        lambda y: np.array_equal(y.astype(np.int64), conv_int)))
    except Exception as exc:  # noqa: BLE001 - reported as a row
        bad = Row("onnxruntime ConvInteger u8 x u8(zp 128)", None, None)
        bad.error = f"error: {type(exc).__name__}"
        rows.append(bad)
    if include_slow:
        ref = onnx.reference.ReferenceEvaluator(qlinearconv_model(x_u8, w, bias, geo, False))
        rows += [
            Row("onnx.reference QLinearConv u8 x s8", lambda: ref.run(None, {"x": x_u8})[0],
                lambda y: np.array_equal(y.astype(np.int64), want_u8), single=True),
            Row("NumPy twin conv2d_ref (u8 x s8)", lambda: kernels.conv2d_ref(x_u8, w, bias, geo),
                lambda y: np.array_equal(y, acc_u8), single=True),
        ]
    return rows


def gemm_operands(size):
    """u8 and s8 left operands, 7-bit and full-range int8 right operands, zero bias."""
    rng = np.random.default_rng(size)
    a_u8 = rng.integers(0, 256, (size, size)).astype(np.uint8)
    a_s8 = rng.integers(-128, 128, (size, size)).astype(np.int8)
    b_full = rng.integers(-128, 128, (size, size)).astype(np.int8)
    b = seven_bit(b_full)  # u8 rows: 7-bit weights, as for the convs
    return a_u8, a_s8, b, b_full, np.zeros(size, np.int32)


def gemm_rows(size, threads, include_slow):
    import onnx.reference
    a_u8, a_s8, b, b_full, zero = gemm_operands(size)
    want_u8, want_s8 = kernels.gemm_ref(a_u8, b, zero), kernels.gemm_ref(a_s8, b_full, zero)
    s_u8 = ort_session(matmulinteger_model(a_u8, b), threads)
    s_s8 = ort_session(matmulinteger_model(a_s8, b_full), threads)
    rows = [
        Row("ours gemm u8 x s8 -> int64", lambda: kernels.gemm(a_u8, b, zero), lambda y: np.array_equal(y, want_u8)),
        Row("ours gemm s8 x s8 -> int64", lambda: kernels.gemm(a_s8, b_full, zero),
            lambda y: np.array_equal(y, want_s8)),
        Row("onnxruntime MatMulInteger u8 x s8", lambda: s_u8.run(None, {"a": a_u8})[0],
            lambda y: np.array_equal(y, want_u8)),
        Row("onnxruntime MatMulInteger s8 x s8", lambda: s_s8.run(None, {"a": a_s8})[0],
            lambda y: np.array_equal(y, want_s8)),
        Row("numpy float32 BLAS incl. casts (exact: 255*64*K < 2^24)",
            lambda: a_u8.astype(np.float32) @ b.astype(np.float32),
            lambda y: np.array_equal(y.astype(np.int64), want_u8)),
    ]
    if include_slow:
        ref = onnx.reference.ReferenceEvaluator(matmulinteger_model(a_u8, b))
        rows += [
            Row("onnx.reference MatMulInteger u8 x s8", lambda: ref.run(None, {"a": a_u8})[0],
                lambda y: np.array_equal(y, want_u8), single=True),
            Row("NumPy twin gemm_ref (u8 x s8)", lambda: kernels.gemm_ref(a_u8, b, zero),
                lambda y: np.array_equal(y, want_u8), single=True),
        ]
    return rows


def thread_scaling(repeat):
    """Our GEMM at 1 and 2 threads, alternating call by call, before any peer runs.

    Peers' thread pools busy-wait after each call (OpenBLAS spins for ~2**28
    cycles; ORT is told not to) and take the second core from whatever runs
    next, so the 2-thread rows of the round-robin tables below understate
    the kernel's own scaling. Returns rows of
    ``(size, operands, 1T walls, 2T walls)``.
    """
    rows = []
    for size in (512, 1024):
        a_u8, a_s8, b, b_full, zero = gemm_operands(size)
        for label, a, w in (("u8 x s8", a_u8, b), ("s8 x s8", a_s8, b_full)):
            want = kernels.gemm_ref(a, w, zero)
            walls = {t: [] for t in THREADS}
            for t in THREADS:  # check, and warm up each thread count
                kernels.set_threads(t)
                if not np.array_equal(kernels.gemm(a, w, zero), want):
                    raise AssertionError(f"GEMM {size} {label} {t}T: MISMATCH")
            for i in range(3 * repeat):
                for t in (THREADS if i % 2 else THREADS[::-1]):
                    kernels.set_threads(t)  # untimed, like the pause
                    time.sleep(PAUSE)
                    w0 = time.perf_counter()
                    kernels.gemm(a, w, zero)
                    walls[t].append(time.perf_counter() - w0)
            rows.append((size, label, walls[1], walls[2]))
            print(f"scaling GEMM {size} {label}: 1T {1e3 * statistics.median(walls[1]):.2f} ms, "
                  f"2T {1e3 * statistics.median(walls[2]):.2f} ms", flush=True)
    kernels.set_threads(None)
    return rows


def render_scaling(rows, repeat):
    table = []
    for size, label, w1, w2 in rows:
        m1, m2 = statistics.median(w1), statistics.median(w2)
        table.append([f"GEMM {size}x{size}x{size}", label, f"{fmt_ms(m1)} ms", f"{fmt_ms(m2)} ms",
                      f"{m1 / m2:.2f}", f"{min(w1) / min(w2):.2f}"])
    return ("## Thread scaling of our GEMM\n\n"
            f"Our `kernels.gemm` alone, 1 and 2 threads alternating call by call ({3 * repeat} runs "
            "each), measured first, before any peer runtime or BLAS call (see `thread_scaling`: a "
            "peer's spinning pool threads take the second core in the round-robin tables below).\n\n"
            + markdown_table(["layer", "operands", "1T median", "2T median", "speed-up (median)",
                              "speed-up (best runs)"], table, align="llrrrr"))


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    repeat = 3 if quick else REPEAT
    info = machine_info()
    info["threads measured"] = ", ".join(map(str, THREADS))
    info["numba threading layer"] = os.environ.get("NUMBA_THREADING_LAYER", "default")
    try:
        import threadpoolctl
        blas = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})"
                for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        info["numpy BLAS"] = "; ".join(blas)
    except ImportError:
        pass
    from importlib import metadata
    info["onnx"] = metadata.version("onnx")
    scaling = thread_scaling(repeat)
    results = {}  # (layer, row name, threads) -> (median wall, median cpu, error)
    layers = []
    for name, x_u8, x_s8, w, bias, geo in conv_layers():
        if quick and "N=8" in name:
            continue
        layers.append((name, conv_ops(x_u8, w, geo),
                       lambda t, s, a=(x_u8, x_s8, w, bias, geo): conv_rows(*a, t, s)))
    for size in (512, 1024):
        layers.append((f"GEMM {size}x{size}x{size}", 2 * size ** 3,
                       lambda t, s, n=size: gemm_rows(n, t, s)))
    loads = []
    for name, ops, make in layers:
        for threads in THREADS:
            kernels.set_threads(threads)
            slow = threads == 1  # onnx.reference and the twins: 1 thread only
            rows = run_group(make(threads, slow), repeat)
            loads.append(load_now())
            for r in rows:
                wall = statistics.median(r.wall) if r.wall else None
                cpu = statistics.median(r.cpu) if r.cpu else None
                results[(name, r.name, threads)] = (wall, cpu, r.error, min(r.wall) if r.wall else None)
                print(f"{name:32s} {threads}T {r.name:58s} "
                      f"{r.error or f'{1e3 * wall:9.3f} ms  {ops / wall / 1e9:7.1f} GOP/s'}", flush=True)
    kernels.set_threads(None)
    body = (render_scaling(scaling, repeat) + "\n\n" + render(layers, results, repeat, loads)
            + "\n\n" + targets(results, scaling))
    path = write_result("kernels", "Kernel benchmarks", body, info)
    print(f"wrote {path}")
    return results


def render(layers, results, repeat, loads):
    parts = [
        "Median of the timed runs after warm-up (round-robin over the fast rows of one layer and "
        f"thread count, {repeat} runs each; onnx.reference and the NumPy twins: 1 to {SLOW_REPEAT} "
        "runs after them, 1 thread only). GOP/s = 2 x MACs / time. Every row was checked bit-exact "
        "against the NumPy twin before timing (`MISMATCH`/`error` rows are not timed).",
        "Wall times of short calls are inflated whenever the process is descheduled (by other "
        "processes, or by a peer's pool threads still spinning from the previous row), so the tables "
        "also give, for 1 thread, GOP/s from the median *process CPU time*, and for 2 threads the "
        "*best* run next to the median. Compare the load averages below with the 2 cores.",
        f"Load average (1/5/15 min) after each group: {', '.join(loads)}.",
    ]
    for name, ops, _ in layers:
        names = [k[1] for k in results if k[0] == name and k[2] == 1]
        ref_key = (name, "onnxruntime QLinearConv u8 x s8", 1)
        if ref_key not in results:
            ref_key = (name, "onnxruntime MatMulInteger u8 x s8", 1)
        ref_wall, ref_cpu = results.get(ref_key, (None, None))[:2]
        table = []
        for row in names:
            wall1, cpu1, err1, _ = results.get((name, row, 1), (None, None, None, None))
            wall2, _, err2, best2 = results.get((name, row, 2), (None, None, None, None))
            cells = [row]
            if err1 or wall1 is None:
                cells += [err1 or "—", "", ""]
            else:
                cells += [f"{fmt_ms(wall1)} ms", f"{ops / wall1 / 1e9:.1f}", f"{ops / cpu1 / 1e9:.1f}"]
            if err2 or wall2 is None:
                cells += [err2 or "—", "", ""]
            else:
                cells += [f"{fmt_ms(wall2)} ms", f"{ops / wall2 / 1e9:.1f}", f"{ops / best2 / 1e9:.1f}"]
            ok = wall1 and ref_wall and not err1
            cells.append(f"{ref_wall / wall1:.3g} / {ref_cpu / cpu1:.3g}" if ok else "")
            table.append(cells)
        parts.append(f"## {name} ({ops / 1e9:.3f} GOP)\n\n" + markdown_table(
            ["implementation", "1T time", "1T GOP/s", "1T GOP/s (cpu)", "2T time", "2T GOP/s",
             "2T GOP/s (best run)", "vs ORT u8s8, 1T (wall / cpu)"],
            table, align="lrrrrrrr"))
    return "\n\n".join(parts)


def targets(results, scaling) -> str:
    """The issue's kernel targets with their measured ratios (1 thread unless stated)."""
    def get(layer, row, t=1):
        return results.get((layer, row, t), (None, None, "missing", None))

    g1_w, g1_c, e4, _ = get("GEMM 1024x1024x1024", "ours gemm u8 x s8 -> int64")
    ops = 2 * 1024 ** 3
    rows = []
    def ratio_row(label, ours, peer, digits, floor):
        (ours_w, ours_c, e1, _), (peer_w, peer_c, e2, _) = ours, peer
        if e1 or e2:
            return
        r_w, r_c = peer_w / ours_w, peer_c / ours_c
        ms = ".2f" if digits == 2 else ".0f"
        rows.append([label, f"{1e3 * ours_w:.2f} ms vs {1e3 * peer_w:{ms}} ms "
                     f"(cpu {1e3 * ours_c:.2f} vs {1e3 * peer_c:{ms}})",
                     f"{r_w:.{digits}f} (cpu {r_c:.{digits}f})",
                     "yes" if min(r_w, r_c) >= floor else
                     "cpu only" if r_c >= floor else "wall only" if r_w >= floor else "NO"])

    for batch in (1, 8):  # the issue names the ResNet layer at N=1 and N=8: both are reported
        resnet = f"ResNet 3x3 64->64 56x56 N={batch}"
        ours = get(resnet, "ours conv2d u8 x s8 -> int64")
        ratio_row(f"ResNet conv N={batch} >= 0.3x ORT QLinearConv u8s8", ours,
                  get(resnet, "onnxruntime QLinearConv u8 x s8"), 2, 0.3)
        ratio_row(f"ResNet conv N={batch} >= 100x onnx.reference QLinearConv", ours,
                  get(resnet, "onnx.reference QLinearConv u8 x s8"), 0, 100)
    if not e4:
        rows.append(["int8 GEMM 1024 >= 100 GOP/s per core", f"{ops / g1_w / 1e9:.0f} GOP/s wall median, "
                     f"{ops / g1_c / 1e9:.0f} GOP/s cpu", f"{ops / g1_w / 1e11:.2f} (cpu {ops / g1_c / 1e11:.2f})",
                     "yes" if ops / g1_w >= 1e11 else ("cpu only" if ops / g1_c >= 1e11 else "NO")])
    for size, label, w1, w2 in scaling:
        if size == 1024 and label == "u8 x s8":
            m1, m2 = statistics.median(w1), statistics.median(w2)
            rows.append(["int8 GEMM 1024, 2 threads >= 1.7x 1 thread (thread scaling table)",
                         f"median {1e3 * m2:.1f} ms vs {1e3 * m1:.1f} ms; best {1e3 * min(w2):.1f} ms vs "
                         f"{1e3 * min(w1):.1f} ms", f"{m1 / m2:.2f} (best {min(w1) / min(w2):.2f})",
                         "yes" if m1 / m2 >= 1.7 else ("best run only" if min(w1) / min(w2) >= 1.7 else "NO")])
    return "## Targets\n\n" + markdown_table(["target", "measured", "ratio", "met?"], rows, align="lllr")


if __name__ == "__main__":
    main()
