"""Tensor-by-tensor comparison of an imported TFLite model with LiteRT's reference kernels.

`litert_mismatches(model, x)` runs the model in LiteRT (BUILTIN_REF, every
tensor kept) and in both of our engines, and counts, for every tensor LiteRT
holds, the elements where ours differ. The oracle behind the TFLite tests and
benchmarks; needs the dev-only package `ai-edge-litert`.
"""
from __future__ import annotations

import numpy as np

from ..interp import run
from ..tflite import load_tflite
from .litert_oracle import run_litert


def litert_mismatches(model, inputs, engines=("reference", "integer")) -> dict[str, dict[str, int]]:
    """{engine: {tensor name: mismatching elements}} over every tensor LiteRT keeps.

    A tensor that LiteRT has and our graph lacks, or one of another shape,
    counts all its elements as mismatching.
    """
    source = model if isinstance(model, (bytes, bytearray)) else str(model)
    graph = load_tflite(source)
    oracle = run_litert(source, inputs)
    result = {}
    for engine in engines:
        ours = run(graph, inputs, intermediates=True, engine=engine)
        counts = {}
        for name, expected in oracle.items():
            got = ours.get(name)
            if got is None or got.shape != expected.shape:
                counts[name] = int(expected.size)
                continue
            counts[name] = int(np.count_nonzero(np.asarray(got, np.float64) != np.asarray(expected, np.float64)))
        result[engine] = counts
    return result


def standard_inputs(shape, count: int = 64, seed: int = 0) -> np.ndarray:
    """`count` int8 inputs of `shape` (batch axis excluded): all -128, all 127, two smooth
    images (separable sinusoids over the full range), the rest uniform random."""
    rng = np.random.default_rng(seed)
    batch = rng.integers(-128, 128, size=(count,) + tuple(shape), dtype=np.int8)
    batch[0], batch[1] = -128, 127
    grids = np.meshgrid(*[np.linspace(0, np.pi, n) for n in shape], indexing="ij")
    for k in (2, 3):
        if k < count:
            wave = np.prod([np.sin((k - 1) * g + j) for j, g in enumerate(grids)], axis=0)
            batch[k] = np.clip(np.round(127.5 * wave - 0.5), -128, 127).astype(np.int8)
    return batch
