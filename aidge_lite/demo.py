"""`python -m aidge_lite.demo` (`make demo`): quantize mnist-8 at 8, 4 and 3 bits.

Loads the ONNX model-zoo mnist-8, measures its float accuracy on the 4,000
MNIST test images, quantizes it with the 1,000 calibration images (8 and 4
bits with the default options, then 4 and 3 bits with the best options: MSE
clipping, unsigned ranges after ReLU, per-channel weights, bias correction),
and prints float / fake-quant / integer accuracy together with the
bit-exact check: the number of output elements on which the integer engine
(Numba kernels, int8 activations) differs from the fake-quant reference.
"""
from __future__ import annotations

import sys
import time

import numpy as np

BEST = {"clipping": "mse", "optimize_signs": True, "per_channel": True, "bias_correction": True}
RUNS = ((8, "default", {}), (4, "default", {}), (4, "best", BEST), (3, "best", BEST))


def main(argv=None) -> int:
    import aidge_lite
    from aidge_lite.cli import table
    from aidge_lite.errors import AidgeLiteError
    from aidge_lite.evaluate import accuracy, compare_engines, top1
    from aidge_lite.models import datasets, zoo

    start = time.perf_counter()
    try:
        graph = zoo.load("mnist8")
        data = datasets.mnist()
    except (FileNotFoundError, AidgeLiteError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    calib = data.calib_x.astype(np.float32)
    print(f"mnist-8 ({len(graph)} nodes): {len(data.calib_x)} calibration images, "
          f"{len(data.test_x)} test images")
    float_acc = accuracy(graph, data.test_x, data.test_y)
    print(f"float accuracy: {100 * float_acc:.2f}%")
    rows = []
    for bits, label, options in RUNS:
        qgraph = aidge_lite.quantize_network(graph, calib, nb_bits=bits, **options)
        cmp = compare_engines(qgraph, data.test_x)
        rows.append([bits, label, f"{100 * float_acc:.2f}%", f"{100 * top1(cmp['reference'], data.test_y):.2f}%",
                     f"{100 * top1(cmp['integer'], data.test_y):.2f}%",
                     f"{cmp['mismatches']} / {cmp['elements']}"])
        print(f"  {bits} bits, {label} options done ({time.perf_counter() - start:.0f} s)")
    print()
    print(f"best options: {', '.join(f'{k}={v}' for k, v in BEST.items())}")
    print(table(["bits", "options", "float", "fake-quant", "integer", "mismatching elements (bit-exact check)"], rows))
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
