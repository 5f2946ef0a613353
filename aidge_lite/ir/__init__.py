"""The graph IR: nodes, the graph container, the op vocabulary and its verifier."""
from .graph import Graph
from .node import META_CLIPPED, META_HIST, META_RANGE, META_SHAPE, META_SIGNED, Node
from .ops import (
    AFFINE, JOINING, LAYOUT, NON_NEGATIVE, NOT_QUANTIZABLE, OPS, POSITIVE_HOMOGENEOUS,
    SEAMLESS, SIGN_PRESERVING, OpSpec, OpType,
)
from .verify import verify

__all__ = [
    "Graph", "Node", "OpType", "OpSpec", "OPS", "verify", "AFFINE", "JOINING", "LAYOUT",
    "NON_NEGATIVE", "NOT_QUANTIZABLE", "POSITIVE_HOMOGENEOUS", "SEAMLESS", "SIGN_PRESERVING",
    "META_SHAPE", "META_RANGE", "META_HIST", "META_SIGNED", "META_CLIPPED",
]
