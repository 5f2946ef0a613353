"""Calibration data as a stream of validated batches.

Accepted: one array (split into batches), a list/tuple of arrays, any
re-iterable of batches, or a zero-argument callable returning an iterator.
A one-shot iterator can be read only once: passes that need a second look at
the data (histograms) say so with a clear error.

Memory: the passes walk the graph in float64 one batch at a time, and a batch
holds its live activations (at 224x224, ~10-20 MB per sample). `batches`
therefore cuts every batch to the rows that fit `memory_budget`, measured on
the model (`bytes_per_sample`); `batch_size` only caps it. With the data fed
as a stream (a callable or a re-iterable of batches), the peak memory of a
pass is then flat in the number of samples.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from ..errors import CalibrationError, InputError
from ..interp.base import check_input
from ..ir import Graph

DEFAULT_BATCH = 256
#: Bytes of float64 activations a calibration batch may hold at once.
MEMORY_BUDGET = 256 << 20


class CalibrationSet:
    def __init__(self, data, batch_size: int = DEFAULT_BATCH, memory_budget: int = MEMORY_BUDGET):
        if data is None:
            raise CalibrationError("calibration data is required (got None)")
        if isinstance(data, (int, float, np.number)) or (
                not callable(data) and not hasattr(data, "__iter__")):
            raise CalibrationError(f"calibration data must be batches of samples, got a scalar {data!r}")
        if isinstance(data, np.ndarray) and data.ndim == 0:
            raise CalibrationError("calibration data must be batches of samples, got a 0-d array")
        self._data = data
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self._consumed = False
        if isinstance(data, np.ndarray) and data.ndim >= 1 and data.shape[0] == 0:
            raise CalibrationError("calibration set is empty (0 samples)")

    def _source(self) -> Iterable:
        data = self._data
        if isinstance(data, np.ndarray):
            return (data[i:i + self.batch_size] for i in range(0, len(data), self.batch_size))
        if callable(data):
            return data()
        if iter(data) is data:  # a one-shot iterator
            if self._consumed:
                raise CalibrationError(
                    "calibration data is a one-shot iterator and was already read; pass a "
                    "list, an array, a re-iterable or a callable returning an iterator"
                )
            self._consumed = True
        return data

    def head(self, count: int | None) -> "CalibrationSet":
        """The first `count` samples of this set, in the same order and batches (the whole
        set when `count` is None or not smaller): a pass that needs only a sample of the
        data reads no more of it."""
        if count is None:
            return self

        def source():
            left = count
            for batch in self._source():
                array = np.asarray(batch)
                if array.ndim == 0:
                    yield array  # refused by `batches`, with its message
                    return
                yield array[:left]
                left -= min(left, array.shape[0])
                if left == 0:
                    return
        return CalibrationSet(source, self.batch_size, self.memory_budget)

    def batches(self, graph: Graph) -> Iterator[np.ndarray]:
        """Yield float64 batches checked against the graph's single input."""
        if len(graph.inputs) != 1:
            raise CalibrationError(f"calibration supports one-input graphs, got {graph.inputs}")
        node = graph.node(graph.inputs[0])
        count, lo, hi = 0, np.inf, -np.inf
        rows = None
        for index, batch in enumerate(self._source()):
            try:
                whole = check_input(node, batch)
            except InputError as exc:
                raise CalibrationError(f"calibration batch {index}: {exc}") from None
            if whole.shape[0] == 0:
                continue
            if rows is None:  # measured once per pass, on its first sample
                rows = self.rows(graph, whole[:1])
            for start in range(0, whole.shape[0], rows):
                array = np.asarray(whole[start:start + rows], dtype=np.float64)
                if not np.all(np.isfinite(array)):
                    bad = int(np.count_nonzero(~np.isfinite(whole)))
                    raise CalibrationError(
                        f"calibration batch {index}: {bad} NaN/Inf value(s) for input '{node.name}'"
                    )
                count += array.shape[0]
                lo, hi = min(lo, float(array.min())), max(hi, float(array.max()))
                yield array
        if count == 0:
            raise CalibrationError(f"calibration set for input '{node.name}' is empty (0 samples)")
        _check_spread(node.name, count, lo, hi)

    def rows(self, graph: Graph, sample: np.ndarray) -> int:
        """Samples per batch: ``batch_size``, fewer if they would exceed ``memory_budget``."""
        per_sample = bytes_per_sample(graph, sample)
        return max(1, min(self.batch_size, self.memory_budget // max(per_sample, 1)))


def bytes_per_sample(graph: Graph, sample: np.ndarray) -> int:
    """Peak bytes of the tensors a float64 walk of `graph` holds at once, per sample.

    Runs the reference interpreter on `sample` (one sample) keeping every tensor,
    then replays the walk's frees: at each step, the tensors still needed plus the
    new output counted twice (an op's temporaries: a conv's product before the
    bias, a padded copy). Constants are not counted: they do not grow with the batch.
    """
    from ..interp.base import _last_use
    from ..interp.reference import ReferenceInterpreter
    from ..ir import OpType

    with np.errstate(all="ignore"):
        values = ReferenceInterpreter(np.float64).run(graph, np.asarray(sample, np.float64),
                                                      intermediates=True)
    order = graph.topo_order()
    freed = _last_use(order, graph.outputs)
    live, peak = 0, 0
    for step, node in enumerate(order):
        size = 0 if node.op is OpType.CONSTANT else int(getattr(values.get(node.name), "nbytes", 0))
        live += size
        peak = max(peak, live + size)
        for name in freed.get(step, ()):
            if graph.node(name).op is not OpType.CONSTANT:
                live -= int(getattr(values.get(name), "nbytes", 0))
    return peak


def _check_spread(name: str, count: int, lo: float, hi: float) -> None:
    """Constant samples (all zeros, typically a data-loading bug) calibrate every range on one
    point: the graph quantizes (zero ranges are handled), but say so."""
    if hi != lo:
        return
    import warnings

    from ..errors import CalibrationWarning

    what = "all zeros" if hi == 0 else f"constant ({hi:g} everywhere)"
    warnings.warn(f"calibration data for input '{name}' is {what} in all {count} samples: every range "
                  "is calibrated on that single value (the input's range is 0); pass representative "
                  "samples", CalibrationWarning, stacklevel=3)
