"""calibrate: measure the range of every tensor on the calibration set.

Calibration is the reference interpreter with an observer in `run_node` (one
graph walk; the torch.fx ShapeProp pattern). It streams the calibration set
batch by batch and keeps only running statistics, never raw activations, so
its memory does not grow with the number of images. It runs in float64, as
the reference library does.

Ensures: every non-constant node has `meta["range"]` = max |x| and
`meta["min"]`/`meta["max"]` over the calibration set.
"""
from __future__ import annotations

import numpy as np

from ..errors import CalibrationError
from ..interp.reference import ReferenceInterpreter
from ..ir import Graph, OpType
from ..ir.node import META_RANGE
from .config import PassReport, PTQConfig


class RangeObserver(ReferenceInterpreter):
    """Reference interpreter that records min, max and max|x| of every tensor."""

    def __init__(self):
        super().__init__(np.float64)

    def run_node(self, node, operands):
        value = super().run_node(node, operands)
        if node.op is not OpType.CONSTANT:
            _observe(node, value)
        return value

    def prepare_input(self, node, value):
        value = super().prepare_input(node, value)
        _observe(node, value)
        return value


def _observe(node, value):
    if value.size == 0:
        return
    low, high = float(value.min()), float(value.max())
    meta = node.meta
    meta["min"] = min(meta.get("min", low), low)
    meta["max"] = max(meta.get("max", high), high)
    meta[META_RANGE] = max(abs(meta["min"]), abs(meta["max"]))


def calibrate(graph: Graph, cfg: PTQConfig) -> PassReport:
    if cfg.calibration is None:
        raise CalibrationError("calibrate needs calibration data")
    for node in graph.topo_order():
        for key in ("min", "max", META_RANGE):
            node.meta.pop(key, None)
    observer = RangeObserver()
    samples = 0
    for batch in cfg.calibration.batches(graph):
        observer.run(graph, batch)
        samples += batch.shape[0]
    graph.meta["calibration_samples"] = samples
    zero = [n.name for n in graph.topo_order() if n.meta.get(META_RANGE) == 0.0]
    return PassReport("calibrate", True, {"samples": samples, "constant_zero": zero})
