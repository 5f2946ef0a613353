"""Tensor-by-tensor comparison of an imported TFLite model with LiteRT's reference kernels.

`litert_mismatches(model, x)` runs the model in LiteRT (BUILTIN_REF, every
tensor kept) and in both of our engines, and counts, for every tensor LiteRT
holds, the elements where ours differ. The oracle behind the TFLite tests and
benchmarks; needs the dev-only package `ai-edge-litert`.
"""
from __future__ import annotations

import numpy as np

from ..interp import run
from ..ir import OpType
from ..tflite import load_tflite
from .litert_oracle import run_litert


def litert_mismatches(model, inputs, engines=("reference", "integer")) -> dict[str, dict[str, int]]:
    """{engine: {tensor name: mismatching elements}} over every tensor LiteRT keeps.

    LiteRT runs one sample at a time (its batch is 1); sample i of our batch is
    compared with it: ours[name][i] must have LiteRT's shape without its batch
    axis of 1 (or LiteRT's whole shape, for a tensor with no batch axis, e.g. an
    FC output of several rows per sample). Constants are compared whole. A
    tensor missing in our graph, or of another shape, counts all its elements.
    """
    source = model if isinstance(model, (bytes, bytearray)) else str(model)
    graph = load_tflite(source)
    if not isinstance(inputs, dict):
        inputs = {graph.inputs[0]: inputs}
    count = len(next(iter(inputs.values())))
    samples = run_litert(source, inputs, per_sample=True)
    constants = {n.name for n in graph if n.op is OpType.CONSTANT}
    result = {}
    for engine in engines:
        ours = run(graph, inputs, intermediates=True, engine=engine)
        counts = {}
        for name in samples[0]:
            got = ours.get(name)
            if name in constants:
                expected = samples[0][name]
                same = got is not None and got.shape == expected.shape
                counts[name] = _differ(got, expected) if same else int(expected.size)
                continue
            counts[name] = 0
            for i, sample in enumerate(samples):
                expected = sample[name]
                want = expected.shape[1:] if expected.shape[:1] == (1,) else expected.shape
                if got is None or got.shape[1:] != want or got.shape[0] != count:
                    counts[name] += int(expected.size)
                else:
                    counts[name] += _differ(got[i].reshape(expected.shape), expected)
        result[engine] = counts
    return result


def _differ(got, expected) -> int:
    return int(np.count_nonzero(np.asarray(got, np.float64) != np.asarray(expected, np.float64)))


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
