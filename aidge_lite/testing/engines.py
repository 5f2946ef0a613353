"""Running a quantized graph in both engines and comparing them bit for bit
(`run_engines`, `assert_bit_exact`); split out of `aidge_lite.testing.graphs`,
which re-exports these names.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph, OpType
from ..target import Target


@dataclass
class EngineRun:
    """Outputs (or every tensor) of both engines, and the interpreters used.

    With ``intermediates`` the integer engine cannot fuse Conv -> Quantizer (the
    accumulator must be visible), so `run_engines` also runs it once more without
    intermediates: `integer_outputs` / `integer_outputs_interp` are that production
    path (graph outputs only).
    """

    reference: dict
    integer: dict
    reference_interp: object
    integer_interp: object
    warnings: list
    integer_outputs: dict | None = None
    integer_outputs_interp: object = None


def run_engines(graph: Graph, x, *, target: Target | None = None,
                intermediates: bool = False) -> EngineRun:
    """Run `graph` on `x` with the fake-quant reference and the integer engine.

    Accumulator-overflow warnings of the first two runs are recorded (not shown)
    in `.warnings`; those of the extra production-path run are ignored.
    """
    import warnings

    from ..interp.integer import IntegerInterpreter
    from ..interp.quant_common import AccumulatorOverflowWarning
    from ..interp.reference import ReferenceInterpreter

    ref_interp = ReferenceInterpreter(target=target)
    int_interp = IntegerInterpreter(target=target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AccumulatorOverflowWarning)
        ref = ref_interp.run(graph, x, intermediates=intermediates)
        out = int_interp.run(graph, x, intermediates=intermediates)
    overflow_warnings = [w for w in caught if issubclass(w.category, AccumulatorOverflowWarning)]
    run = EngineRun(ref, out, ref_interp, int_interp, overflow_warnings)
    if intermediates:
        run.integer_outputs_interp = IntegerInterpreter(target=target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AccumulatorOverflowWarning)
            run.integer_outputs = run.integer_outputs_interp.run(graph, x)
    else:
        run.integer_outputs, run.integer_outputs_interp = out, int_interp
    return run


def assert_bit_exact(graph: Graph, run: EngineRun) -> None:
    """Every tensor and every output equal in both engines (and on the integer
    engine's production path), and the same overflow counts."""
    mismatch = first_mismatch(graph, run)
    assert mismatch is None, f"first mismatching tensor (name, elements, total): {mismatch}"
    for name in graph.outputs:
        expected = run.reference[name]
        np.testing.assert_array_equal(np.asarray(run.integer[name]).astype(np.float64), expected,
                                      err_msg=name)
        np.testing.assert_array_equal(np.asarray(run.integer_outputs[name]).astype(np.float64),
                                      expected, err_msg=f"{name} (production path)")
    overflows = run.integer_interp.policy.overflows
    assert run.reference_interp.policy.overflows == overflows
    assert run.integer_outputs_interp.policy.overflows == overflows


def first_mismatch(graph: Graph, run: EngineRun):
    """(node name, mismatching elements, total) of the first tensor, in topological
    order, where the integer engine differs from the reference; None if bit-exact."""
    for node in graph.topo_order():
        if node.op is OpType.CONSTANT or node.name not in run.reference:
            continue
        ref = run.reference[node.name]
        got = np.asarray(run.integer[node.name]).astype(np.float64)
        if got.shape != ref.shape:
            return node.name, f"shape {got.shape} != {ref.shape}", ref.size
        bad = int(np.count_nonzero(got != ref))
        if bad:
            return node.name, bad, ref.size
    return None
