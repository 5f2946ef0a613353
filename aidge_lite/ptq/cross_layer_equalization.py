"""cross_layer_equalization: balance the weight ranges of consecutive layers.

For two affine layers A -> B joined through positively homogeneous ops (Relu,
MaxPool, average pools, Pad 0, layout ops) whose intermediate tensors have no
other reader, f(s*x) = s*f(x) for s > 0, so scaling A's output channel i by
s_i and B's matching input channel by 1/s_i leaves the network unchanged.
Choosing s_i = sqrt(r1_i * r2_i) / r1_i (r1_i = max|row i of W_A|, r2_i =
max|input column i of W_B|) gives both layers the range sqrt(r1_i * r2_i)
(Nagel et al. 2019, "Data-Free Quantization", §4.1). Always per channel: a
per-tensor s (the reference library's MR-era form, kept for `compat="aidge"`)
is undone exactly by per-tensor weight normalisation. Pairs are swept
repeatedly until the largest range gap |r1 - r2| is below `TARGET_DELTA`.

Unlike the reference library, which skips every graph that is not a single
chain, pairs are found inside graphs that branch elsewhere; `compat="aidge"`
restores the skip. Never equalised: a pair joined through Sigmoid, Tanh, Add
or any op that is not positively homogeneous, or whose middle tensor has
another reader. Channels with a zero range keep s = 1.

Requires: `prepare` (BatchNorm folded, canonical affine nodes).
Ensures: float outputs unchanged up to rounding.
"""
from __future__ import annotations

import numpy as np

from ..ir import AFFINE, Graph, OpType
from ..ir.node import META_SHAPE
from .config import PassReport, PTQConfig
from .float_islands import is_float

TARGET_DELTA = 0.01
MAX_SWEEPS = 200
# Ops a positive per-channel scale passes through unchanged, channel by channel.
CHANNEL_PRESERVING = frozenset(
    {OpType.RELU, OpType.LEAKY_RELU, OpType.MAXPOOL, OpType.AVGPOOL, OpType.GLOBAL_AVGPOOL,
     OpType.PAD, OpType.IDENTITY, OpType.DROPOUT}
)
FLATTENING = frozenset({OpType.FLATTEN, OpType.RESHAPE})


def equalization_pairs(graph: Graph) -> list[tuple[str, str]]:
    """(A, B) affine pairs joined by a private chain of positively homogeneous ops."""
    pairs = []
    for node in graph.topo_order():
        if node.op not in AFFINE or is_float(node):
            continue  # (an excluded node keeps its float weights untouched)
        current = node
        while True:
            readers = graph.consumers(current.name)
            if len(readers) != 1 or current.name in graph.outputs:
                break
            reader = readers[0]
            if is_float(reader):
                break
            if reader.op in AFFINE and reader.inputs[0] == current.name:
                pairs.append((node.name, reader.name))
                break
            if reader.op not in CHANNEL_PRESERVING and not _is_flatten(graph, reader):
                break
            current = reader
    return pairs


def _is_flatten(graph, node) -> bool:
    """A Flatten/Reshape of (N, C, ...) to (N, C * rest): channels stay contiguous blocks."""
    if node.op not in FLATTENING:
        return False
    shape_in = graph.node(node.inputs[0]).meta.get(META_SHAPE)
    shape_out = node.meta.get(META_SHAPE)
    return bool(shape_in and shape_out) and len(shape_out) == 2 and len(shape_in) >= 2 \
        and shape_out[1] == int(np.prod(shape_in[1:]))


def input_channel_index(weight: np.ndarray, group: int, channels: int):
    """For each of B's `channels` input channels, the (rows, columns) of W_B it multiplies."""
    if weight.ndim == 2:  # Gemm (out, in): `in` may be channels x spatial after a flatten
        width = weight.shape[1] // channels
        return [(slice(None), slice(c * width, (c + 1) * width)) for c in range(channels)]
    in_per_group, rows_per_group = weight.shape[1], weight.shape[0] // group
    return [
        (slice(g * rows_per_group, (g + 1) * rows_per_group), slice(local, local + 1))
        for g, local in (divmod(c, in_per_group) for c in range(channels))
    ]


def _ranges_a(weight, per_channel):
    rows = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1, initial=0.0)
    return rows if per_channel else np.array([rows.max(initial=0.0)])


def _ranges_b(weight, index, per_channel):
    if not per_channel:
        return np.array([np.abs(weight).max(initial=0.0)])
    return np.array([np.abs(weight[rows, cols]).max(initial=0.0) for rows, cols in index])


def _equalize_pair(graph, a, b, per_channel) -> float:
    wa_name, ba_name = a.inputs[1], a.inputs[2]
    wb_name = b.inputs[1]
    wa, ba, wb = (graph.constant(n).astype(np.float64) for n in (wa_name, ba_name, wb_name))
    channels = wa.shape[0]
    index = input_channel_index(wb, b.attrs.get("group", 1), channels)
    r1, r2 = _ranges_a(wa, per_channel), _ranges_b(wb, index, per_channel)
    valid = (r1 > 0) & (r2 > 0)
    delta = float(np.max(np.abs(r1 - r2)[valid], initial=0.0))  # dead channels never converge
    s = np.where(valid, np.sqrt(np.where(valid, r1 * r2, 1.0)) / np.where(valid, r1, 1.0), 1.0)
    s_rows = s if per_channel else np.full(channels, s[0])
    wa *= s_rows.reshape((-1,) + (1,) * (wa.ndim - 1))
    ba *= s_rows
    for c, (rows, cols) in enumerate(index):
        wb[rows, cols] /= s_rows[c]
    for name, value in ((wa_name, wa), (ba_name, ba), (wb_name, wb)):
        graph.set_constant(name, value.astype(graph.constant(name).dtype))
    return delta


def _is_chain(graph) -> bool:
    return all(len(graph.consumers(n.name)) <= 1 for n in graph.topo_order() if n.op is not OpType.CONSTANT)


def cross_layer_equalization(graph: Graph, cfg: PTQConfig) -> PassReport:
    if not cfg.cle:
        return PassReport("cross_layer_equalization", False, {})
    if cfg.compat == "aidge" and not _is_chain(graph):
        return PassReport("cross_layer_equalization", False, {"skipped": "graph has branches (compat=aidge)"})
    # Per-tensor CLE is undone exactly by per-tensor weight normalisation, so we
    # always equalise per channel; compat="aidge" keeps the reference's per-tensor form.
    per_channel = cfg.compat != "aidge"
    pairs = equalization_pairs(graph)
    sweeps, delta = 0, 0.0
    while pairs and sweeps < MAX_SWEEPS:
        sweeps += 1
        delta = max(_equalize_pair(graph, graph.node(a), graph.node(b), per_channel) for a, b in pairs)
        if delta < TARGET_DELTA:
            break
    return PassReport("cross_layer_equalization", bool(pairs),
                      {"pairs": pairs, "sweeps": sweeps, "final_delta": delta})
