"""Calibration data as a stream of validated batches.

Accepted: one array (split into batches), a list/tuple of arrays, any
re-iterable of batches, or a zero-argument callable returning an iterator.
A one-shot iterator can be read only once: passes that need a second look at
the data (histograms) say so with a clear error.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from ..errors import CalibrationError, InputError
from ..interp.base import check_input
from ..ir import Graph

DEFAULT_BATCH = 256


class CalibrationSet:
    def __init__(self, data, batch_size: int = DEFAULT_BATCH):
        if data is None:
            raise CalibrationError("calibration data is required (got None)")
        if isinstance(data, (int, float, np.number)) or (
                not callable(data) and not hasattr(data, "__iter__")):
            raise CalibrationError(f"calibration data must be batches of samples, got a scalar {data!r}")
        if isinstance(data, np.ndarray) and data.ndim == 0:
            raise CalibrationError("calibration data must be batches of samples, got a 0-d array")
        self._data = data
        self.batch_size = batch_size
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

    def batches(self, graph: Graph) -> Iterator[np.ndarray]:
        """Yield float64 batches checked against the graph's single input."""
        if len(graph.inputs) != 1:
            raise CalibrationError(f"calibration supports one-input graphs, got {graph.inputs}")
        node = graph.node(graph.inputs[0])
        count = 0
        for index, batch in enumerate(self._source()):
            try:
                array = check_input(node, batch)
            except InputError as exc:
                raise CalibrationError(f"calibration batch {index}: {exc}") from None
            if array.shape[0] == 0:
                continue
            array = np.asarray(array, dtype=np.float64)
            if not np.all(np.isfinite(array)):
                bad = int(np.count_nonzero(~np.isfinite(array)))
                raise CalibrationError(
                    f"calibration batch {index}: {bad} NaN/Inf value(s) for input '{node.name}'"
                )
            count += array.shape[0]
            yield array
        if count == 0:
            raise CalibrationError(f"calibration set for input '{node.name}' is empty (0 samples)")
