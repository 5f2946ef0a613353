"""Every TFLite op the importer supports, as hypothesis-drawn single-op int8 models
(`aidge_lite.testing.tflite_strategies`: broadcasting ADD/SUB/MUL, per-channel conv,
depthwise multipliers, pools, MEAN, PAD, CONCATENATION, LUT activations, SOFTMAX,
QUANTIZE/DEQUANTIZE...), exported to C with and without rescale fusion, compiled in one
program (production flags; the debug build with sanitizers): outputs and every layer
equal the integer engine's, which tests/tflite checks against LiteRT. Draws the engine refuses (int32 overflow in TFLite's
arithmetic, undefined behaviour there) are skipped; the C export refuses only its known
limits (several graph inputs, a batch axis folded away)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings

import aidge_lite
from aidge_lite.errors import AidgeLiteError, UnsupportedOperatorError
from aidge_lite.export.lower import lower
from aidge_lite.testing.tflite_strategies import OP_STRATEGIES

from .conftest import check_many, engine

PER_OP = 2  # CI; `slow`: 40
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture,
          HealthCheck.filter_too_much]


def _draw(opcode, count):
    cases = []

    @settings(max_examples=count, deadline=None, suppress_health_check=HEALTH,
              phases=[Phase.explicit, Phase.generate], derandomize=True, database=None)
    @given(OP_STRATEGIES[opcode]())
    def collect(case):
        cases.append(case)

    collect()
    return cases


def _run(builder, plain_builder, tmp_path, per_op):
    graphs, xs, skipped, refused = [], [], 0, {}
    for opcode in sorted(OP_STRATEGIES):
        for k, (model, inputs) in enumerate(_draw(opcode, per_op)):
            try:
                g = aidge_lite.load_tflite(model)
                x = inputs[g.inputs[0]]
                engine(g, x)
            except AidgeLiteError:
                skipped += 1  # refused by the importer / engine (as LiteRT's Prepare, or UB)
                continue
            try:
                lower(g)
            except UnsupportedOperatorError as exc:
                # known limits of the C export: one graph input; the batch axis kept first
                # (an FC of several rows per sample folds it away)
                assert "graph inputs" in str(exc) or "batch axis" in str(exc), str(exc)
                refused.setdefault(opcode, 0)
                refused[opcode] += 1
                continue
            g.name = f"{opcode.lower()}_{k}"
            graphs.append(g)
            xs.append(x)
    fuse = [k % 2 == 0 for k in range(len(graphs))]
    check_many(builder, tmp_path, graphs, xs, dump_samples=3, fuse=fuse, plain=plain_builder)
    return len(graphs), skipped, refused


def test_single_op_tflite_models(builder, plain_builder, tmp_path):
    compared, skipped, refused = _run(builder, plain_builder, tmp_path, PER_OP)
    print(f"\n{compared} single-op models compared, {skipped} refused by the engine, "
          f"refused by the C export (known limits): {refused}")
    assert compared >= 1.5 * len(OP_STRATEGIES)


@pytest.mark.slow
def test_single_op_tflite_models_slow(builder, plain_builder, tmp_path):
    assert _run(builder, plain_builder, tmp_path, 40)[0] >= 20 * len(OP_STRATEGIES)


def test_constant_only_nodes_are_computed_at_export(builder, plain_builder, tmp_path):
    """A constant reshaped twice and added to the input: the two RESHAPEs and the ADD
    operand's rescale depend on constants only; they become static const arrays (no
    arena, no code; an intermediate one only the debug dump reads, which -Werror's
    unused-variable check must accept), and every layer still equals the engine's."""
    import numpy as np

    from aidge_lite.testing.tflite_build import Graph

    g = Graph()
    x = g.input("x", (1, 2, 3, 4), 0.05, -3)
    c = g.const(np.arange(-12, 12).reshape(4, 6), "int8", 0.1, 2, name="c")
    c = g.reshape(g.reshape(c, (6, 4), name="c1"), (2, 3, 4), name="c2")
    g.add(x, c, out_scale=0.2, out_zero_point=1, name="output")
    graph = aidge_lite.load_tflite(g.build())
    rng = np.random.default_rng(0)
    xs = rng.integers(-128, 128, (16, 2, 3, 4)).astype(np.int8)
    info = lower(graph)
    folded = [n for n, t in info.tensors.items() if t.constant and n not in ("c",)]
    assert {"c1", "c2"} <= set(folded)
    check_many(builder, tmp_path, [graph, graph], [xs, xs], dump_samples=4, fuse=[True, False],
               plain=plain_builder)
