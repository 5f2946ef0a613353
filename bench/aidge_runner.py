"""Run Eclipse Aidge 0.3.1's PTQ on one model for many configurations (a subprocess of
`bench.aidge_compat`, run with the Python of a separate Aidge venv: see that module).

Standalone on purpose: it imports numpy and Aidge only, never aidge_lite, and aidge_lite
never imports it. Usage:

    AIDGE_PYTHON bench/aidge_runner.py JOB.npz RESULT.npz

JOB.npz: `model` (ONNX path that Aidge can quantize), `calib` (float32, N x ..., the
calibration set, already scaled to +-1), `test` (float32, M x ..., integer-valued: the
caller's input x * (2^(n-1) - 1), rounded, one array per bit width as `test_<bits>`),
`configs` (K x 3 int: bits, clipping index into CLIPPINGS, optimize_signs), `batch`
(images per forward: 1 for a CNN, whose batched run crashes Aidge 0.3.1).
RESULT.npz: `logits_<k>` (M x classes float32, integer-valued), `quantizers_<k>` (count
of Quantizer nodes: 0 means Aidge silently left the graph unquantized), `seconds_<k>`.
"""
import sys
import time

import numpy as np

import aidge_core  # noqa: F401  (before aidge_quantization, else an ImportError)
import aidge_backend_cpu  # noqa: F401
import aidge_onnx
import aidge_quantization as aq

CLIPPINGS = ("max", "mse", "aa", "kl")


def load(path):
    graph = aidge_onnx.load_onnx(path, verbose=False)
    aidge_core.matmul_to_fc(graph)
    graph.set_datatype(aidge_core.dtype.float32)
    graph.set_backend("cpu")
    return graph


def quantize(path, calib, bits, clipping, signs):
    graph = load(path)
    mode = getattr(aq.Clipping, clipping.upper())
    tensors = [aidge_core.Tensor(np.ascontiguousarray(x[None], dtype=np.float32)) for x in calib]
    aq.quantize_network(graph, int(bits), tensors, clipping_mode=mode, no_quantization=False,
                        optimize_signs=bool(signs), single_shift=False, use_cuda=False, verbose=False)
    return graph


def forward(graph, test, batch):
    """Integer logits of `test`, `batch` images at a time, through ONE scheduler (a second
    scheduler on the same graph silently returns stale outputs)."""
    (output,) = list(graph.get_output_nodes())
    scheduler = aidge_core.SequentialScheduler(graph)
    chunks = []
    for start in range(0, test.shape[0], batch):
        x = np.ascontiguousarray(test[start:start + batch], dtype=np.float32)
        scheduler.forward(data=[aidge_core.Tensor(x)])
        chunks.append(np.array(output.get_operator().get_output(0)).copy())
    return np.concatenate(chunks)


def main(job_path, result_path):
    job = np.load(job_path)
    path = str(job["model"])
    result = {}
    for k, (bits, clipping, signs) in enumerate(job["configs"]):
        start = time.perf_counter()
        graph = quantize(path, job["calib"], bits, CLIPPINGS[clipping], signs)
        result[f"quantizers_{k}"] = np.int64(sum(n.type() == "Quantizer" for n in graph.get_nodes()))
        result[f"logits_{k}"] = forward(graph, job[f"test_{bits}"], int(job["batch"]))
        result[f"seconds_{k}"] = np.float64(time.perf_counter() - start)
    np.savez(result_path, **result)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
