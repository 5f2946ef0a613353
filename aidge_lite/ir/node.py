"""A node of the IR: one operator producing one tensor named after the node."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ops import OpType

# Keys of Node.meta, defined once so passes never disagree on spelling.
META_SHAPE = "shape"          # tuple, shape of the output for a batch of one
META_RANGE = "range"          # float, max |x| seen at the output during calibration
META_HIST = "hist"            # histogram of |x| collected during calibration
META_SIGNED = "signed"        # bool, sign of the output as quantized
META_CLIPPED = "clipped"      # int, values clipped by a quantizer on the calibration set


@dataclass
class Node:
    """One operator.

    `inputs` lists producer names in operand order (as in ONNX); it is the
    source of truth for operand order. Change it only through `Graph` methods,
    which keep the graph's edges in sync.
    """

    name: str
    op: OpType
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.op = OpType(self.op)
        self.inputs = list(self.inputs)
